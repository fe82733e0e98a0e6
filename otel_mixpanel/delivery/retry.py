"""How long to wait before trying a failed request again.

Mixpanel asks for exponential backoff with jitter, from about 2 s doubling to 60 s;
jitter keeps many workers that failed together from retrying together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# A server may ask for a long pause, but an hour is the most we believe: past it the
# header is more likely a mistake than advice, and the spool keeps the events anyway.
MAX_RETRY_AFTER_S = 3600.0


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    jitter: float = 0.2
    attempt: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """The wait before the next attempt; ``retry_after_s`` (from the server) wins when given."""
        base = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        return min(self.max_s, base * self._random.uniform(1 - self.jitter, 1 + self.jitter))

    def reset(self) -> None:
        self.attempt = 0
