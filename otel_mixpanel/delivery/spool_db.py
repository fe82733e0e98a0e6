"""The SQLite side of the spool: its schema, its statements, and one connection with its lock."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Sequence

from otel_mixpanel.delivery.spool_meta import META_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
-- Leases apart from the records: a claim writes a small row per record instead of
-- writing every leased body again, and leaves the records table to inserts and deletes.
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_owner ON leases (owner, until);
-- Totals kept by triggers: COUNT/SUM over a million rows on every export would be slow.
CREATE TABLE IF NOT EXISTS totals (one INTEGER PRIMARY KEY CHECK (one = 1),
                                   events INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS records_added AFTER INSERT ON records BEGIN
    UPDATE totals SET events = events + 1, bytes = bytes + NEW.size WHERE one = 1;
END;
CREATE TRIGGER IF NOT EXISTS records_removed AFTER DELETE ON records BEGIN
    UPDATE totals SET events = events - 1, bytes = bytes - OLD.size WHERE one = 1;
END;
CREATE TRIGGER IF NOT EXISTS records_unleased AFTER DELETE ON records BEGIN
    DELETE FROM leases WHERE id = OLD.id;
END;
""" + META_SCHEMA
SCHEMA_VERSION = 2
# The page size of a new spool file (see Spool._open).
PAGE_SIZE = 8192
UNLEASED = "NOT EXISTS (SELECT 1 FROM leases WHERE leases.id = records.id AND leases.until >= ?)"


def _claim_statement(where: str) -> str:
    """Lease the oldest claimable records (at most :limit) of the endpoint of the oldest one, to :owner
    until :until. SQLite runs the SELECT to the end before it writes, since it reads the table written."""
    # INSERT first, the WITH inside it: sqlite3 counts the rows changed only of a statement that
    # begins with INSERT, UPDATE, DELETE or REPLACE.
    return f"""INSERT OR REPLACE INTO leases (id, owner, until)
WITH oldest AS (SELECT id, endpoint FROM records WHERE {where} ORDER BY id LIMIT :limit)
SELECT id, :owner, :until FROM oldest WHERE endpoint = (SELECT endpoint FROM oldest ORDER BY id LIMIT 1)
"""


CLAIM = _claim_statement(UNLEASED.replace("?", ":now"))
# The same but none of the records of :excluded, a JSON array (kept apart: that test costs even when empty).
CLAIM_EXCLUDING = _claim_statement(
    UNLEASED.replace("?", ":now") + " AND id NOT IN (SELECT value FROM json_each(:excluded))")

# Row-by-row statements (executemany) cost a GIL hand-over per row; a JSON array of ids
# makes any number of rows one statement.
IDS = "(SELECT value FROM json_each(?))"


# Rows per INSERT: one statement for many rows is one trip into SQLite (executemany makes one
# per row), and 128 rows keep the parameters under SQLite's oldest limit of 999.
INSERT_ROWS = 128


def _insert_statement(rows: int) -> str:
    return "INSERT INTO records (endpoint, body, size, created) VALUES " + ", ".join(["(?, ?, ?, ?)"] * rows)


_INSERT_FULL = _insert_statement(INSERT_ROWS)


def insert_records(db: sqlite3.Connection, items: Sequence[tuple[str, str]], now: float) -> None:
    for first in range(0, len(items), INSERT_ROWS):
        chunk = items[first:first + INSERT_ROWS]
        parameters = [value for endpoint, body in chunk for value in (endpoint, body, len(body.encode()), now)]
        db.execute(_INSERT_FULL if len(chunk) == INSERT_ROWS else _insert_statement(len(chunk)), parameters)


def split_ids(ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """The ids of the file's records, and those of records buffered in memory (handed out negated)."""
    ids = list(ids)
    return [row_id for row_id in ids if row_id > 0], [-row_id for row_id in ids if row_id <= 0]


def json_ids(ids: Iterable[int]) -> str:
    return json.dumps(list(ids))


# SQLite connections must never be used, nor closed, in a forked child (the parent still
# uses the file); the child's abandoned connections are parked here so they are never
# garbage-collected, which would close them.
_ABANDONED: list[sqlite3.Connection] = []


class Record(NamedTuple):
    """One spooled record; ``size`` is its body's length in UTF-8 bytes."""

    id: int
    endpoint: str
    body: str
    size: int


@dataclass(frozen=True)
class EndpointState:
    endpoint: str
    events: int
    bytes: int
    leased: int
    oldest_age_s: float


def endpoint_states(db: sqlite3.Connection) -> list[EndpointState]:
    """Records per endpoint in a spool database: count, bytes, how many are leased, the oldest's age."""
    now = time.time()
    rows = db.execute(
        f"SELECT endpoint, COUNT(*), COALESCE(SUM(size), 0), SUM(NOT {UNLEASED}), MIN(created) "
        "FROM records GROUP BY endpoint ORDER BY endpoint",
        (now,),
    ).fetchall()
    return [EndpointState(endpoint, count, size, leased or 0, max(0.0, now - oldest))
            for endpoint, count, size, leased, oldest in rows]


def make_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Connection:
    """One SQLite connection and the lock that serialises its use, opened on first use."""

    def __init__(self, opener: Callable[[], sqlite3.Connection]) -> None:
        self._opener = opener
        self.lock = threading.Lock()
        self.connection: sqlite3.Connection | None = None

    def get(self) -> sqlite3.Connection:
        """The connection; the caller holds ``lock``."""
        if self.connection is None:
            self.connection = self._opener()
        return self.connection

    def abandon(self) -> None:
        if self.connection is not None:
            _ABANDONED.append(self.connection)
        self.connection = None
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.close_locked()

    def close_locked(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None
