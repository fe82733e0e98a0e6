"""What a file spool keeps in memory while its disk refuses writes (disk full, quota reached).

Reading still works on a full disk; writing does not, and every step of delivery writes:
a claim writes leases, a delivery deletes records. So while the disk is full a spool
keeps in this process's memory what it would have written: the leases of the records its
threads claim, the ids of delivered records waiting to be deleted, and new records (in a
bounded in-memory spool, whose oldest records are dropped and counted past its bounds).
Delivery therefore goes on from the spool file, and new records are sent from memory.
Once a write succeeds again, the deletions are made and the buffered records written to
the file, and the spool is back to normal.

Leases kept in memory are not seen by other processes sharing the spool file, which may
then send the same record too while the disk is full; Mixpanel counts it once, by its
``$insert_id``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from otel_mixpanel.delivery.spool import Spool

# How often a delivery thread tries the disk again while it is full.
RETRY_S = 1.0
# Bounds of the in-memory buffer (each also at most the spool's own bound).
BUFFER_MAX_EVENTS = 100_000
BUFFER_MAX_BYTES = 32 * 1024 * 1024


class DiskFull:
    """The in-memory state of one spool while (and shortly after) its disk is full."""

    def __init__(self, buffer: Spool) -> None:
        self.buffer = buffer  # an in-memory spool for new records; its ids are handed out negated
        self.full = True
        self.since = time.monotonic()
        self.next_try = self.since + RETRY_S
        self.dropped = 0
        self._unreported = 0
        self.lock = threading.Lock()
        self.serial = threading.Lock()  # one claim, or one attempt at the disk, at a time
        self._leases: dict[int, tuple[str, float]] = {}
        self._removed: set[int] = set()

    def refused_again(self) -> bool:
        """Mark the disk full; True if it was taking writes until now (a new episode)."""
        with self.lock:
            again = not self.full
            if again:
                self.since = time.monotonic()
            self.full = True
            self.next_try = time.monotonic() + RETRY_S
            return again

    def due(self) -> bool:
        """True when it is time to try the disk again (and says so to one caller per period)."""
        with self.lock:
            now = time.monotonic()
            if now < self.next_try:
                return False
            self.next_try = now + RETRY_S
            return True

    def excluded(self, now: float) -> list[int]:
        """Records of the file that must not be claimed: leased here, or delivered already."""
        with self.lock:
            return [row_id for row_id, (_, until) in self._leases.items() if until >= now] + list(self._removed)

    def lease(self, ids: Iterable[int], owner: str, until: float) -> None:
        with self.lock:
            for row_id in ids:
                self._leases[row_id] = (owner, until)

    def renew(self, ids: Iterable[int], owner: str, until: float) -> list[int]:
        """Renew the leases held here; return the ids whose leases are in the file."""
        elsewhere = []
        with self.lock:
            for row_id in ids:
                if row_id in self._leases:
                    self._leases[row_id] = (owner, until)
                else:
                    elsewhere.append(row_id)
        return elsewhere

    def forget(self, ids: Iterable[int]) -> None:
        with self.lock:
            for row_id in ids:
                self._leases.pop(row_id, None)

    def forget_owner(self, owner: str) -> None:
        with self.lock:
            self._leases = {row_id: lease for row_id, lease in self._leases.items() if lease[0] != owner}

    def held(self, owner: str, now: float) -> int:
        with self.lock:
            return sum(1 for lease_owner, until in self._leases.values() if lease_owner == owner and until >= now)

    def removed_later(self, ids: Iterable[int]) -> None:
        with self.lock:
            self._removed.update(ids)

    def removals(self) -> list[int]:
        with self.lock:
            return list(self._removed)

    def removed_now(self, ids: Iterable[int]) -> None:
        with self.lock:
            self._removed.difference_update(ids)

    def unreported(self, dropped: int) -> int:
        """Count records the spool's bounds dropped while buffered ones were written back; return the count."""
        with self.lock:
            self._unreported += dropped
            return self._unreported

    def take_unreported(self) -> int:
        with self.lock:
            dropped, self._unreported = self._unreported, 0
            return dropped

    def settled(self) -> bool:
        """Nothing left that only this process's memory knows (the buffer is checked by the spool)."""
        with self.lock:
            return not self.full and not self._leases and not self._removed
