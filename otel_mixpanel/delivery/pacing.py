"""When a delivery thread may send: backoff after a failure, pauses every thread honours, and shutdown.

Mixpanel asks for exponential backoff with jitter, from about 2 s doubling to 60 s; jitter
keeps many workers that failed together from retrying together. A failure that calls for a
wait (429, 5xx, no answer, 413) holds back every thread of the process for that URL until
the wait is over, not only the thread that got it.

Time is read and waited on through a ``Clock``: ``SystemClock`` reads ``time.monotonic`` and
waits with ``interrupt.wait(seconds)``, which shutdown ends early by setting ``interrupt``.
Tests pass a clock whose ``sleep`` records the wait asked for and moves its time on at once,
so they assert the wait instead of sleeping through it.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from otel_mixpanel.config import Settings

# A server may ask for a long pause, but an hour is the most we believe: past it the
# header is more likely a mistake than advice, and the spool keeps the events anyway.
MAX_RETRY_AFTER_S = 3600.0

class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock."""

    def sleep(self, interrupt: threading.Event, seconds: float) -> None:
        """Wait ``seconds``, or less if ``interrupt`` is set meanwhile."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, interrupt: threading.Event, seconds: float) -> None:
        interrupt.wait(seconds)


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    jitter: float = 0.2
    attempt: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """The wait before the next attempt; ``retry_after_s`` (from the server) wins when given."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        return min(self.max_s, base * self._random.uniform(1 - self.jitter, 1 + self.jitter))

    def reset(self) -> None:
        self.attempt = 0


class Pacing:
    """The pauses per URL, and shutdown's deadline, shared by a sender's delivery threads."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._not_before: dict[str, float] = {}
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._never = threading.Event()
        self._deadline: float | None = None
        self._patient = True

    def backoff(self) -> Backoff:
        return Backoff(self._settings.retry_initial_ms / 1000, self._settings.retry_max_ms / 1000)

    # Pauses per URL.

    def hold_off(self, url: str, seconds: float) -> None:
        until = self._clock.now() + seconds
        with self._lock:
            self._not_before[url] = max(until, self._not_before.get(url, 0.0))

    def paused_for(self, url: str) -> float:
        """Seconds before ``url`` may be sent to again (0 when it may be now)."""
        with self._lock:
            return max(0.0, self._not_before.get(url, 0.0) - self._clock.now())

    def any_paused(self) -> bool:
        now = self._clock.now()
        with self._lock:
            return any(until > now for until in self._not_before.values())

    # Shutdown.

    def stop(self, timeout_s: float, *, patient: bool) -> None:
        """From now on, nothing waits past ``timeout_s``; unless ``patient``, no failure is waited out at all."""
        self._deadline = self._clock.now() + timeout_s
        self._patient = patient
        self._interrupt.set()

    @property
    def stopping(self) -> bool:
        return self._interrupt.is_set()

    def remaining(self) -> float | None:
        """Seconds left before shutdown's deadline, or None when not stopping."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock.now())

    def request_timeout(self) -> float:
        """The deadline for the next request: ``TIMEOUT``, or what is left of shutdown's if less."""
        timeout = self._settings.timeout_ms / 1000
        remaining = self.remaining()
        return timeout if remaining is None else min(timeout, remaining)

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` before a retry; False when shutdown ends the wait (the caller then gives up)."""
        if not self.stopping:
            started = self._clock.now()
            self._clock.sleep(self._interrupt, seconds)
            if not self.stopping:
                return True
            seconds -= self._clock.now() - started
        remaining = self.remaining()
        if not self._patient or remaining is None or seconds > remaining:
            return False
        if seconds > 0:
            self._clock.sleep(self._never, seconds)
        return True
