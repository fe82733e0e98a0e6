"""The sender: spools records on the caller's thread, delivers them from its own.

Application threads only ever write to the spool (local SQLite); every network call
happens on a few daemon delivery threads per process, started lazily so that a process
forked after the sender was built starts its own.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

from otel_mixpanel.config import ENV_PREFIX, OUTPUT_MIXPANEL, Settings
from otel_mixpanel.delivery import metrics
from otel_mixpanel.delivery.local import PrintingSender
from otel_mixpanel.delivery.retry import Backoff
from otel_mixpanel.delivery.spool import Record, Spool, make_owner, open_spool
from otel_mixpanel.delivery.transport import (
    CONSUMER_ENDPOINTS,
    Outcome,
    Transport,
    Verdict,
    route_for,
    split_by_size,
)

logger = logging.getLogger("otel_mixpanel.delivery")

DEFAULT_FLUSH_MS = 30_000
# Process exit must not wait long on Mixpanel: what is not sent by then stays spooled.
EXIT_FLUSH_MS = 2_000
# A lease outlives the request it covers by this much, so a slow but live sender keeps its rows.
LEASE_MARGIN_S = 30.0
# The spool-full warning is repeated at most this often, with the number dropped since.
OVERFLOW_WARNING_INTERVAL_S = 60.0
# Delivery threads per process, so several requests travel at once: with a 30 ms round trip a
# single thread spends most of its time waiting. Mixpanel documents 10-20 concurrent senders as
# fine, but every process of a pre-forking server (gunicorn, uWSGI) has its own set: four keeps
# a host with a handful of workers inside that, and already hides the round trip (a batch takes
# longer to convert and spool than to send).
CONCURRENT_REQUESTS = 4
_EVENT_ENDPOINTS = ("events", "imports")


@dataclass(frozen=True)
class SenderStats:
    """Counters since this sender started in this process (a forked child starts from zero)."""

    accepted: int = 0
    sent: int = 0
    retried: int = 0
    rejected: int = 0
    dropped: int = 0


class _Troubles:
    """Logs each kind of trouble once while it lasts, and once more when delivery recovers."""

    def __init__(self) -> None:
        self._active: set[str] = set()
        self._retrying: set[str] = set()
        self._overflow_dropped = 0
        self._overflow_logged = 0.0
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

    def overflow(self, dropped: int, spool: Spool) -> None:
        with self._lock:
            self._overflow_dropped += dropped
            now = time.monotonic()
            if self._overflow_logged and now - self._overflow_logged < OVERFLOW_WARNING_INTERVAL_S:
                return
            count, self._overflow_dropped, self._overflow_logged = self._overflow_dropped, 0, now
        logger.warning(
            "Mixpanel spool %r is full (%d events / %d bytes at most): dropped the %d oldest records; "
            "raise %sSPOOL_MAX_EVENTS / %sSPOOL_MAX_BYTES or check why delivery is failing",
            spool.path or ":memory:", spool.max_events, spool.max_bytes, count, ENV_PREFIX, ENV_PREFIX,
        )


class _Worker:
    """What one delivery thread has to itself: its lease owner id (so threads claim disjoint
    batches, as separate processes do) and its HTTP session."""

    def __init__(self, index: int, settings: Settings) -> None:
        self.name = "otel-mixpanel-delivery" + (f"-{index + 1}" if index else "")
        # Only the first thread wakes on the schedule; the others are woken when there is more
        # than one batch to send, so a trickle of events does not become many tiny requests.
        self.scheduled = index == 0
        self.owner = make_owner()
        self.transport = Transport(settings)
        self.wake = threading.Event()
        self.idle = False
        self.flushed = 0  # the last flush ticket this thread has completed
        self.busy = False  # in a delivery pass, which may hold records claimed after a flush was satisfied
        self.thread: threading.Thread | None = None


class MixpanelSender:
    """A Mixpanel consumer (``send``/``flush``) with a durable spool and background delivery."""

    def __init__(self, settings: Settings, spool: Spool | None = None) -> None:
        self._settings = settings
        self._spool = spool if spool is not None else open_spool(settings)
        self._routes = {endpoint: route_for(settings, endpoint) for endpoint in CONSUMER_ENDPOINTS}
        self._delay_s = settings.schedule_delay_ms / 1000
        self._timeout_s = settings.timeout_ms / 1000
        self._shut_down = False
        self._start_process_state()
        _live_senders.add(self)
        metrics.register(self)
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _start_process_state(self) -> None:
        """Everything that belongs to one process: rebuilt, never reused, in a forked child."""
        self._pid = os.getpid()
        self._state_lock = threading.Lock()
        self._counters = dict.fromkeys(metrics.COUNTER_NAMES, 0)
        self._since_wake = 0
        self._interrupt = threading.Event()
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._stopping = False
        self._deadline: float | None = None
        self._workers = [_Worker(index, self._settings) for index in range(CONCURRENT_REQUESTS)]
        self._running: list[_Worker] = []
        # Per route URL, the monotonic time before which no thread may send: a 429 or 5xx
        # answered to one thread holds all of them back, as Mixpanel's backoff advice intends.
        self._not_before: dict[str, float] = {}
        self._troubles = _Troubles()

    def _after_fork(self) -> None:
        for worker in self._workers:
            worker.transport.abandon()
        self._spool.after_fork()
        self._start_process_state()

    def _check_fork(self) -> None:
        # uWSGI can fork without running os.register_at_fork hooks.
        if self._pid != os.getpid():
            self._after_fork()

    def __repr__(self) -> str:
        return f"MixpanelSender(endpoint={self._settings.endpoint!r}, spool={self._spool.path or ':memory:'!r})"

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def stats(self) -> SenderStats:
        return SenderStats(**self.counter_values())

    def counter_values(self) -> dict[str, int]:
        with self._state_lock:
            return dict(self._counters)

    def _count(self, counter: str, amount: int) -> None:
        if amount:
            with self._state_lock:
                self._counters[counter] += amount

    # The consumer interface, called on application threads.

    def send(self, endpoint: str, json_message: str, api_key: Any = None, api_secret: Any = None) -> None:
        """Spool one message (a JSON object, or an array of them) for ``endpoint``; never touches the network.

        ``api_key``/``api_secret`` are accepted for compatibility with ``mixpanel.Mixpanel`` but not
        used: records are sent with the configured credentials, which are never written to the spool.
        """
        self.send_many([(endpoint, json_message)])

    def send_many(self, messages: Iterable[tuple[str, str]], *, prevalidated: bool = False) -> None:
        """Spool several ``(endpoint, json_message)`` pairs in one transaction; never touches the network.

        By default each message is parsed and written again: an array becomes one record per
        object, anything but JSON objects raises ``ValueError``, and an event without
        ``$insert_id`` gets a random one (so a retried request cannot count it twice).

        ``prevalidated=True`` skips that for a caller whose every message is already exactly
        one JSON object as ``json.dumps`` or orjson writes it (no array, no raw control characters), with
        a ``$insert_id`` in an event's ``properties``: the messages are spooled as they are.
        The exporter's ``export()`` calls it so. Only the endpoint names are still checked.
        """
        self._check_fork()
        if prevalidated:
            records = list(messages)
            for endpoint in {endpoint for endpoint, _ in records}:
                _check_endpoint(endpoint)
        else:
            records = [record for endpoint, message in messages for record in _records(endpoint, message)]
        if not records:
            return
        try:
            dropped = self._put(records)
        except (sqlite3.Error, OSError) as error:
            self._count("dropped", len(records))
            self._troubles.report(
                "spool-write", logging.ERROR,
                "Mixpanel spool %r cannot be written (%s): records are being dropped",
                self._spool.path or ":memory:", error,
            )
            return
        self._count("accepted", len(records))
        if dropped:
            self._count("dropped", dropped)
            self._troubles.overflow(dropped, self._spool)
        if self._shut_down:
            return
        with self._state_lock:
            self._since_wake += len(records)
            full = self._since_wake >= self._settings.batch_size
            if full:
                self._since_wake = 0
        self._ensure_threads()
        if full or self._delay_s == 0:
            self._wake_idle()

    def _put(self, records: list[tuple[str, str]]) -> int:
        try:
            return self._spool.put_many(records)
        except (sqlite3.Error, OSError) as error:
            if self._spool.path is None or self._spool.ever_opened:
                raise
            # A spool that cannot even be created (unwritable directory) must not cost the events:
            # they are kept in memory for this process instead, and the operator is told.
            logger.error(
                "Mixpanel spool %r cannot be created (%s): keeping records in memory instead; "
                "they will be lost if the process dies. Check %sSPOOL_DIR",
                self._spool.path, error, ENV_PREFIX,
            )
            self._spool = Spool(None, max_events=self._spool.max_events, max_bytes=self._spool.max_bytes)
            return self._spool.put_many(records)

    def flush(self, timeout_millis: float | None = None) -> bool:
        """Deliver everything spooled now; True if nothing claimable is left within the deadline."""
        self._check_fork()
        timeout_s = (DEFAULT_FLUSH_MS if timeout_millis is None else timeout_millis) / 1000
        deadline = time.monotonic() + timeout_s
        if self._shut_down:
            return self._claimable() == 0
        with self._flush_cond:
            self._flush_requested += 1
            ticket = self._flush_requested
        if not self._ensure_threads():
            return self._claimable() == 0
        self._wake_all()
        # Every thread, not just one: a thread that finds nothing left to claim may finish while
        # another still has a batch in flight; and none may be in a later pass, which can hold
        # records another thread handed back during a pause.
        with self._flush_cond:
            return self._flush_cond.wait_for(
                lambda: all(worker.flushed >= ticket and not worker.busy for worker in self._running),
                timeout=max(0.0, deadline - time.monotonic()),
            )

    force_flush = flush

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Deliver what can be delivered before the deadline, then stop; the rest stays spooled."""
        self._check_fork()
        if self._shut_down:
            return
        self._shut_down = True
        self._deadline = time.monotonic() + timeout_millis / 1000
        self._stopping = True
        if not self._running and self._claimable() and not self._ensure_threads(force=True):
            # At interpreter exit no thread can start (Python 3.12+): deliver here, within the deadline.
            worker = self._workers[0]
            self._drain(worker)
            self._stopped(worker)
        self._interrupt.set()
        self._wake_all()
        for worker in self._running:
            worker.thread.join(max(0.0, self._deadline - time.monotonic()))
            if worker.thread.is_alive():
                return
        self._spool.close()

    def _claimable(self) -> int | None:
        """Records waiting to be claimed, or None when the spool cannot be read."""
        try:
            return self._spool.claimable()
        except (sqlite3.Error, OSError) as error:
            logger.error("Mixpanel spool %r cannot be read (%s)", self._spool.path or ":memory:", error)
            return None

    # The delivery threads.

    def _ensure_threads(self, force: bool = False) -> bool:
        """Start the delivery threads if needed; False when there is none and none can start."""
        if self._running:
            return True
        if self._shut_down and not force:
            return False
        with self._state_lock:
            if not self._running:
                for worker in self._workers:
                    thread = threading.Thread(target=self._run, args=(worker,), name=worker.name, daemon=True)
                    try:
                        thread.start()
                    except RuntimeError:
                        break
                    worker.thread = thread
                    self._running.append(worker)
        return bool(self._running)

    def _wake_all(self) -> None:
        for worker in self._workers:
            worker.wake.set()

    def _wake_idle(self) -> None:
        """Wake one thread that is waiting for work; when none is, the busy ones claim again anyway."""
        with self._state_lock:
            for worker in self._running:
                if worker.idle:
                    worker.idle = False
                    worker.wake.set()
                    return

    def _run(self, worker: _Worker) -> None:
        if worker.scheduled:
            try:
                self._spool.reclaim_from_dead_owners()
            except (sqlite3.Error, OSError) as error:
                logger.warning("Mixpanel spool %r: cannot check for abandoned leases (%s)", self._spool.path, error)
        else:
            self._idle(worker)
        while True:
            worker.wake.clear()
            with self._flush_cond:
                ticket = self._flush_requested
                worker.busy = True
            try:
                complete = self._drain(worker)
            except Exception:
                logger.exception("Mixpanel delivery failed unexpectedly; the records stay in the spool")
                complete = False
                if not self._stopping:
                    self._interrupt.wait(self._settings.retry_max_ms / 1000)
            with self._flush_cond:
                worker.busy = False
                if complete:
                    worker.flushed = max(worker.flushed, ticket)
                self._flush_cond.notify_all()
            if self._stopping:
                break
            self._idle(worker)
        self._stopped(worker)

    def _idle(self, worker: _Worker) -> None:
        with self._state_lock:
            worker.idle = True
        worker.wake.wait(self._delay_s if worker.scheduled else None)
        with self._state_lock:
            worker.idle = False

    def _stopped(self, worker: _Worker) -> None:
        # Records set aside after a 401 go back at once, for the next sender with fixed settings.
        self._spool.release_owner(worker.owner)
        worker.transport.close()

    def _drain(self, worker: _Worker) -> bool:
        """Send batches until nothing is claimable (True) or the shutdown deadline ends it (False)."""
        limit = self._settings.batch_size
        while True:
            if self._remaining() == 0.0:
                return False
            if self._paused():
                # The thread whose request failed retries alone and claims the rest once through.
                return True
            records = self._spool.claim(worker.owner, limit, self._timeout_s + LEASE_MARGIN_S)
            if not records:
                # A worker killed meanwhile (SIGKILL, OOM) leaves leases nobody will end: take them now.
                if self._spool.reclaim_from_dead_owners():
                    continue
                return self._spool.held(worker.owner) == 0
            if len(records) == limit:
                # More may be waiting: another thread claims the next batch while this one is sent.
                self._wake_idle()
            if not self._deliver(worker, records):
                return False

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def _deliver(self, worker: _Worker, records: list[Record]) -> bool:
        endpoint = records[0].endpoint
        route = self._routes[endpoint]
        queue = deque(split_by_size(records, [record.size for record in records], self._settings.max_request_bytes))
        backoff = Backoff(self._settings.retry_initial_ms / 1000, self._settings.retry_max_ms / 1000)
        failed_here = False
        while queue:
            chunk = queue.popleft()
            held = [r.id for batch in [chunk, *queue] for r in batch]
            wait = self._not_before.get(route.url, 0.0) - time.monotonic()
            if wait > 0 and not failed_here:
                # Another thread's request failed. Waiting with this batch would only hold its
                # records in memory through an outage: that thread sends them once through.
                self._spool.release(held)
                return True
            if wait > 0:
                # The leases must outlive the wait and the request after it.
                self._spool.renew(held, worker.owner, wait + self._timeout_s + LEASE_MARGIN_S)
                if not self._pause(wait):
                    self._spool.release(held)
                    return False
                queue.appendleft(chunk)
                continue
            remaining = self._remaining()
            timeout = self._timeout_s if remaining is None else min(self._timeout_s, remaining)
            if timeout <= 0:
                self._spool.release(held)
                return False
            if queue:
                # Later chunks wait for this request: their leases must outlive it.
                self._spool.renew(held, worker.owner, timeout + self._timeout_s + LEASE_MARGIN_S)
            outcome = worker.transport.post(route, [record.body for record in chunk], timeout)
            verdict = outcome.verdict
            if verdict is Verdict.DELIVERED:
                self._delivered(worker, route.path, chunk, outcome)
                backoff.reset()
                continue
            if verdict in (Verdict.TOO_LARGE, Verdict.REJECTED):
                if len(chunk) > 1:
                    # Halves, not a retry of the same request: they isolate what Mixpanel refuses.
                    middle = len(chunk) // 2
                    queue.extendleft([chunk[middle:], chunk[:middle]])
                else:
                    self._reject(route.path, chunk[0], outcome)
                continue
            delay = self._trouble(worker, route.path, chunk, queue, outcome, backoff)
            if verdict is not Verdict.RETRY:
                # Set aside until the lease ends, so other endpoints (e.g. /engage when only the
                # /import credentials are wrong) keep flowing meanwhile.
                self._spool.renew(held, worker.owner, delay)
                return True
            failed_here = True
            self._hold_off(route.url, delay)
            queue.appendleft(chunk)
        return True

    def _paused(self) -> bool:
        now = time.monotonic()
        with self._state_lock:
            return any(until > now for until in self._not_before.values())

    def _hold_off(self, url: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        with self._state_lock:
            self._not_before[url] = max(until, self._not_before.get(url, 0.0))

    def _delivered(self, worker: _Worker, path: str, chunk: list[Record], outcome: Outcome) -> None:
        self._spool.remove(record.id for record in chunk)
        failed = [f for f in outcome.failed if 0 <= f.index < len(chunk)]
        for item in failed:
            logger.warning(
                "Mixpanel %s refused record %s (event %r, $insert_id %r): %s: %s; it is dropped",
                path, item.index, _event_name(chunk[item.index].body), item.insert_id, item.field, item.message,
            )
        self._count("rejected", len(failed))
        self._count("sent", len(chunk) - len(failed))
        self._spool.note_delivered()
        self._troubles.recovered(worker.owner)

    def _reject(self, path: str, record: Record, outcome: Outcome) -> None:
        self._spool.remove([record.id])
        self._count("rejected", 1)
        reason = "it is too large" if outcome.verdict is Verdict.TOO_LARGE else outcome.detail
        logger.warning(
            "Mixpanel %s refused a record (event %r, HTTP %s): %s; it is dropped",
            path, _event_name(record.body), outcome.status, reason,
        )

    def _trouble(self, worker: _Worker, path: str, chunk: list[Record], queue: deque, outcome: Outcome,
                 backoff: Backoff) -> float:
        waiting = len(chunk) + sum(len(batch) for batch in queue)
        # Kept in the spool file for `otel-mixpanel status`, and to recognise records held after a 401.
        self._spool.note_error(f"{path}: {f'HTTP {outcome.status}' if outcome.status else 'no answer'}: "
                               f"{outcome.detail}", credentials=outcome.verdict is Verdict.CREDENTIALS)
        if outcome.verdict is Verdict.RETRY:
            self._count("retried", len(chunk))
            self._troubles.retrying(worker.owner)
            what = f"HTTP {outcome.status}" if outcome.status else "no answer"
            self._troubles.report(
                f"retry-{outcome.status}", logging.WARNING,
                "Mixpanel %s is not taking records (%s: %s); retrying with backoff, records stay in the spool",
                path, what, outcome.detail,
            )
            return backoff.next_delay(outcome.retry_after_s)
        if outcome.verdict is Verdict.CREDENTIALS:
            self._troubles.report(
                "credentials", logging.ERROR,
                "Mixpanel %s refused the credentials (HTTP %s: %s). Check %sSERVICE_ACCOUNT_USERNAME/"
                "_SECRET with %sPROJECT_ID, %sAPI_SECRET or %sTOKEN. %d records are kept in the spool %r "
                "and will be sent once the setting is fixed and the process restarted.",
                path, outcome.status, outcome.detail, ENV_PREFIX, ENV_PREFIX, ENV_PREFIX, ENV_PREFIX,
                waiting, self._spool.path or ":memory:",
            )
        else:
            self._troubles.report(
                f"status-{outcome.status}", logging.ERROR,
                "Mixpanel %s answered HTTP %s (%s): is %sENDPOINT right (now %s)? Records are kept in the spool",
                path, outcome.status, outcome.detail, ENV_PREFIX, self._settings.endpoint,
            )
        return self._settings.retry_max_ms / 1000

    def _pause(self, seconds: float) -> bool:
        """Sleep before a retry; False when shutdown's deadline comes first (the caller then gives up)."""
        until = time.monotonic() + seconds
        if not self._stopping:
            self._interrupt.wait(seconds)
        if self._deadline is not None and until > self._deadline:
            return False
        rest = until - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        return True


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in CONSUMER_ENDPOINTS:
        raise ValueError(f"unknown Mixpanel endpoint {endpoint!r}; expected one of {', '.join(CONSUMER_ENDPOINTS)}")


def _records(endpoint: str, message: str) -> list[tuple[str, str]]:
    _check_endpoint(endpoint)
    parsed = json.loads(message)
    items = parsed if isinstance(parsed, list) else [parsed]
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"a Mixpanel {endpoint} message must be a JSON object or an array of objects")
        if endpoint in _EVENT_ENDPOINTS:
            _ensure_insert_id(item)
        out.append((endpoint, json.dumps(item, separators=(",", ":"), ensure_ascii=False)))
    return out


def _ensure_insert_id(event: dict[str, Any]) -> None:
    # A retried request must carry the same $insert_id, or Mixpanel would count the event twice.
    properties = event.get("properties")
    if isinstance(properties, dict) and not properties.get("$insert_id"):
        properties["$insert_id"] = os.urandom(16).hex()


def _event_name(body: str) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("event") if isinstance(value, dict) else None


_live_senders: weakref.WeakSet[MixpanelSender] = weakref.WeakSet()


def _before_fork() -> None:
    for sender in list(_live_senders):
        if sender._pid == os.getpid():
            sender._spool.before_fork()
            _forking.append(sender)


def _after_fork_in_parent() -> None:
    while _forking:
        _forking.pop()._spool.after_fork_in_parent()


def _after_fork_in_child() -> None:
    _forking.clear()
    for sender in list(_live_senders):
        sender._after_fork()


_forking: list[MixpanelSender] = []
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def _flush_at_exit(ref: weakref.ref[MixpanelSender]) -> None:
    # A flush, not a shutdown: atexit hooks registered earlier (a TracerProvider's) run after this
    # one and may still export and then shut the sender down themselves.
    sender = ref()
    if sender is not None and sender._pid == os.getpid() and not sender._shut_down:
        sender.flush(timeout_millis=EXIT_FLUSH_MS)


def create_sender(settings: Settings) -> MixpanelSender | PrintingSender:
    if settings.output != OUTPUT_MIXPANEL:
        # Development output: nothing is spooled or sent, so none of the machinery above is started.
        return PrintingSender(settings)
    return MixpanelSender(settings)


