"""The sender: spools records on the caller's thread, delivers them from its own.

Application threads only ever write to the spool (local SQLite); every network call
happens on one daemon thread per process, started lazily so that a process forked
after the sender was built starts its own.
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

from otel_mixpanel.config import ENV_PREFIX, Settings
from otel_mixpanel.delivery import metrics
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
        self._overflow_dropped = 0
        self._overflow_logged = 0.0
        self._lock = threading.Lock()

    def report(self, kind: str, level: int, message: str, *args: Any) -> None:
        with self._lock:
            if kind in self._active:
                return
            self._active.add(kind)
        logger.log(level, message, *args)

    def recovered(self) -> None:
        with self._lock:
            if not self._active:
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
        self._owner = make_owner()
        self._state_lock = threading.Lock()
        self._counters = dict.fromkeys(metrics.COUNTER_NAMES, 0)
        self._since_wake = 0
        self._wake = threading.Event()
        self._interrupt = threading.Event()
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._transport = Transport(self._settings)
        self._troubles = _Troubles()

    def _after_fork(self) -> None:
        self._transport.abandon()
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

    def send_many(self, messages: Iterable[tuple[str, str]]) -> None:
        """Spool several messages in one transaction; this is what the exporter's ``export()`` calls."""
        self._check_fork()
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
        self._ensure_thread()
        if full or self._delay_s == 0:
            self._wake.set()

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
        if not self._ensure_thread():
            return self._claimable() == 0
        self._wake.set()
        with self._flush_cond:
            return self._flush_cond.wait_for(
                lambda: self._flush_done >= ticket, timeout=max(0.0, deadline - time.monotonic())
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
        if self._thread is None and self._claimable() and not self._ensure_thread(force=True):
            # At interpreter exit no thread can start (Python 3.12+): deliver here, within the deadline.
            self._drain()
            self._stopped()
        self._interrupt.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, self._deadline - time.monotonic()))
            if thread.is_alive():
                return
        self._spool.close()

    def _claimable(self) -> int | None:
        """Records waiting to be claimed, or None when the spool cannot be read."""
        try:
            return self._spool.claimable()
        except (sqlite3.Error, OSError) as error:
            logger.error("Mixpanel spool %r cannot be read (%s)", self._spool.path or ":memory:", error)
            return None

    # The delivery thread.

    def _ensure_thread(self, force: bool = False) -> bool:
        """Start the delivery thread if needed; False when there is none and none can start."""
        if self._thread is not None:
            return True
        if self._shut_down and not force:
            return False
        with self._state_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="otel-mixpanel-delivery", daemon=True)
                try:
                    thread.start()
                except RuntimeError:
                    return False
                self._thread = thread
        return True

    def _run(self) -> None:
        try:
            self._spool.reclaim_from_dead_owners()
        except (sqlite3.Error, OSError) as error:
            logger.warning("Mixpanel spool %r: cannot check for abandoned leases (%s)", self._spool.path, error)
        while True:
            self._wake.clear()
            with self._flush_cond:
                ticket = self._flush_requested
            try:
                complete = self._drain()
            except Exception:
                logger.exception("Mixpanel delivery failed unexpectedly; the records stay in the spool")
                complete = False
                if not self._stopping:
                    self._interrupt.wait(self._settings.retry_max_ms / 1000)
            if complete:
                with self._flush_cond:
                    self._flush_done = max(self._flush_done, ticket)
                    self._flush_cond.notify_all()
            if self._stopping:
                break
            self._wake.wait(self._delay_s)
        self._stopped()

    def _stopped(self) -> None:
        # Records set aside after a 401 go back at once, for the next sender with fixed settings.
        self._spool.release_owner(self._owner)
        self._transport.close()

    def _drain(self) -> bool:
        """Send batches until nothing is claimable (True) or the shutdown deadline ends it (False)."""
        while True:
            if self._remaining() == 0.0:
                return False
            records = self._spool.claim(self._owner, self._settings.batch_size, self._timeout_s + LEASE_MARGIN_S)
            if not records:
                # A worker killed meanwhile (SIGKILL, OOM) leaves leases nobody will end: take them now.
                if self._spool.reclaim_from_dead_owners():
                    continue
                return self._spool.held(self._owner) == 0
            if not self._deliver(records):
                return False

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def _deliver(self, records: list[Record]) -> bool:
        endpoint = records[0].endpoint
        route = self._routes[endpoint]
        sizes = [len(record.body.encode()) for record in records]
        queue = deque(split_by_size(records, sizes, self._settings.max_request_bytes))
        backoff = Backoff(self._settings.retry_initial_ms / 1000, self._settings.retry_max_ms / 1000)
        while queue:
            chunk = queue.popleft()
            remaining = self._remaining()
            timeout = self._timeout_s if remaining is None else min(self._timeout_s, remaining)
            if timeout <= 0:
                self._spool.release(r.id for batch in [chunk, *queue] for r in batch)
                return False
            if queue:
                # Later chunks wait for this request: their leases must outlive it.
                self._spool.renew((r.id for batch in [chunk, *queue] for r in batch), self._owner,
                                  timeout + self._timeout_s + LEASE_MARGIN_S)
            outcome = self._transport.post(route, [record.body for record in chunk], timeout)
            verdict = outcome.verdict
            if verdict is Verdict.DELIVERED:
                self._delivered(route.path, chunk, outcome)
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
            delay = self._trouble(route.path, chunk, queue, outcome, backoff)
            if verdict is not Verdict.RETRY:
                # Set aside until the lease ends, so other endpoints (e.g. /engage when only the
                # /import credentials are wrong) keep flowing meanwhile.
                self._spool.renew((r.id for batch in [chunk, *queue] for r in batch), self._owner, delay)
                return True
            self._spool.renew((r.id for batch in [chunk, *queue] for r in batch), self._owner,
                              delay + self._timeout_s + LEASE_MARGIN_S)
            if not self._pause(delay):
                self._spool.release(r.id for batch in [chunk, *queue] for r in batch)
                return False
            queue.appendleft(chunk)
        return True

    def _delivered(self, path: str, chunk: list[Record], outcome: Outcome) -> None:
        self._spool.remove(record.id for record in chunk)
        failed = [f for f in outcome.failed if 0 <= f.index < len(chunk)]
        for item in failed:
            logger.warning(
                "Mixpanel %s refused record %s (event %r, $insert_id %r): %s: %s; it is dropped",
                path, item.index, _event_name(chunk[item.index].body), item.insert_id, item.field, item.message,
            )
        self._count("rejected", len(failed))
        self._count("sent", len(chunk) - len(failed))
        self._troubles.recovered()

    def _reject(self, path: str, record: Record, outcome: Outcome) -> None:
        self._spool.remove([record.id])
        self._count("rejected", 1)
        reason = "it is too large" if outcome.verdict is Verdict.TOO_LARGE else outcome.detail
        logger.warning(
            "Mixpanel %s refused a record (event %r, HTTP %s): %s; it is dropped",
            path, _event_name(record.body), outcome.status, reason,
        )

    def _trouble(self, path: str, chunk: list[Record], queue: deque, outcome: Outcome, backoff: Backoff) -> float:
        waiting = len(chunk) + sum(len(batch) for batch in queue)
        if outcome.verdict is Verdict.RETRY:
            self._count("retried", len(chunk))
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


def _records(endpoint: str, message: str) -> list[tuple[str, str]]:
    if endpoint not in CONSUMER_ENDPOINTS:
        raise ValueError(f"unknown Mixpanel endpoint {endpoint!r}; expected one of {', '.join(CONSUMER_ENDPOINTS)}")
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


def create_sender(settings: Settings) -> MixpanelSender:
    return MixpanelSender(settings)


