"""A sender's delivery threads in one process, and the protocol they follow.

The protocol, in one place:

- Leases. A thread sends only records it has claimed from the spool under its own owner id
  (``host:pid:random``); a claim is one write transaction, so no two threads or processes
  ever hold the same record. A record is deleted only once Mixpanel has taken it, or has
  refused it for good. A lease outlives the request it covers, is renewed while its thread
  waits or works through a batch in several requests, and is given back (released) when the
  thread stops or hands its batch back; a lease whose process is gone is freed by the next
  thread that runs out of work.
- Waking. Thread 1 sleeps until records arrive (or ``RECHECK_S``, for records other
  processes left behind and leases that ended), then lets ``SCHEDULE_DELAY`` pass so that a
  batch can fill. The others sleep until there is more than one batch of work: a full batch
  spooled, a thread claiming a full batch, ``flush`` or ``shutdown``. No thread waits on a
  timer shorter than ``SCHEDULE_DELAY`` after records arrive, so no setting makes it spin.
- Passes. A woken thread makes a pass: it claims and sends batches until nothing is left to
  claim (a complete pass), a pause is in force, or shutdown's deadline comes. A thread that
  still holds records set aside (after a 401, say) looks again after ``RECHECK_S``.
- Pauses. A failure that calls for a wait (429, 5xx, no answer, 413) pauses its URL for
  every thread (see ``pacing``). The thread that got it keeps its batch, waits and tries
  again; the others hand their batches back and end their pass, so an outage holds one
  batch in memory, not one per thread.
- Flush. ``flush`` takes a ticket and wakes every thread; it is done when the last pass of
  every thread begun after the ticket was complete and none is in a pass (a later pass may
  hold records another thread handed back or set aside).
- Shutdown. Every thread makes one last pass within the deadline and stops, releasing its
  leases. With a durable spool a failure ends the pass at once: the records are safe on
  disk and the next process sends them. With the memory spool it retries until the deadline.
- Fork rule: nothing crosses ``fork()``; a child rebuilds threads, locks, sessions and
  counters, with new owner ids, on first use (``os.register_at_fork``, or a changed pid).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Callable, Protocol

from otel_mixpanel.delivery.spool import make_owner
from otel_mixpanel.delivery.transport import Transport

# Delivery threads per process, so several requests travel at once: with a 30 ms round trip a
# single thread spends most of its time waiting. Mixpanel documents 10-20 concurrent senders as
# fine, but every process of a pre-forking server (gunicorn, uWSGI) has its own set: four keeps
# a host with a handful of workers inside that, and already hides the round trip (a batch takes
# longer to convert and spool than to send).
CONCURRENT_REQUESTS = 4
# How often thread 1 looks at the spool when no record has arrived in this process.
RECHECK_S = 1.0


class Worker:
    """What one delivery thread has to itself: its lease owner id, its HTTP session, how it is woken."""

    def __init__(self, index: int, transport: Transport) -> None:
        self.name = "otel-mixpanel-delivery" + (f"-{index + 1}" if index else "")
        self.scheduled = index == 0
        self.owner = make_owner()
        self.transport = transport
        self.wake = threading.Event()
        self.urgent = False  # woken to send now, not to let a batch fill
        self.idle = False
        self.awaiting_records = False
        self.flushed = 0  # the last flush ticket this thread's latest pass completed
        self.busy = False  # in a pass
        self.thread: threading.Thread | None = None


class WorkerPool:
    """Starts, wakes, flushes and stops the delivery threads; a pass itself is ``run_pass(worker)``."""

    def __init__(self, transport: Callable[[], Transport], schedule_delay_s: float, batch_size: int,
                 run_pass: Callable[[Worker], bool], on_start: Callable[[Worker], None],
                 on_stop: Callable[[Worker], None]) -> None:
        self._delay_s = schedule_delay_s
        self._batch_size = batch_size
        self._run_pass = run_pass
        self._on_start = on_start
        self._on_stop = on_stop
        self._lock = threading.Lock()
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._since_wake = 0
        self._stopping = False
        self._workers = [Worker(index, transport()) for index in range(CONCURRENT_REQUESTS)]
        self._running: list[Worker] = []

    def abandon(self) -> None:
        """In a forked child: the parent's sessions are not ours to use or close."""
        for worker in self._workers:
            worker.transport.abandon()

    def start(self, *, force: bool = False) -> bool:
        """Start the threads if needed; False when there is none and none can start."""
        if self._running:
            return True
        if self._stopping and not force:
            return False
        with self._lock:
            if not self._running:
                for worker in self._workers:
                    thread = threading.Thread(target=self._run, args=(worker,), name=worker.name, daemon=True)
                    try:
                        thread.start()
                    except RuntimeError:  # at interpreter exit (Python 3.12+)
                        break
                    worker.thread = thread
                    self._running.append(worker)
        return bool(self._running)

    def records_arrived(self, count: int) -> None:
        with self._lock:
            self._since_wake += count
            full = self._since_wake >= self._batch_size
            if full:
                self._since_wake = 0
            first = self._workers[0]
            if first.awaiting_records:
                first.awaiting_records = False
                first.wake.set()
        if full or self._delay_s == 0:
            self.wake_idle()

    def wake_idle(self) -> None:
        """Wake one thread that waits for work, to send now; when none does, the busy ones claim again anyway."""
        with self._lock:
            for worker in self._running:
                if worker.idle:
                    worker.idle = False
                    self._wake(worker)
                    return

    def wake_all(self) -> None:
        with self._lock:
            for worker in self._workers:
                self._wake(worker)

    @staticmethod
    def _wake(worker: Worker) -> None:
        worker.urgent = True
        worker.wake.set()

    def flush(self, timeout_s: float) -> bool | None:
        """Wait until every thread has completed a pass begun now; None when no thread can run."""
        deadline = time.monotonic() + timeout_s
        with self._flush_cond:
            self._flush_requested += 1
            ticket = self._flush_requested
        if not self.start():
            return None
        self.wake_all()
        with self._flush_cond:
            return self._flush_cond.wait_for(
                lambda: all(worker.flushed >= ticket and not worker.busy for worker in self._running),
                timeout=max(0.0, deadline - time.monotonic()),
            )

    def stop(self, deadline: float, has_work: Callable[[], bool]) -> bool:
        """Let every thread make its last pass and stop by ``deadline``; True when all have stopped."""
        self._stopping = True
        if not self._running and has_work() and not self.start(force=True):
            # No thread can start (interpreter exit): the last pass runs here, within the deadline.
            worker = self._workers[0]
            self._run_pass(worker)
            self._on_stop(worker)
        self.wake_all()
        for worker in self._running:
            assert worker.thread is not None
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread.is_alive():
                return False
        return True

    def _run(self, worker: Worker) -> None:
        self._on_start(worker)
        # The records that started the threads have arrived: thread 1 lets their batch fill.
        self._idle(worker, awaiting_records=False)
        while True:
            with self._lock:
                worker.urgent = False
                worker.wake.clear()
            with self._flush_cond:
                ticket = self._flush_requested
                worker.busy = True
            complete = self._run_pass(worker)
            with self._flush_cond:
                worker.busy = False
                # A pass that ends with records set aside undoes an earlier pass's completion.
                worker.flushed = max(worker.flushed, ticket) if complete else min(worker.flushed, ticket - 1)
                self._flush_cond.notify_all()
            if self._stopping:
                break
            self._idle(worker, complete)
        self._on_stop(worker)

    def _idle(self, worker: Worker, complete: bool = True, awaiting_records: bool = True) -> None:
        """Wait until the next pass is due (the protocol's "Waking")."""
        with self._lock:
            worker.idle = True
            worker.awaiting_records = worker.scheduled and awaiting_records
        if not worker.scheduled:
            # A pass that ended with records set aside (or in error) looks again, so a flush can complete.
            worker.wake.wait(None if complete else RECHECK_S)
        elif awaiting_records:
            worker.wake.wait(RECHECK_S)
        with self._lock:
            worker.awaiting_records = False
            fill = worker.scheduled and not worker.urgent and self._delay_s > 0
            if fill:
                worker.wake.clear()
        if fill:
            # Records arrived (or it is time to look): let the batch fill, unless sent for at once.
            worker.wake.wait(self._delay_s)
        with self._lock:
            worker.idle = False


class ForkAware(Protocol):
    def before_fork(self) -> None: ...
    def after_fork_in_parent(self) -> None: ...
    def after_fork_in_child(self) -> None: ...
    def flush_at_exit(self) -> None: ...


_live: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_forking: list[ForkAware] = []


def track_process_events(sender: ForkAware) -> None:
    """Call ``sender``'s fork hooks around every ``fork()``, and its exit flush at interpreter exit."""
    _live.add(sender)
    atexit.register(_flush_at_exit, weakref.ref(sender))


def _before_fork() -> None:
    for sender in list(_live):
        sender.before_fork()
        _forking.append(sender)


def _after_fork_in_parent() -> None:
    while _forking:
        _forking.pop().after_fork_in_parent()


def _after_fork_in_child() -> None:
    _forking.clear()
    for sender in list(_live):
        sender.after_fork_in_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


def _flush_at_exit(ref: weakref.ref[ForkAware]) -> None:
    sender = ref()
    if sender is not None:
        sender.flush_at_exit()
