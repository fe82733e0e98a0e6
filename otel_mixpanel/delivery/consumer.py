"""Messages handed to the sender, ``mixpanel.Mixpanel``'s consumer interface, made into spool records.

Whatever the application passes, the spool receives only valid JSON objects, each encodable
as UTF-8: a message whose content cannot be used is refused with ``BadMessage`` (the sender
counts and logs it; it never raises into the application for a message's content), and
content JSON cannot carry is made safe rather than refused:

- ``NaN``, ``Infinity`` and ``-Infinity`` (which Python's ``json`` writes, and ``mixpanel``
  passes on), and numbers too large for a double (``1e999``, valid JSON), become ``null``, as ``JSON.stringify`` and mixpanel-js's own encoder write them
  (mixpanel-browser 2.83.0, ``src/utils.js``, ``JSONEncode``: ``isFinite(value) ? String(value) : 'null'``);
- a lone UTF-16 surrogate (``"\\ud800"`` without its pair, which no UTF-8 text can hold)
  becomes U+FFFD, the replacement character.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from otel_mixpanel.delivery.endpoints import Endpoint

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class BadMessage(ValueError):
    """A message that is not JSON objects: refused, since it could never be delivered."""


def records_from(endpoint: Endpoint, message: str | bytes) -> list[str]:
    """The message's objects as spool bodies: one per object of an array, ``$insert_id`` filled in."""
    try:
        parsed = json.loads(message, parse_constant=_not_finite, parse_float=_finite_float)
    except (ValueError, TypeError, RecursionError) as error:
        raise BadMessage(f"not JSON ({type(error).__name__})") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    bodies = []
    for item in items:
        if not isinstance(item, dict):
            raise BadMessage(f"a Mixpanel {endpoint.value} message must be a JSON object or an array of objects")
        if endpoint.is_event:
            _ensure_insert_id(item)
        bodies.append(encodable(json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False)))
    return bodies


def encodable(text: str) -> str:
    """``text`` with every lone surrogate replaced, so that it encodes as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text


def _not_finite(constant: str) -> None:
    # json.loads calls this for NaN, Infinity and -Infinity, which are not JSON.
    return None


def _finite_float(text: str) -> float | None:
    # json.loads reads "1e999" as infinity, which json.dumps cannot write back as JSON.
    number = float(text)
    return number if math.isfinite(number) else None


def _ensure_insert_id(event: dict[str, Any]) -> None:
    # A retried request must carry the same $insert_id, or Mixpanel would count the event twice.
    properties = event.get("properties")
    if isinstance(properties, dict) and not properties.get("$insert_id"):
        properties["$insert_id"] = os.urandom(16).hex()
