"""Spool files on disk: created private, never through a symbolic link, moved aside when corrupt.

Spool files hold user ids and IP addresses, so the database and the ``-wal`` and
``-shm`` files SQLite keeps beside it are created readable by their owner only, whatever
the umask and whether or not the directory already existed, and a symbolic link planted at
one of their (predictable) names is refused rather than followed.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import time

# SQLite's companion files of a database in WAL mode.
COMPANIONS = ("-wal", "-shm")
SPOOL_PREFIX = "spool-"
SPOOL_SUFFIX = ".sqlite3"
CORRUPT_MARK = ".corrupt-"


class UnsafeSpoolFile(OSError):
    """A spool file name is taken by something that must not be opened (a symbolic link, a directory)."""


def prepare_private(path: str) -> None:
    """Create ``path`` and its companions mode 0600 (or tighten them to it), refusing symbolic links.

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode when it creates them;
    creating them here too closes the window in which a link planted at their names would be followed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # Event data can be personal: a directory we create is readable by its owner only.
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in (path, *(path + suffix for suffix in COMPANIONS)):
        _create_private(name)


def _create_private(name: str) -> None:
    # A file that exists is checked by its name, never opened: closing a descriptor of a file drops every
    # POSIX lock the process holds on it, SQLite's included. Another process's connection then takes itself
    # for the last one and deletes the WAL from under this process's connections, losing their commits.
    while True:
        try:
            descriptor = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileExistsError:
            try:
                _check_existing(name)
                return
            except FileNotFoundError:
                continue  # removed meanwhile (SQLite deletes the -wal file on closing): create it
        try:
            # A new file, so no lock of ours to lose; the umask does not apply to fchmod.
            if stat.S_IMODE(os.fstat(descriptor).st_mode) != 0o600:
                os.fchmod(descriptor, 0o600)
        finally:
            os.close(descriptor)
        return


def _check_existing(name: str) -> None:
    info = os.lstat(name)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeSpoolFile(errno.ELOOP, "is a symbolic link; refusing to follow it", name)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeSpoolFile(errno.EINVAL, "is not a regular file", name)
    if stat.S_IMODE(info.st_mode) != 0o600:
        _tighten(name)


def _tighten(name: str) -> None:
    """Make a file an older version created 0644 private, through a descriptor: ``chmod`` by name would
    follow a link swapped in since ``lstat``. Opening it here is safe: this process has not opened it
    through SQLite yet, since it would have tightened it then, so no lock of ours is lost on closing."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeSpoolFile(errno.ELOOP, "is a symbolic link; refusing to follow it", name) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UnsafeSpoolFile(errno.EINVAL, "is not a regular file", name)
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


def corrupt_name(path: str, now: float | None = None) -> str:
    """Where a corrupt spool file is moved: beside it, its name still listed by ``otel-mixpanel status``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now if now is not None else time.time()))
    base = path[: -len(SPOOL_SUFFIX)] if path.endswith(SPOOL_SUFFIX) else path
    candidate, counter = f"{base}{CORRUPT_MARK}{stamp}{SPOOL_SUFFIX}", 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = f"{base}{CORRUPT_MARK}{stamp}-{counter}{SPOOL_SUFFIX}"
    return candidate


def move_aside(path: str) -> str:
    """Rename a corrupt spool file and its companions; return the new name of the database file."""
    target = corrupt_name(path)
    os.rename(path, target)
    for suffix in COMPANIONS:
        if os.path.lexists(path + suffix):
            os.rename(path + suffix, target + suffix)
    return target


def is_corrupt(error: BaseException) -> bool:
    """True for SQLite's "not a database" and "malformed" errors (not for a busy or full disk)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(error)
    return "file is not a database" in text or "malformed" in text


# Below this many free bytes, an I/O error of SQLite's (sizing its -shm file, say) is the disk being full.
_NO_ROOM_BYTES = 64 * 1024


def is_disk_full(error: BaseException, path: str | None = None) -> bool:
    """True for a write refused for want of space; with ``path``, also for SQLite's I/O errors while
    the disk holding ``path`` has (next to) no room left."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, sqlite3.Error):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        if code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        return code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and path is not None and _no_room(path)
    # Python 3.10 gives no error code: the same decisions from SQLite's messages for those codes.
    text = str(error)
    if "database or disk is full" in text:
        return True
    return ("disk I/O error" in text or "unable to open database file" in text) and path is not None \
        and _no_room(path)


def _no_room(path: str) -> bool:
    try:
        disk = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize < _NO_ROOM_BYTES


def list_spool_files(directory: str) -> list[str]:
    """Every spool file in ``directory`` (corrupt ones moved aside too), oldest name first."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        os.path.join(directory, name) for name in names
        if name.startswith(SPOOL_PREFIX) and name.endswith(SPOOL_SUFFIX)
    )


class Salvage:
    """What could be read from a corrupt spool file: rows ``(endpoint, body, created)``, and how
    many records its totals say it held (None when even they cannot be read)."""

    def __init__(self, rows: list[tuple[str, str, float]], spooled: int | None) -> None:
        self.rows = rows
        self.spooled = spooled


def salvage(path: str, endpoints: frozenset[str]) -> Salvage:
    """Read what rows can be read: in id order up to the first damaged page, then back from the end."""
    found: dict[int, tuple[str, str, float]] = {}
    spooled = None
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error:
        return Salvage([], None)
    try:
        for order in ("ASC", "DESC"):
            try:
                for row_id, endpoint, body, created in db.execute(
                        f"SELECT id, endpoint, body, created FROM records ORDER BY id {order}"):
                    if row_id in found:
                        break
                    if _readable(endpoint, body, endpoints):
                        found[row_id] = (endpoint, body, float(created))
            except sqlite3.DatabaseError:
                pass
        try:
            spooled = int(db.execute("SELECT events FROM totals").fetchone()[0])
        except (sqlite3.DatabaseError, TypeError, ValueError):
            pass
    finally:
        db.close()
    return Salvage([found[row_id] for row_id in sorted(found)], spooled)


def _readable(endpoint: object, body: object, endpoints: frozenset[str]) -> bool:
    # A damaged page can still yield rows: keep only those that are records as the spool writes them.
    if endpoint not in endpoints or not isinstance(body, str):
        return False
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False
