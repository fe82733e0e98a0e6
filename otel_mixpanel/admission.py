"""Step 4b: what Mixpanel would refuse is fixed, or dropped and counted, before it is spooled.

Mixpanel refuses an event whose ``time`` lies before 1971 or more than an hour ahead, an event
older than five days on /track, and an event of 1 MB or more. A record spooled in that state
would be retried and refused until dropped, costing requests and a warning each time; here it
costs nothing. Times are fixed rather than dropped where a time can be trusted: a span event
without a usable time happened while the process was running, so "now" is close, and a time in
the future is a clock running ahead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Mapping

import orjson

from otel_mixpanel.config import ENV_PREFIX

logger = logging.getLogger("otel_mixpanel")

# 1971-01-01T00:00:00Z, the earliest time /import takes.
EARLIEST_MS = 31_536_000_000
# How far ahead of Mixpanel's clock a time may be.
MAX_AHEAD_MS = 3_600_000
# /track takes events of the last five days only; an hour's margin for the time spent spooled.
TRACK_MAX_AGE_MS = 5 * 86_400_000 - 3_600_000
# Mixpanel's limit is 1 MB per event; the margin covers the batch's commas and brackets.
MAX_EVENT_BYTES = 1_000_000 - 1024


def dumps(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, default=str)
    except TypeError:
        # orjson refuses what json takes (integers past 64 bits, say); bodies are JSON-safe, so this is rare.
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                          default=str).encode()


class Admission:
    """Checks each event's time and size; counts what it fixed, trimmed and dropped.

    ``max_age_ms`` is the oldest event the endpoint takes (None: any age, as /import).
    """

    def __init__(self, max_age_ms: int | None, clock: Any = time.time) -> None:
        self._max_age_ms = max_age_ms
        self._clock = clock
        self._lock = threading.Lock()
        self.times_fixed = 0
        self.too_old = 0
        self.trimmed = 0
        self._warned: set[str] = set()

    def now_ms(self) -> int:
        """The clock, in milliseconds; an exporter reads it once for a batch of events and passes it on."""
        return int(self._clock() * 1000)

    def event_json(self, body: dict[str, Any], keep: frozenset[str], now_ms: int) -> str | None:
        """The event as JSON that Mixpanel accepts, or None when it must be dropped; ``now_ms`` is
        ``now_ms()``, read when the batch began."""
        properties = body.get("properties")
        if not isinstance(properties, dict) or not self._fix_time(properties, now_ms):
            return None
        data = dumps(body)
        if len(data) > MAX_EVENT_BYTES:
            data = self._trim(body, properties, keep, len(data))
        return data.decode()

    def _fix_time(self, properties: dict[str, Any], now_ms: int) -> bool:
        stamp = properties.get("time")
        if type(stamp) is int and EARLIEST_MS <= stamp <= now_ms + MAX_AHEAD_MS:
            if self._max_age_ms is None or stamp >= now_ms - self._max_age_ms:
                return True
            self._count("too_old", f"Events older than Mixpanel's /track takes ({self._max_age_ms // 86_400_000} "
                        f"days) are dropped; set {ENV_PREFIX}EVENTS_API=import with credentials to keep them")
            return False
        properties["time"] = now_ms
        self._count("times_fixed", "Events without a time Mixpanel takes (none, before 1971, or more than an hour "
                    "ahead) are sent with the time they were converted")
        return True

    def _trim(self, body: dict[str, Any], properties: dict[str, Any], keep: frozenset[str], size: int) -> bytes:
        """Drop the largest properties until the event fits; identity and dedup keys always stay."""
        sizes = sorted(((len(dumps({k: v})), k) for k, v in properties.items() if k not in keep), reverse=True)
        data = b""
        for property_size, key in sizes:
            del properties[key]
            size -= property_size - 2  # less the braces of the one-key object it was measured in
            if size <= MAX_EVENT_BYTES:
                data = dumps(body)
                if len(data) <= MAX_EVENT_BYTES:
                    break
        self._count("trimmed", f"An event over Mixpanel's 1 MB limit ({body.get('event')!r}) is sent without its "
                    "largest properties")
        return data or dumps(body)

    def _count(self, counter: str, warning: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)
            first = counter not in self._warned
            self._warned.add(counter)
        if first:
            logger.warning("%s (logged once; MixpanelSpanExporter.admission counts them)", warning)
