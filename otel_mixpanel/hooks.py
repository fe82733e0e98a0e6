"""The application's ``before_send`` hook: change or drop each record after conversion, before it is kept.

A hook is code, so it is a keyword argument of ``MixpanelSpanExporter`` only, never an environment
variable. What it returns still goes through Mixpanel's limits (``admission``) before it is spooled.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

logger = logging.getLogger("otel_mixpanel")

# ``before_send(record, endpoint)``: the record (an event, or the body of a profile or group update, which
# the hook may change in place) and its consumer endpoint ("events", "people" or "groups"); it returns
# the record to send (the same dict or another) or None to drop it.
BeforeSendHook = Callable[[dict[str, Any], str], Optional[dict[str, Any]]]


class BeforeSend:
    """Runs the hook on each record; counts what it dropped and what it failed on, neither raised.

    A hook that raises, or returns something other than a dict or None, costs that record, as in
    Sentry's ``before_send``: the hook is where records are redacted, and a record it could not
    redact must not be sent as it was. Logged once; ``dropped`` and ``failed`` count them.
    """

    def __init__(self, hook: BeforeSendHook) -> None:
        if not callable(hook):
            raise TypeError(f"before_send must be callable: before_send(record, endpoint) -> dict | None, "
                            f"not {type(hook).__name__}")
        self._hook = hook
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.dropped = 0
        self.failed = 0

    def __call__(self, record: dict[str, Any], endpoint: str) -> dict[str, Any] | None:
        try:
            result = self._hook(record, endpoint)
        except Exception:
            self._fail("raised", "The before_send hook raised; the record is not sent", exc_info=True)
            return None
        if result is None:
            with self._lock:
                self.dropped += 1
            return None
        if not isinstance(result, dict):
            self._fail("returned", f"The before_send hook returned a {type(result).__name__}, not a dict or None; "
                       "the record is not sent")
            return None
        return result

    def _fail(self, kind: str, message: str, exc_info: bool = False) -> None:
        with self._lock:
            self.failed += 1
            first = kind not in self._warned
            self._warned.add(kind)
        if first:
            logger.warning("%s (logged once; MixpanelSpanExporter.before_send counts them)", message,
                           exc_info=exc_info)
