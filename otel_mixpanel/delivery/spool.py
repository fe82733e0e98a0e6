"""The spool: records waiting for Mixpanel, in SQLite, shared safely between processes.

Each row is one JSON object (an event, a profile update, a group update) for one
consumer endpoint. A sender claims rows by writing leases (owner + expiry, in a table
of their own) in an ``IMMEDIATE`` transaction, so two processes sharing a spool file
never hold the same row; a row whose lease has expired, or whose owner process on this
host is gone, can be claimed again. Rows are deleted only once Mixpanel has taken them (or refused them
for good). The in-memory mode is the same code over a private ``:memory:`` database.

A spool survives its file's troubles: a full disk (what cannot be written is kept in memory
meanwhile, see ``disk_full``), a corrupt file (moved aside, readable rows salvaged into a new
one, see ``spool_files``), and it takes over the records its application spooled under
credentials Mixpanel refused (see ``adoption``). The SQL itself is in ``spool_db``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from itertools import accumulate, repeat
from typing import Any, Callable, Concatenate, Iterable, Iterator, ParamSpec, Sequence, TypeVar

from otel_mixpanel.config import Settings
from otel_mixpanel.delivery.spool_db import (
    CLAIM,
    CLAIM_EXCLUDING,
    IDS,
    INSERT_ROWS,
    PAGE_SIZE,
    SCHEMA,
    SCHEMA_VERSION,
    UNLEASED,
    Connection,
    EndpointState,
    Record,
    endpoint_states,
    insert_records,
    json_ids,
    make_owner,
    owner_is_dead,
    split_ids,
)
from otel_mixpanel.delivery.disk_full import BUFFER_MAX_BYTES, BUFFER_MAX_EVENTS, DiskFull
from otel_mixpanel.delivery.spool_files import is_corrupt, is_disk_full, move_aside, prepare_private, salvage
from otel_mixpanel.delivery.spool_meta import (
    DISK_CHECKED_AT,
    MOVED_AT,
    MOVED_TO,
    DeliveryNotes,
    SpoolIdentity,
    identity_for,
    project_digest,
    read_meta,
    write_meta,
)
from otel_mixpanel.delivery.endpoints import CONSUMER_ENDPOINTS

__all__ = ["EndpointState", "Record", "Spool", "make_owner", "open_spool", "spool_path"]

logger = logging.getLogger("otel_mixpanel.delivery")

# How often a sender looks for stranded spool files of its application (see adoption).
ADOPTION_INTERVAL_S = 60.0

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _recovering(method: Callable[Concatenate[Spool, _P], _T]) -> Callable[Concatenate[Spool, _P], _T]:
    """A spool operation that, when the file turns out corrupt, moves it aside and runs once more on a new one."""

    def run(self: Spool, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        generation = self._generation
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            if self.path is None or not is_corrupt(error):
                raise
            self._replace_corrupt(error, generation)
        return method(self, *args, **kwargs)

    run.__doc__, run.__name__ = method.__doc__, method.__name__
    return run


def spool_path(settings: Settings) -> str | None:
    """Where the spool for these settings lives, or None for the in-memory spool.

    The name hashes the endpoint and the project identity, so two applications with
    different credentials that share a directory never send each other's events.
    """
    if settings.spool == "memory":
        return None
    directory = settings.spool_dir or "."
    return os.path.join(directory, f"spool-{project_digest(settings)}.sqlite3")


class Spool:
    """A bounded queue of records in SQLite; every method is thread-safe within a process.

    A file spool has two connections: one that spools new records (the application's
    threads) and one for everything else (the delivery threads, the CLI), so spooling never
    waits behind a delivery thread reading its batch. Write transactions of both take one
    more lock, so that within a process writers queue on it rather than in SQLite's busy
    handler, which sleeps for milliseconds at a time. The in-memory spool has one connection.
    """

    def __init__(self, path: str | None, *, max_events: int, max_bytes: int,
                 identity: SpoolIdentity | None = None) -> None:
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Written into the file (see spool_meta) and used to take over stranded records (see adoption).
        self.identity = identity
        self._notes = DeliveryNotes()
        self._next_adoption = 0.0
        self._pid = os.getpid()
        self.ever_opened = False
        # Bumped each time a corrupt file is replaced, so that threads which hit the same
        # corruption replace it once; and the file each connection opened (by id() of the
        # connection), to notice another process having moved it aside already.
        self._generation = 0
        self._file_ids: dict[int, tuple[int, int]] = {}
        self._fallback: DiskFull | None = None
        self._fallback_lock = threading.Lock()
        self._open_all()

    def _open_all(self) -> None:
        self._main = Connection(self._open_for_delivery)
        self._intake = Connection(self._open) if self.path is not None else self._main
        self._writing = threading.Lock()

    def __repr__(self) -> str:
        return f"Spool(path={self.path or ':memory:'!r})"

    @contextmanager
    def _use(self, channel: Connection | None = None) -> Iterator[sqlite3.Connection]:
        if self._pid != os.getpid():
            self.after_fork()
        channel = channel or self._main
        with channel.lock:
            yield channel.get()

    @contextmanager
    def _write(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One ``IMMEDIATE`` transaction, committed if the block ends normally."""
        with self._writing:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk among them).
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _open(self) -> sqlite3.Connection:
        if self.path is not None:
            prepare_private(self.path)
        connection = sqlite3.connect(
            self.path or ":memory:", timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            if self.path is not None:
                # Only a new, empty file takes it (an existing spool keeps its page size). Records of
                # about a kilobyte fill 8 KiB pages with half the WAL frames and B-tree pages of 4 KiB
                # ones: a commit writes fewer frames, and deleting a delivered batch costs a third less.
                connection.execute(f"PRAGMA page_size={PAGE_SIZE}")
                connection.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode survives a process crash; only power loss can lose the last commits.
                connection.execute("PRAGMA synchronous=NORMAL")
                info = os.stat(self.path)
                self._file_ids[id(connection)] = (info.st_dev, info.st_ino)
            # The script runs once per file (and schema version), so that opening an existing spool
            # writes nothing: on a full disk, that is what still works.
            if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                connection.executescript(SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
        except BaseException:
            connection.close()
            raise
        self.ever_opened = True
        return connection

    def _open_for_delivery(self) -> sqlite3.Connection:
        connection = self._open()
        if self.path is not None:
            # The delivery side checkpoints after each removal, outside the write lock (see remove).
            connection.execute("PRAGMA wal_autocheckpoint=0")
            if self.identity is not None:
                self._record_identity(connection, self.identity)
        return connection

    def _record_identity(self, db: sqlite3.Connection, identity: SpoolIdentity) -> None:
        stored = read_meta(db)
        changed = {key: value for key, value in identity.values().items() if stored.get(key) != value}
        if changed:
            self._best_effort_write(db, changed)

    def _best_effort_write(self, db: sqlite3.Connection, values: dict[str, str]) -> None:
        """Write meta values; a spool that cannot take the write (a full disk) goes on without them."""
        try:
            with self._write(db):
                write_meta(db, values)
        except sqlite3.Error as error:
            logger.debug("Mixpanel spool %r: could not note %s (%s)", self.path, sorted(values), error)

    def note_error(self, message: str, credentials: bool = False) -> None:
        """Remember the latest delivery error in the file, for ``otel-mixpanel status`` (each new one once)."""
        values = self._notes.error(message, credentials)
        if values is not None:
            self._note(values)

    def note_delivered(self) -> None:
        """Remember that Mixpanel took records (after an error, or once a minute)."""
        values = self._notes.delivered()
        if values is not None:
            self._note(values)

    def note_moved(self, target: str) -> None:
        """Remember that this spool's records were moved to the spool file ``target``."""
        self._note({MOVED_TO: os.path.basename(target), MOVED_AT: f"{time.time():.3f}"})

    def _note(self, values: dict[str, str]) -> None:
        if self.path is None:
            return
        try:
            with self._use() as db:
                self._best_effort_write(db, values)
        except sqlite3.Error as error:  # the file cannot even be opened (a full disk): no note
            logger.debug("Mixpanel spool %r: could not note %s (%s)", self.path, sorted(values), error)

    def _channels(self) -> list[Connection]:
        return [self._main] if self._intake is self._main else [self._main, self._intake]

    def before_fork(self) -> None:
        """Hold the locks across ``fork()``: a child forked mid-call could inherit SQLite's mutexes held."""
        for channel in self._channels():
            channel.lock.acquire()

    def after_fork_in_parent(self) -> None:
        for channel in reversed(self._channels()):
            channel.lock.release()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections and locks; open new ones on next use."""
        for channel in self._channels():
            channel.abandon()
        if self._fallback is not None:
            # What the parent keeps in memory is the parent's to deliver.
            self._fallback.buffer.after_fork()
            self._fallback = None
        self._open_all()
        self._pid = os.getpid()

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        for channel in self._channels():
            channel.close()
        self._file_ids.clear()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """No other thread of this process uses the spool meanwhile."""
        channels = self._channels()
        for channel in channels:
            channel.lock.acquire()
        try:
            with self._writing:
                yield
        finally:
            for channel in reversed(channels):
                channel.lock.release()

    def _replace_corrupt(self, error: sqlite3.DatabaseError, generation: int) -> None:
        """Move a corrupt spool file aside, start a new one at its name, and put what can be read into it."""
        assert self.path is not None
        with self._exclusive():
            if generation != self._generation:
                return  # another thread replaced it already
            self._generation += 1
            opened = {self._file_ids.get(id(channel.connection)) for channel in self._channels() if channel.connection}
            for channel in self._channels():
                channel.close_locked()
            self._file_ids.clear()
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                return
            if opened - {(info.st_dev, info.st_ino)}:
                # A connection was on a file that is no longer at the spool's name: another process
                # sharing the spool moved it aside already. Reopened, the connections use the new one.
                return
            moved = move_aside(self.path)
        rescued = salvage(moved, frozenset(CONSUMER_ENDPOINTS))
        dropped = self.put_rows(rescued.rows)
        if rescued.rows:
            unread = None if rescued.spooled is None else max(0, rescued.spooled - len(rescued.rows))
            logger.warning(
                "Mixpanel spool %r is corrupt (%s): moved it to %r and started a new spool; %d records could be "
                "read and were put in the new spool%s%s",
                self.path, error, os.path.basename(moved), len(rescued.rows),
                f" ({dropped} oldest dropped to keep it within its bounds)" if dropped else "",
                "" if unread is None else f"; {unread} could not and are lost",
            )
        else:
            held = "an unknown number of" if rescued.spooled is None else str(rescued.spooled)
            logger.error(
                "Mixpanel spool %r is corrupt (%s): moved it to %r and started a new spool; no records could be "
                "read from it (%s records were spooled) and they are lost",
                self.path, error, os.path.basename(moved), held,
            )

    def put_rows(self, rows: Sequence[tuple[str, str, float]]) -> int:
        """Spool ``(endpoint, body, created)`` rows with the time they were first spooled; return how
        many old records were dropped to fit, as ``put_many`` does."""
        dropped = 0
        for first in range(0, len(rows), INSERT_ROWS):
            chunk = rows[first:first + INSERT_ROWS]
            with self._use() as db, self._write(db):
                db.executemany(
                    "INSERT INTO records (endpoint, body, size, created) VALUES (?, ?, ?, ?)",
                    [(endpoint, body, len(body.encode()), created) for endpoint, body, created in chunk],
                )
                dropped += self._enforce_bounds(db)
        return dropped

    @_recovering
    def put_many(self, items: Sequence[tuple[str, str]]) -> int:
        """Store ``(endpoint, body)`` records durably; return how many old records were dropped to fit.

        While the disk is full they are kept in memory instead (see ``disk_full``).
        """
        if not items:
            return 0
        fallback = self._fallback
        if fallback is not None and fallback.full:
            return self._keep_in_memory(fallback, items)
        try:
            dropped = self._put_on_disk(items)
        except sqlite3.Error as error:
            return self._keep_in_memory(self._disk_refused(error), items)
        if fallback is not None:
            # Records the spool's bounds dropped when the buffered ones were written back.
            dropped += fallback.take_unreported()
        return dropped

    def _put_on_disk(self, items: Sequence[tuple[str, str]]) -> int:
        now = time.time()
        with self._use(self._intake) as db, self._write(db):
            insert_records(db, items, now)
            return self._enforce_bounds(db)

    def _enforce_bounds(self, db: sqlite3.Connection) -> int:
        events, size = db.execute("SELECT events, bytes FROM totals").fetchone()
        dropped = 0
        if events > self.max_events:
            excess = events - self.max_events
            db.execute("DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?)", (excess,))
            dropped += excess
            size = db.execute("SELECT bytes FROM totals").fetchone()[0]
        while size > self.max_bytes:
            cutoff, freed, count = None, 0, 0
            for row_id, row_size in db.execute("SELECT id, size FROM records ORDER BY id LIMIT 1000"):
                cutoff, freed, count = row_id, freed + row_size, count + 1
                if size - freed <= self.max_bytes:
                    break
            if cutoff is None:
                break
            db.execute("DELETE FROM records WHERE id <= ?", (cutoff,))
            dropped += count
            size -= freed
        return dropped

    @_recovering
    def claim(self, owner: str, limit: int, lease_s: float) -> list[Record]:
        """Lease up to ``limit`` of the oldest claimable records, all of one endpoint."""
        fallback = self._fallback
        if fallback is None:
            try:
                return self._claim_on_disk(owner, limit, lease_s, [])
            except sqlite3.Error as error:
                fallback = self._disk_refused(error)
        else:
            self._settle(fallback)
        records: list[Record] = []
        # One claim at a time while memory holds leases, so this process's threads take disjoint batches.
        with fallback.serial:
            if not fallback.full:
                try:
                    records = self._claim_on_disk(owner, limit, lease_s, fallback.excluded(time.time()))
                except sqlite3.Error as error:
                    self._disk_refused(error)
            if not records and fallback.full:
                try:
                    records = self._claim_without_writing(fallback, owner, limit, lease_s)
                except sqlite3.Error as error:
                    self._disk_refused(error)  # the file cannot even be opened: only memory is left
        if not records:
            records = [record._replace(id=-record.id) for record in fallback.buffer.claim(owner, limit, lease_s)]
        return records

    def _claim_on_disk(self, owner: str, limit: int, lease_s: float, excluded: list[int]) -> list[Record]:
        with self._use() as db:
            until = _free_expiry(db, owner, time.time() + lease_s)
            parameters = {"now": time.time(), "owner": owner, "until": until, "limit": limit}
            statement = CLAIM
            if excluded:
                statement, parameters["excluded"] = CLAIM_EXCLUDING, json_ids(excluded)
            # One statement, which SQLite runs as one write transaction: the write lock is held
            # for one GIL hand-over and no Python code, where a transaction of several statements
            # took a hand-over per statement while the exporting thread could be waiting for it.
            with self._writing:
                claimed = db.execute(statement, parameters).rowcount
        if claimed <= 0:
            return []
        return self._read_batch("id IN (SELECT id FROM leases WHERE owner = ? AND until = ?)", (owner, until))

    def _claim_without_writing(self, fallback: DiskFull, owner: str, limit: int, lease_s: float) -> list[Record]:
        """Claim records of the file with leases kept in this process's memory (the disk is full)."""
        now = time.time()
        excluded = set(fallback.excluded(now))
        rows = self._read(f"SELECT id, endpoint FROM records WHERE {UNLEASED} ORDER BY id LIMIT ?",
                          (now, limit + len(excluded)))
        picked = [(row_id, endpoint) for row_id, endpoint in rows if row_id not in excluded][:limit]
        if not picked:
            return []
        endpoint = picked[0][1]
        ids = [row_id for row_id, other in picked if other == endpoint]
        fallback.lease(ids, owner, now + lease_s)
        return self._read_batch(f"id IN {IDS}", (json_ids(ids),))

    def _read_batch(self, claimed: str, parameters: Sequence[object]) -> list[Record]:
        """The records ``claimed`` selects (all of one endpoint), in id order."""
        # The bodies are read after the claim's write transaction, so that spooling new records
        # waits only for the leases. Leased rows do not change; a row dropped meanwhile to keep
        # the spool within its bounds is simply not returned.
        with self._use() as db:
            ids, lengths, sizes, bodies, endpoint = db.execute(
                "SELECT json_group_array(id), json_group_array(length(body)), json_group_array(size), "
                f"group_concat(body, ''), min(endpoint) FROM "
                f"(SELECT id, body, size, endpoint FROM records WHERE {claimed} ORDER BY id)",
                parameters,
            ).fetchone()
        if bodies is None:
            return []
        # Bodies are cut by length(), which stops at a NUL: they are JSON as the json module and
        # orjson write it, which escape every control character. The batch is taken apart without
        # a Python-level loop: a delivery thread holds the GIL the exporting thread wants meanwhile.
        ends = list(accumulate(json.loads(lengths)))
        texts = map(bodies.__getitem__, map(slice, [0, *ends], ends))
        return list(map(Record._make, zip(json.loads(ids), repeat(endpoint), texts, json.loads(sizes))))

    def _write_statement(self, sql: str, parameters: Sequence[object]) -> int:
        """Run one statement that writes (its own transaction); return the rows it changed."""
        with self._use() as db, self._writing:
            return db.execute(sql, parameters).rowcount

    def _read(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._use() as db:
            return db.execute(sql, parameters).fetchall()

    def _read_or(self, default: list[tuple[Any, ...]], sql: str, parameters: Sequence[object] = ()
                 ) -> list[tuple[Any, ...]]:
        """A read of the file, or ``default`` when the disk is so full that the file cannot be opened."""
        try:
            return self._read(sql, parameters)
        except sqlite3.Error as error:
            self._disk_refused(error)
            return default

    @_recovering
    def reclaim_from_dead_owners(self) -> int:
        """Expire leases held by processes of this host that no longer exist (e.g. killed with SIGKILL).

        Also, at most once a minute, take over the records this application spooled under
        credentials Mixpanel refused (see ``adoption``): they are abandoned too.
        """
        self._adopt_when_due()
        live = self._read_or([], "SELECT DISTINCT owner FROM leases WHERE until >= ?", (time.time(),))
        owners = [row[0] for row in live]
        dead = [owner for owner in owners if owner_is_dead(owner)]
        if not dead:
            return 0
        try:
            return self._write_statement(
                "DELETE FROM leases WHERE owner IN (SELECT value FROM json_each(?))", (json.dumps(dead),))
        except sqlite3.Error as error:
            self._disk_refused(error)
            return 0

    def _adopt_when_due(self) -> None:
        if self.identity is None or self.path is None or time.monotonic() < self._next_adoption:
            return
        self._next_adoption = time.monotonic() + ADOPTION_INTERVAL_S
        from otel_mixpanel.delivery.adoption import adopt_stranded

        adopt_stranded(self)

    @_recovering
    def renew(self, ids: Iterable[int], owner: str, lease_s: float) -> None:
        on_disk, buffered = split_ids(ids)
        fallback = self._fallback
        if fallback is not None:
            self._settle(fallback)
            if buffered:
                fallback.buffer.renew(buffered, owner, lease_s)
            on_disk = fallback.renew(on_disk, owner, time.time() + lease_s)
        if not on_disk:
            return
        try:
            self._write_statement(
                f"INSERT OR REPLACE INTO leases (id, owner, until) SELECT id, ?, ? FROM records WHERE id IN {IDS}",
                (owner, time.time() + lease_s, json_ids(on_disk)),
            )
        except sqlite3.Error as error:
            self._disk_refused(error).lease(on_disk, owner, time.time() + lease_s)

    @_recovering
    def release(self, ids: Iterable[int]) -> None:
        """Give records back so any process may claim them at once (used when stopping)."""
        on_disk = self._in_memory_first(ids, lambda buffer, buffered: buffer.release(buffered))
        if not on_disk:
            return
        try:
            self._write_statement(f"DELETE FROM leases WHERE id IN {IDS}", (json_ids(on_disk),))
        except sqlite3.Error as error:
            self._disk_refused(error)  # the leases in the file end by themselves

    def _in_memory_first(self, ids: Iterable[int], on_buffer: Callable[[Spool, list[int]], None]) -> list[int]:
        """Apply ``on_buffer`` to the buffered records among ``ids`` and end the memory leases of the
        others; return the ids of the file's records."""
        on_disk, buffered = split_ids(ids)
        fallback = self._fallback
        if fallback is not None:
            if buffered:
                on_buffer(fallback.buffer, buffered)
            fallback.forget(on_disk)
        return on_disk

    @_recovering
    def held(self, owner: str) -> int:
        """Records ``owner`` holds under a live lease (in flight, or set aside until a retry)."""
        now = time.time()
        fallback = self._fallback
        if fallback is None:
            return int(self._read_or([(0,)], "SELECT COUNT(*) FROM leases WHERE owner = ? AND until >= ?",
                                     (owner, now))[0][0])
        self._settle(fallback)
        # A delivered record whose deletion waits for the disk keeps its lease in the file: it is not held.
        held = self._read_or([(0,)], f"SELECT COUNT(*) FROM leases WHERE owner = ? AND until >= ? AND id NOT IN {IDS}",
                             (owner, now, json_ids(fallback.removals())))[0][0]
        return int(held) + fallback.held(owner, now) + fallback.buffer.held(owner)

    @_recovering
    def release_owner(self, owner: str) -> None:
        fallback = self._fallback
        if fallback is not None:
            fallback.forget_owner(owner)
            fallback.buffer.release_owner(owner)
        try:
            self._write_statement("DELETE FROM leases WHERE owner = ?", (owner,))
        except sqlite3.Error as error:
            self._disk_refused(error)

    @_recovering
    def remove(self, ids: Iterable[int]) -> None:
        """Delete records for good (their leases go with them)."""
        on_disk, buffered = split_ids(ids)
        fallback = self._fallback
        if fallback is not None:
            if buffered:
                fallback.buffer.remove(buffered)
            # Counted as removed before their memory leases end, so no other thread claims them meanwhile.
            fallback.removed_later(on_disk)
            fallback.forget(on_disk)
        if not on_disk:
            return
        try:
            self._remove_on_disk(on_disk)
        except sqlite3.Error as error:
            self._disk_refused(error).removed_later(on_disk)
            return
        if fallback is not None:
            fallback.removed_now(on_disk)

    def _remove_on_disk(self, ids: list[int]) -> None:
        self._write_statement(f"DELETE FROM records WHERE id IN {IDS}", (json_ids(ids),))
        if self.path is not None:
            # Copy the WAL into the database now, on a delivery thread and outside the write lock,
            # rather than in whichever commit crosses SQLite's threshold, often the exporting
            # thread's, holding the write lock for milliseconds. A passive checkpoint never waits.
            with self._use() as db:
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    # The records are gone already; a checkpoint that fails now is done by the next one.
                    pass

    def created_times(self, ids: Iterable[int]) -> dict[int, float]:
        """When each of the file's records ``ids`` was first spooled."""
        rows = self._read(f"SELECT id, created FROM records WHERE id IN {IDS}", (json_ids(ids),))
        return {int(row_id): float(created) for row_id, created in rows}

    @_recovering
    def pending(self) -> tuple[int, int]:
        """(events, bytes) in the spool, leased or not."""
        events, size = self._read_or([(0, 0)], "SELECT events, bytes FROM totals")[0]
        fallback = self._fallback
        if fallback is not None:
            removed = fallback.removals()
            if removed:
                gone, freed = self._read_or(
                    [(0, 0)], f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE id IN {IDS}",
                    (json_ids(removed),),
                )[0]
                events, size = events - gone, size - freed
            buffered, buffered_size = fallback.buffer.pending()
            events, size = events + buffered, size + buffered_size
        return int(events), int(size)

    @_recovering
    def claimable(self) -> int:
        now = time.time()
        fallback = self._fallback
        if fallback is None:
            return int(self._read(f"SELECT COUNT(*) FROM records WHERE {UNLEASED}", (now,))[0][0])
        count = self._read_or([(0,)], f"SELECT COUNT(*) FROM records WHERE {UNLEASED} AND id NOT IN {IDS}",
                              (now, json_ids(fallback.excluded(now))))[0][0]
        return int(count) + fallback.buffer.claimable()

    @_recovering
    def state(self) -> list[EndpointState]:
        """The spool file's records per endpoint (not what this process keeps in memory)."""
        with self._use() as db:
            return endpoint_states(db)

    # A full disk: see otel_mixpanel/delivery/disk_full.py.

    def memory_bounds(self) -> tuple[int, int] | None:
        """While the disk is full, the bounds (events, bytes) of the records kept in memory meanwhile."""
        fallback = self._fallback
        if fallback is None or not fallback.full:
            return None
        return fallback.buffer.max_events, fallback.buffer.max_bytes

    def _disk_refused(self, error: sqlite3.Error) -> DiskFull:
        """The in-memory state to use instead of the disk; re-raises ``error`` unless the disk is full."""
        if self.path is None or not is_disk_full(error, self.path):
            raise error
        with self._fallback_lock:
            fallback = self._fallback
            new = fallback is None
            if fallback is None:
                buffer = Spool(None, max_events=min(self.max_events, BUFFER_MAX_EVENTS),
                               max_bytes=min(self.max_bytes, BUFFER_MAX_BYTES))
                fallback = self._fallback = DiskFull(buffer)
        if fallback.refused_again() or new:
            logger.error(
                "Mixpanel spool %r cannot be written: the disk is full (%s). Delivery of what is spooled goes on; "
                "new records are kept in memory (at most %d records / %d bytes, past that the oldest are dropped "
                "and counted) and written to the spool by themselves once the disk has room again",
                self.path, error, fallback.buffer.max_events, fallback.buffer.max_bytes,
            )
        return fallback

    def _keep_in_memory(self, fallback: DiskFull, items: Sequence[tuple[str, str]]) -> int:
        dropped = fallback.buffer.put_many(items)
        with fallback.lock:
            fallback.dropped += dropped
        return dropped

    def _settle(self, fallback: DiskFull) -> None:
        """On delivery threads (claim, renew, held), never on the application's: try the disk again when due."""
        if fallback.due():
            self._try_disk_again(fallback)

    def _try_disk_again(self, fallback: DiskFull) -> None:
        """Make the deletions kept in memory, then move buffered records to the file, if the disk takes them."""
        with fallback.serial:
            try:
                # A write of a few bytes first: the disk must take one before it counts as back.
                with self._use() as db, self._write(db):
                    write_meta(db, {DISK_CHECKED_AT: f"{time.time():.3f}"})
                removals = fallback.removals()
                if removals:
                    self._remove_on_disk(removals)
                    fallback.removed_now(removals)
                moved = self._move_buffered(fallback)
            except sqlite3.Error as error:
                self._disk_refused(error)
                return
            if fallback.full:
                fallback.full = False
                logger.info(
                    "Mixpanel spool %r takes writes again after %.0f s of a full disk: %d records kept in memory "
                    "meanwhile were written to it, %d were dropped because memory was full",
                    self.path, time.monotonic() - fallback.since, moved, fallback.dropped,
                )
                fallback.dropped = 0
            if fallback.settled() and fallback.buffer.pending()[0] == 0 and not fallback.unreported(0):
                with self._fallback_lock:
                    if self._fallback is fallback:
                        self._fallback = None

    def _move_buffered(self, fallback: DiskFull) -> int:
        moved = 0
        while True:
            # Claimed first, so no delivery thread sends them from memory while they move.
            batch = fallback.buffer.claim("spool-recovery", 2000, 60.0)
            if not batch:
                return moved
            try:
                fallback.unreported(self._put_on_disk([(record.endpoint, record.body) for record in batch]))
            except BaseException:
                fallback.buffer.release(record.id for record in batch)
                raise
            fallback.buffer.remove(record.id for record in batch)
            moved += len(batch)


def _free_expiry(db: sqlite3.Connection, owner: str, until: float) -> float:
    """``until``, or the next float after it that none of ``owner``'s leases ends at: with the owner it
    names the rows of one claim. Only the owner's thread writes its leases, so none can appear meanwhile."""
    while db.execute("SELECT 1 FROM leases WHERE owner = ? AND until = ?", (owner, until)).fetchone():
        until = math.nextafter(until, math.inf)
    return until


def open_spool(settings: Settings) -> Spool:
    path = spool_path(settings)
    return Spool(path, max_events=settings.spool_max_events, max_bytes=settings.spool_max_bytes,
                 identity=identity_for(settings) if path is not None else None)
