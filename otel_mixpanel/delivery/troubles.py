"""What the delivery logs, and how often: a line when trouble starts, not one per event or per retry."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger("otel_mixpanel.delivery")

# A repeated warning (spool full, messages refused) is logged at most this often, with the count since.
REPEAT_INTERVAL_S = 60.0


class Troubles:
    """Logs each kind of delivery trouble once while it lasts, and once more when delivery recovers."""

    def __init__(self) -> None:
        self._active: set[str] = set()
        self._retrying: set[str] = set()
        self._lock = threading.Lock()

    def report(self, kind: str, level: int, message: str, *args: Any) -> None:
        with self._lock:
            if kind in self._active:
                return
            self._active.add(kind)
        logger.log(level, message, *args)

    def retrying(self, owner: str) -> None:
        with self._lock:
            self._retrying.add(owner)

    def recovered(self, owner: str) -> None:
        with self._lock:
            self._retrying.discard(owner)
            # While another thread still retries, its next failure would log the trouble again as new.
            if not self._active or self._retrying:
                return
            kinds, self._active = sorted(self._active), set()
        logger.info("Mixpanel delivery recovered (after: %s)", ", ".join(kinds))


class Tally:
    """Counts a recurring loss and says when to log it: the first time, then at most every ``interval_s``."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._count = 0
        self._logged_at: float | None = None
        self._lock = threading.Lock()

    def add(self, count: int) -> int:
        """Add ``count``; the total to log now (since the last line), or 0 when it is not yet time."""
        with self._lock:
            self._count += count
            now = time.monotonic()
            if self._logged_at is not None and now - self._logged_at < self._interval_s:
                return 0
            total, self._count, self._logged_at = self._count, 0, now
            return total
