"""Mixpanel's limits, enforced before sending, and OpenTelemetry values made JSON-safe.

Mixpanel refuses events with 255 or more properties, cuts strings at 255 bytes and
list or object properties at 8 KB, nesting at depth 3; JSON has no NaN, bytes or
tuples. Everything an attribute can hold leaves here as something Mixpanel accepts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

MAX_STRING_BYTES = 255
MAX_PROPERTIES = 254
MAX_COLLECTION_BYTES = 8 * 1024
MAX_DEPTH = 3

# str.isascii as a function: compiled (otel_mixpanel/compiled.py), calling it is a direct call, where
# text.isascii() looks the method up by name first. Conversion asks it of nearly every text it reads.
is_ascii: Final = str.isascii


def truncate_utf8(text: str, limit: int = MAX_STRING_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character; lone surrogates become "?"."""
    if is_ascii(text):
        # One byte per character: the common case needs no encoding.
        return text if len(text) <= limit else text[:limit]
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        encoded = text.encode("utf-8", "replace")
        text = encoded.decode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-encodable version of any attribute value, within Mixpanel's size limits."""
    if type(value) is str:
        # Most values are short ASCII text, which is already safe: answer that case first.
        return value if len(value) <= MAX_STRING_BYTES and is_ascii(value) else truncate_utf8(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # JSON numbers past 2**53 lose precision in Mixpanel; keep them exact as text.
        return value if abs(value) <= 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return truncate_utf8(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return truncate_utf8(bytes(value).decode("utf-8", "replace"))
    if depth >= MAX_DEPTH:
        return truncate_utf8(_describe(value))
    if isinstance(value, Mapping):
        return _bounded({truncate_utf8(str(k)): json_safe(v, depth + 1) for k, v in list(value.items())[:MAX_PROPERTIES]})
    if isinstance(value, (list, tuple, set, frozenset)):
        return _bounded([json_safe(item, depth + 1) for item in list(value)[:MAX_PROPERTIES]])
    return truncate_utf8(_describe(value))


def _describe(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _bounded(collection: list[Any] | dict[str, Any]) -> Any:
    """Drop trailing items until the JSON form fits Mixpanel's 8 KB for list and object properties."""
    size = len(json.dumps(collection, ensure_ascii=False).encode("utf-8"))
    if size <= MAX_COLLECTION_BYTES:
        return collection
    items = list(collection.items()) if isinstance(collection, dict) else list(collection)
    while items and size > MAX_COLLECTION_BYTES:
        # Shrink in proportion to the excess, so a huge list does not take one pass per item.
        keep = max(0, min(len(items) - 1, int(len(items) * MAX_COLLECTION_BYTES / size)))
        items = items[:keep]
        shrunk = dict(items) if isinstance(collection, dict) else items
        size = len(json.dumps(shrunk, ensure_ascii=False).encode("utf-8"))
    return dict(items) if isinstance(collection, dict) else items


def safe_properties(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Span-event attributes as Mixpanel properties."""
    if not attributes:
        return {}
    return {json_safe(key) if type(key) is str else truncate_utf8(str(key)): json_safe(value)
            for key, value in attributes.items()}


def safe_text_properties(properties: dict[str, str]) -> dict[str, str]:
    """``safe_properties`` of properties the exporter made itself: plain ``str`` keys already safe (fixed
    names), plain ``str`` values. Hands back ``properties`` itself when every value is short ASCII, as
    nearly every URL is; so the caller must own it."""
    for value in properties.values():
        if len(value) > MAX_STRING_BYTES or not is_ascii(value):
            return {key: truncate_utf8(value) for key, value in properties.items()}
    return properties


def limit_property_count(properties: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """At most ``MAX_PROPERTIES`` properties, the ``keep`` ones always among them, the rest in order."""
    if len(properties) <= MAX_PROPERTIES:
        return properties
    room = MAX_PROPERTIES - sum(1 for key in properties if key in keep)
    limited: dict[str, Any] = {}
    for key, value in properties.items():
        if key in keep:
            limited[key] = value
        elif room > 0:
            limited[key] = value
            room -= 1
    return limited
