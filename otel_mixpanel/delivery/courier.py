"""One delivery pass of one thread: claim batches, send them in requests, act on each answer.

What each answer does is the table in ``docs/delivery.md``; in short, records leave the
spool only when Mixpanel has taken them or refused them for good, and every failure that
sends records again is paced by the backoff (see ``pacing``).

413 (too large): a request of several records is split in halves, each sent after the
backoff's wait, like any failure. A record refused on its own is too large itself when it is
over Mixpanel's 1 MB event limit or larger than a request the endpoint has taken: it is
dropped, counted ``rejected`` and logged once with its size. Otherwise (the endpoint refuses
even small requests, as a proxy with a low body limit does) the record is kept and set aside
until the next retry, so the others go first and the endpoint is not hammered.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from otel_mixpanel.config import ENV_PREFIX, Settings
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.delivery.pacing import Backoff, Pacing
from otel_mixpanel.delivery.spool import Record, Spool
from otel_mixpanel.delivery.routes import Route, route_for
from otel_mixpanel.delivery.transport import Outcome, Verdict, request_size, split_by_size
from otel_mixpanel.delivery.troubles import Tally, Troubles, logger
from otel_mixpanel.delivery.workers import Worker

# A lease outlives the request it covers by this much, so a slow but live sender keeps its rows.
LEASE_MARGIN_S = 30.0
# Mixpanel's documented limit for one event: under 1 MB of JSON.
MAX_EVENT_BYTES = 1_000_000

Count = Callable[[str, int], None]


@dataclass
class _Batch:
    """A claimed batch on its way: the requests still to send, and how its failures are paced."""

    worker: Worker
    route: Route
    queue: deque[list[Record]]
    backoff: Backoff
    failed_here: bool = False
    # Leased by the claim for its first request and the next one (see Courier._claim_lease_s).
    fresh: bool = True

    def ids(self, *chunks: list[Record]) -> list[int]:
        return [record.id for chunk in chunks for record in chunk]

    def held(self, chunk: list[Record]) -> list[int]:
        return self.ids(chunk, *self.queue)


class Courier:
    """Delivers for the threads of one sender; each pass keeps its state to itself."""

    def __init__(self, settings: Settings, spool: Callable[[], Spool], pacing: Pacing, troubles: Troubles,
                 count: Count, wake_another: Callable[[], None]) -> None:
        self._settings = settings
        self._spool = spool
        self._pacing = pacing
        self._troubles = troubles
        self._count = count
        self._wake_another = wake_another
        self._routes = {endpoint: route_for(settings, endpoint) for endpoint in Endpoint}
        self._largest_taken: dict[str, int] = {}
        self._splits = Tally()
        self._lock = threading.Lock()

    def drain(self, worker: Worker) -> bool:
        """One pass: True when nothing is left to claim, False when it ended early (or failed)."""
        try:
            return self._drain(worker)
        except Exception:
            logger.exception("Mixpanel delivery failed unexpectedly; the records stay in the spool")
            self._pacing.pause(self._settings.retry_max_ms / 1000)
            return False

    def _drain(self, worker: Worker) -> bool:
        limit = self._settings.batch_size
        while True:
            if self._pacing.remaining() == 0.0:
                return False
            if self._pacing.any_paused():
                # The thread whose request failed retries alone and claims the rest once through.
                return self._spool().held(worker.owner) == 0
            records = self._spool().claim(worker.owner, limit, self._claim_lease_s())
            if not records:
                # A worker killed meanwhile (SIGKILL, OOM) leaves leases nobody will end: take them now.
                if self._spool().reclaim_from_dead_owners():
                    continue
                return self._spool().held(worker.owner) == 0
            if len(records) == limit:
                # More may be waiting: another thread claims the next batch while this one is sent.
                self._wake_another()
            if not self._deliver(worker, records):
                return False

    def _lease_s(self, wait_s: float) -> float:
        return wait_s + self._settings.timeout_ms / 1000 + LEASE_MARGIN_S

    def _claim_lease_s(self) -> float:
        # Long enough for the first request and the one after it, as the renewal before the first
        # request would make it: a full batch often takes two requests, and that renewal would write
        # every lease again moments after the claim, under the lock the exporting thread spools with.
        return self._lease_s(self._settings.timeout_ms / 1000)

    def _deliver(self, worker: Worker, records: list[Record]) -> bool:
        """Send one claimed batch; False when shutdown ends the pass."""
        route = self._routes[Endpoint(records[0].endpoint)]
        chunks = split_by_size(records, [record.size for record in records], self._settings.max_request_bytes)
        batch = _Batch(worker, route, deque(chunks), self._pacing.backoff())
        spool = self._spool()
        while batch.queue:
            chunk = batch.queue.popleft()
            wait = self._pacing.paused_for(route.url)
            if wait > 0 and not batch.failed_here:
                # Another thread's request failed. Waiting with this batch would only hold its
                # records in memory through an outage: that thread sends them once through.
                spool.release(batch.held(chunk))
                return True
            if wait > 0:
                spool.renew(batch.held(chunk), worker.owner, self._lease_s(wait))
                batch.fresh = False
                if not self._pacing.pause(wait):
                    spool.release(batch.held(chunk))
                    return False
                batch.queue.appendleft(chunk)
                continue
            timeout = self._pacing.request_timeout()
            if timeout <= 0:
                spool.release(batch.held(chunk))
                return False
            if batch.queue and not batch.fresh:
                # Later chunks wait for this request: their leases must outlive it.
                spool.renew(batch.held(chunk), worker.owner, self._lease_s(timeout))
            batch.fresh = False
            outcome = worker.transport.post(route, [record.body for record in chunk], timeout)
            if not self._act(batch, chunk, outcome):
                return True
        return True

    def _act(self, batch: _Batch, chunk: list[Record], outcome: Outcome) -> bool:
        """Do what ``outcome`` calls for; False when the rest of the batch is set aside."""
        verdict = outcome.verdict
        if verdict is Verdict.DELIVERED:
            self._delivered(batch, chunk, outcome)
        elif verdict is Verdict.REJECTED and len(chunk) > 1:
            # Halves, not a retry of the same request: they isolate what Mixpanel refuses.
            batch.queue.extendleft(_halves(chunk))
        elif verdict is Verdict.REJECTED:
            self._drop(batch.route, chunk[0], f"HTTP {outcome.status}: {outcome.detail}")
        elif verdict is Verdict.TOO_LARGE:
            self._too_large(batch, chunk, outcome)
        elif verdict is Verdict.RETRY:
            self._retry_later(batch, chunk, outcome)
            batch.queue.appendleft(chunk)
        else:
            # Set aside until the lease ends, so other endpoints (e.g. /engage when only the
            # /import credentials are wrong) keep flowing meanwhile.
            self._misconfigured(batch, chunk, outcome)
            self._spool().renew(batch.held(chunk), batch.worker.owner, self._settings.retry_max_ms / 1000)
            return False
        return True

    def _too_large(self, batch: _Batch, chunk: list[Record], outcome: Outcome) -> None:
        path, size = batch.route.path, request_size([record.size for record in chunk])
        if len(chunk) > 1:
            refused = self._splits.add(1)
            if refused:
                logger.info("Mixpanel %s answered HTTP 413 (too large) to %d request(s) of several records, the "
                            "last %d records in %d bytes; sending them in smaller requests", path, refused, len(chunk),
                            size)
            self._retry_later(batch, chunk, outcome)
            batch.queue.extendleft(_halves(chunk))
            return
        with self._lock:
            largest_taken = self._largest_taken.get(batch.route.url, 0)
        if chunk[0].size > MAX_EVENT_BYTES or 0 < largest_taken < size:
            self._drop(batch.route, chunk[0], f"HTTP 413: it is too large ({chunk[0].size} bytes)")
            return
        self._troubles.report(
            "too-large-alone", logging.WARNING,
            "Mixpanel %s answered HTTP 413 (too large) to a single record of %d bytes, under Mixpanel's event "
            "limit and no larger than requests it has taken (is a proxy limiting request sizes?); records are "
            "kept in the spool and retried with backoff",
            path, size,
        )
        delay = self._retry_later(batch, chunk, outcome)
        self._spool().renew(batch.ids(chunk), batch.worker.owner, delay + self._settings.retry_max_ms / 1000)

    def _retry_later(self, batch: _Batch, chunk: list[Record], outcome: Outcome) -> float:
        """Pause the URL for every thread, for the backoff's next wait; this thread waits it out."""
        self._count("retried", len(chunk))
        self._troubles.retrying(batch.worker.owner)
        if outcome.verdict is Verdict.RETRY:
            self._note_error(batch.route, outcome)
            what = f"HTTP {outcome.status}" if outcome.status else "no answer"
            self._troubles.report(
                f"retry-{outcome.status}", logging.WARNING,
                "Mixpanel %s is not taking records (%s: %s); retrying with backoff, records stay in the spool",
                batch.route.path, what, outcome.detail,
            )
        delay = batch.backoff.next_delay(outcome.retry_after_s)
        batch.failed_here = True
        self._pacing.hold_off(batch.route.url, delay)
        return delay

    def _note_error(self, route: Route, outcome: Outcome) -> None:
        # Kept in the spool file for `otel-mixpanel status`, and to recognise records held after a 401.
        what = f"HTTP {outcome.status}" if outcome.status else "no answer"
        self._spool().note_error(f"{route.path}: {what}: {outcome.detail}",
                                 credentials=outcome.verdict is Verdict.CREDENTIALS)

    def _misconfigured(self, batch: _Batch, chunk: list[Record], outcome: Outcome) -> None:
        path, spool = batch.route.path, self._spool()
        self._note_error(batch.route, outcome)
        if outcome.verdict is Verdict.CREDENTIALS:
            waiting = len(chunk) + sum(len(queued) for queued in batch.queue)
            self._troubles.report(
                "credentials", logging.ERROR,
                "Mixpanel %s refused the credentials (HTTP %s: %s). Check %sSERVICE_ACCOUNT_USERNAME/"
                "_SECRET with %sPROJECT_ID, %sAPI_SECRET or %sTOKEN. %d records are kept in the spool %r "
                "and will be sent once the setting is fixed and the process restarted.",
                path, outcome.status, outcome.detail, ENV_PREFIX, ENV_PREFIX, ENV_PREFIX, ENV_PREFIX,
                waiting, spool.path or ":memory:",
            )
            return
        self._troubles.report(
            f"status-{outcome.status}", logging.ERROR,
            "Mixpanel %s answered HTTP %s (%s): is %sENDPOINT right (now %s)? Records are kept in the spool",
            path, outcome.status, outcome.detail, ENV_PREFIX, self._settings.endpoint,
        )

    def _delivered(self, batch: _Batch, chunk: list[Record], outcome: Outcome) -> None:
        self._spool().remove(record.id for record in chunk)
        batch.backoff.reset()
        size = request_size([record.size for record in chunk])
        with self._lock:
            self._largest_taken[batch.route.url] = max(size, self._largest_taken.get(batch.route.url, 0))
        failed = [f for f in outcome.failed if 0 <= f.index < len(chunk)]
        for item in failed:
            logger.warning(
                "Mixpanel %s refused record %s (event %r, $insert_id %r): %s: %s; it is dropped",
                batch.route.path, item.index, _event_name(chunk[item.index].body), item.insert_id,
                item.field, item.message,
            )
        self._count("rejected", len(failed))
        self._count("sent", len(chunk) - len(failed))
        self._spool().note_delivered()
        self._troubles.recovered(batch.worker.owner)

    def _drop(self, route: Route, record: Record, reason: str) -> None:
        self._spool().remove([record.id])
        self._count("rejected", 1)
        logger.warning("Mixpanel %s refused a record on its own (event %r): %s; it is dropped",
                       route.path, _event_name(record.body), reason)

    def release_all(self, worker: Worker) -> None:
        """When a thread stops: its set-aside records go back at once, for the next sender."""
        try:
            self._spool().release_owner(worker.owner)
        except (sqlite3.Error, OSError) as error:
            logger.warning("Mixpanel spool %r: cannot give back leases (%s)", self._spool().path, error)


def _halves(chunk: list[Record]) -> list[list[Record]]:
    """The two halves of ``chunk`` in the order ``deque.extendleft`` needs to send the first half first."""
    middle = len(chunk) // 2
    return [chunk[middle:], chunk[:middle]]


def _event_name(body: str) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("event") if isinstance(value, dict) else None
