"""The sender: spools records on the caller's thread, delivers them from its own.

Application threads only ever write to the spool (local SQLite); every network call
happens on a sender's delivery threads (``workers``), which follow the protocol stated in
``workers``' docstring. The pieces: ``consumer`` makes messages into records, ``courier``
sends what a thread claims, ``pacing`` decides when it may, ``troubles`` what is logged.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from otel_mixpanel.config import ENV_PREFIX, OUTPUT_MIXPANEL, Settings
from otel_mixpanel.delivery import metrics
from otel_mixpanel.delivery.local import PrintingSender
from otel_mixpanel.delivery.consumer import BadMessage, encodable, records_from
from otel_mixpanel.delivery.courier import Courier
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.delivery.pacing import Clock, Pacing
from otel_mixpanel.delivery.spool import Spool, open_spool
from otel_mixpanel.delivery.transport import Transport
from otel_mixpanel.delivery.troubles import Tally, Troubles, logger
from otel_mixpanel.delivery.workers import Worker, WorkerPool, track_process_events

DEFAULT_FLUSH_MS = 30_000
# Process exit must not wait long on Mixpanel: what is not sent by then stays spooled.
EXIT_FLUSH_MS = 2_000


@dataclass(frozen=True)
class SenderStats:
    """Counters since this sender started in this process (a forked child starts from zero)."""

    accepted: int = 0
    sent: int = 0
    retried: int = 0
    rejected: int = 0
    dropped: int = 0


class MixpanelSender:
    """A Mixpanel consumer (``send``/``flush``) with a durable spool and background delivery.

    ``clock`` is what the delivery threads read time and wait before a retry with (see
    ``pacing``); tests pass one that records the wait asked for instead of sleeping.
    """

    def __init__(self, settings: Settings, spool: Spool | None = None, *, clock: Clock | None = None) -> None:
        self._settings = settings
        self._spool = spool if spool is not None else open_spool(settings)
        self._clock = clock
        self._shut_down = False
        self._start_process_state()
        metrics.register(self)
        track_process_events(self)

    def _start_process_state(self) -> None:
        """Everything that belongs to one process: rebuilt, never reused, in a forked child."""
        self._pid = os.getpid()
        self._counters_lock = threading.Lock()
        self._counters = dict.fromkeys(metrics.COUNTER_NAMES, 0)
        self._troubles = Troubles()
        self._overflow = Tally()
        self._refused = Tally()
        self._pacing = Pacing(self._settings, self._clock)
        self._pool = WorkerPool(
            lambda: Transport(self._settings), self._settings.schedule_delay_ms / 1000, self._settings.batch_size,
            run_pass=self._run_pass, on_start=self._thread_started, on_stop=self._thread_stopped,
        )
        self._courier = Courier(self._settings, lambda: self._spool, self._pacing, self._troubles, self._count,
                                self._pool.wake_idle)

    def __repr__(self) -> str:
        return f"MixpanelSender(endpoint={self._settings.endpoint!r}, spool={self._spool.path or ':memory:'!r})"

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def stats(self) -> SenderStats:
        return SenderStats(**self.counter_values())

    def counter_values(self) -> dict[str, int]:
        with self._counters_lock:
            return dict(self._counters)

    def _count(self, counter: str, amount: int) -> None:
        if amount:
            with self._counters_lock:
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

        By default each message is parsed and written again (see ``consumer``): an array becomes
        one record per object, an event without ``$insert_id`` gets a random one, and a message
        that is not JSON objects is dropped, counted ``rejected`` and logged, never raised.

        ``prevalidated=True`` skips that for a caller whose every message is already exactly
        one JSON object as ``json.dumps`` or orjson writes it (no array, no raw control characters), with
        a ``$insert_id`` in an event's ``properties``: the messages are spooled as they are.
        The exporter's ``export()`` calls it so.

        Either way an unknown endpoint raises ``ValueError``: that is a programming error.
        """
        self._check_fork()
        records = self._records(messages, prevalidated)
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
            self._log_overflow(dropped)
        if not self._shut_down and self._pool.start():
            self._pool.records_arrived(len(records))

    def _records(self, messages: Iterable[tuple[str, str]], prevalidated: bool) -> list[tuple[str, str]]:
        if prevalidated:
            pairs = list(messages)
            endpoints = {endpoint: Endpoint.named(endpoint).value for endpoint in {pair[0] for pair in pairs}}
            return [(endpoints[endpoint], body) for endpoint, body in pairs]
        checked = [(Endpoint.named(endpoint), message) for endpoint, message in messages]
        records: list[tuple[str, str]] = []
        for endpoint, message in checked:
            try:
                records.extend((endpoint.value, body) for body in records_from(endpoint, message))
            except BadMessage as error:
                self._count("rejected", 1)
                self._log_refused(str(error))
        return records

    def _put(self, records: list[tuple[str, str]]) -> int:
        try:
            return self._spool.put_many(records)
        except UnicodeEncodeError:
            # A prevalidated body with a lone surrogate: made encodable rather than lost with its batch.
            return self._put([(endpoint, encodable(body)) for endpoint, body in records])
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

    def _log_overflow(self, dropped: int) -> None:
        count = self._overflow.add(dropped)
        if not count:
            return
        spool = self._spool
        in_memory = spool.memory_bounds()
        if in_memory is not None:
            # Not the spool's own bounds: raising them would not help while the disk is full.
            logger.warning(
                "Mixpanel spool %r: while its disk has no room, the records kept in memory reached their bound "
                "(%d records / %d bytes): dropped the %d oldest records; free disk space",
                spool.path, *in_memory, count,
            )
        else:
            logger.warning(
                "Mixpanel spool %r is full (%d events / %d bytes at most): dropped the %d oldest records; "
                "raise %sSPOOL_MAX_EVENTS / %sSPOOL_MAX_BYTES or check why delivery is failing",
                spool.path or ":memory:", spool.max_events, spool.max_bytes, count, ENV_PREFIX, ENV_PREFIX,
            )

    def _log_refused(self, reason: str) -> None:
        count = self._refused.add(1)
        if count:
            logger.warning("Mixpanel sender refused %d message(s) it could never deliver (the last: %s); "
                           "they are dropped and counted as rejected", count, reason)

    def flush(self, timeout_millis: float | None = None) -> bool:
        """Deliver everything spooled now; True if nothing claimable is left within the deadline."""
        self._check_fork()
        timeout_s = (DEFAULT_FLUSH_MS if timeout_millis is None else timeout_millis) / 1000
        done = None if self._shut_down else self._pool.flush(timeout_s)
        return self._claimable() == 0 if done is None else done

    force_flush = flush

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Make a last delivery attempt within the deadline, then stop; the rest stays spooled.

        With a durable spool a failure ends the attempt at once, since the records are safe on
        disk for the next process; with the memory spool it retries until the deadline.
        """
        self._check_fork()
        if self._shut_down:
            return
        self._shut_down = True
        deadline = time.monotonic() + timeout_millis / 1000
        self._pacing.stop(timeout_millis / 1000, patient=self._spool.path is None)
        if self._pool.stop(deadline, has_work=lambda: bool(self._claimable())):
            self._spool.close()

    def _claimable(self) -> int | None:
        """Records waiting to be claimed, or None when the spool cannot be read."""
        try:
            return self._spool.claimable()
        except (sqlite3.Error, OSError) as error:
            logger.error("Mixpanel spool %r cannot be read (%s)", self._spool.path or ":memory:", error)
            return None

    # The delivery threads' hooks.

    def _run_pass(self, worker: Worker) -> bool:
        return self._courier.drain(worker)

    def _thread_started(self, worker: Worker) -> None:
        if not worker.scheduled:
            return
        try:
            self._spool.reclaim_from_dead_owners()
        except (sqlite3.Error, OSError) as error:
            logger.warning("Mixpanel spool %r: cannot check for abandoned leases (%s)", self._spool.path, error)

    def _thread_stopped(self, worker: Worker) -> None:
        # Records set aside after a 401 go back at once, for the next sender with fixed settings.
        self._courier.release_all(worker)
        worker.transport.close()

    # Process events (see workers.track_process_events).

    def _check_fork(self) -> None:
        # uWSGI can fork without running os.register_at_fork hooks.
        if self._pid != os.getpid():
            self.after_fork_in_child()

    def before_fork(self) -> None:
        if self._pid == os.getpid():
            self._spool.before_fork()

    def after_fork_in_parent(self) -> None:
        if self._pid == os.getpid():
            self._spool.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        self._pool.abandon()
        self._spool.after_fork()
        self._start_process_state()

    def flush_at_exit(self) -> None:
        # A flush, not a shutdown: atexit hooks registered earlier (a TracerProvider's) run after this
        # one and may still export and then shut the sender down themselves.
        if self._pid == os.getpid() and not self._shut_down:
            self.flush(timeout_millis=EXIT_FLUSH_MS)


def create_sender(settings: Settings) -> MixpanelSender | PrintingSender:
    if settings.output != OUTPUT_MIXPANEL:
        # Development output: nothing is spooled or sent, so none of the machinery above is started.
        return PrintingSender(settings)
    return MixpanelSender(settings)
