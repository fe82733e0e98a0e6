"""The spool file itself: private modes, symbolic links refused, corrupt files moved aside."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from typing import Any

import pytest

from otel_mixpanel.delivery import spool_files
from otel_mixpanel.delivery.spool import Spool, spool_path
from otel_mixpanel.delivery.spool_files import list_spool_files

from delivery_helpers import assert_exactly_once, fast_settings, insert_ids, messages


@pytest.fixture
def loose_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_spool_files_are_private_in_an_existing_directory(make_sender, tmp_path, loose_umask):
    os.chmod(tmp_path, 0o755)
    sender = make_sender(endpoint="http://127.0.0.1:9")
    sender.send_many(messages(3))
    path = sender.spool.path
    for name in (path, path + "-wal", path + "-shm"):
        assert os.path.exists(name), name
        assert _mode(name) == 0o600, f"{name} is {oct(_mode(name))}"


def test_an_existing_spool_file_is_made_private(make_sender, tmp_path, loose_umask):
    path = spool_path(fast_settings("http://127.0.0.1:9", tmp_path))
    old = Spool(path, max_events=10, max_bytes=10**6)
    old.put_many(messages(1))
    old.close()
    os.chmod(path, 0o644)  # as an earlier version left it
    sender = make_sender(endpoint="http://127.0.0.1:9")
    sender.send_many(messages(1))
    assert _mode(path) == 0o600


def test_a_link_swapped_in_while_an_old_file_is_made_private_is_refused(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.chmod(victim, 0o644)
    name = tmp_path / "spool-old.sqlite3"
    name.write_bytes(b"")
    os.chmod(name, 0o644)  # as an earlier version left it
    real_lstat = os.lstat

    def lstat_then_swap(path: Any) -> os.stat_result:
        # Another user of a shared directory replaces the file with a link just after it was checked.
        info = real_lstat(path)
        if str(path) == str(name):
            os.unlink(name)
            os.symlink(victim, name)
        return info

    monkeypatch.setattr(spool_files.os, "lstat", lstat_then_swap)
    with pytest.raises(spool_files.UnsafeSpoolFile, match="symbolic link"):
        spool_files.prepare_private(str(name))
    assert _mode(str(victim)) == 0o644 and victim.read_bytes() == b"precious"


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_symbolic_link_at_a_spool_name_is_refused(server, make_sender, tmp_path, caplog, suffix):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "victim"
    target.write_bytes(b"precious")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    path = spool_path(fast_settings(server.url, spool_dir))
    os.symlink(target, path + suffix)
    sender = make_sender(spool_dir=str(spool_dir))
    items = messages(4)
    sender.send_many(items)
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))  # kept in memory instead, and delivered
    assert target.read_bytes() == b"precious"
    assert "symbolic link; refusing to follow it" in caplog.text
    assert os.path.islink(path + suffix)


_COUNT_IN_ANOTHER_PROCESS = """import sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
print(connection.execute("SELECT COUNT(*) FROM records").fetchone()[0])
connection.close()
"""


def _records_seen_by_another_process(path: str) -> int:
    """Open the spool in a new process, count its records and close it, as `otel-mixpanel status` or a worker
    that stops would."""
    result = subprocess.run([sys.executable, "-c", _COUNT_IN_ANOTHER_PROCESS, path], capture_output=True,
                            text=True, timeout=30, check=True)
    return int(result.stdout)


def test_another_process_closing_the_spool_loses_none_of_this_process_writes(tmp_path):
    # Both connections open (spooling, then a delivery thread's claim), then another process opens and
    # closes the spool: it must see this process's connections and leave the WAL they write to in place.
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, max_events=100, max_bytes=10**6)
    spool.put_many(messages(2))
    batch = spool.claim("worker-1", 10, 60.0)
    assert _records_seen_by_another_process(path) == 2
    spool.remove(record.id for record in batch)  # delivered: must not be sent again
    spool.put_many(messages(1))  # spooled: must not be lost
    assert _records_seen_by_another_process(path) == 1
    spool.close()
    assert _records_seen_by_another_process(path) == 1


def _spool_events(path: str, records: int) -> list[str]:
    """A spool file holding ``records`` events, closed (so all of them are in the database file)."""
    spool = Spool(path, max_events=10**6, max_bytes=10**9)
    items = messages(records)
    spool.put_many(items)
    spool.close()
    return insert_ids(items)


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_durable_spool_started(
        server, make_sender, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    path = spool_path(fast_settings(server.url, tmp_path))
    with open(path, "wb") as garbage:
        garbage.write(b"this is not an SQLite database\n" * 200)
    sender = make_sender()
    items = messages(5)
    sender.send_many(items)
    assert sender.spool.path == path, "the sender fell back to memory"
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    moved = [name for name in list_spool_files(str(tmp_path)) if ".corrupt-" in name]
    assert len(moved) == 1
    with open(moved[0], "rb") as kept:
        assert kept.read().startswith(b"this is not an SQLite database")
    with sqlite3.connect(path) as db:  # the new spool is a real, durable file
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert "is corrupt" in caplog.text and os.path.basename(moved[0]) in caplog.text
    assert "no records could be read" in caplog.text


def test_records_that_can_be_read_from_a_corrupt_spool_are_salvaged(server, make_sender, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    path = spool_path(fast_settings(server.url, tmp_path))
    expected = _spool_events(path, 300)
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    # Wreck the page holding the 150th record, as a bad sector would: the records before and
    # after it can still be read.
    with open(path, "r+b") as file:
        content = file.read()
        page = content.index(expected[150].encode()) // page_size
        file.seek(page * page_size)
        file.write(b"\xff" * page_size)
    lost = {insert_id for insert_id in expected
            if content.find(insert_id.encode()) // page_size == page}
    sender = make_sender()
    fresh = messages(2)
    sender.send_many(fresh)
    assert sender.flush(timeout_millis=10_000)
    assert sender.spool.path == path
    received = set(server.accepted_insert_ids())
    assert set(insert_ids(fresh)) <= received
    missing = set(expected) - received
    # What sat on the damaged page is lost (SQLite may give up a row or two early next to it).
    assert lost <= missing and len(missing) <= len(lost) + 5
    assert "is corrupt" in caplog.text
    assert f"{len(received)} records could be read" in caplog.text
    assert f"{len(missing)} could not and are lost" in caplog.text
    assert len([name for name in list_spool_files(str(tmp_path)) if ".corrupt-" in name]) == 1


def test_a_spool_sharing_a_replaced_corrupt_file_opens_the_new_one_without_moving_it_again(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    path = str(tmp_path / "spool-shared.sqlite3")
    first, second = (Spool(path, max_events=1000, max_bytes=10**6) for _ in range(2))
    first.put_many(messages(3))
    assert second.pending()[0] == 3  # both have the file open, as two processes would
    with sqlite3.connect(path) as db:  # everything into the database file, the WAL emptied
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as file:  # the schema page wrecked: every statement fails
        file.write(b"\xff" * page_size)
    first.put_many(messages(1))
    assert len([name for name in list_spool_files(str(tmp_path)) if ".corrupt-" in name]) == 1
    second.put_many(messages(2))
    assert len([name for name in list_spool_files(str(tmp_path)) if ".corrupt-" in name]) == 1
    assert first.pending()[0] == second.pending()[0] == 3  # the one put by first, the two put by second
    assert caplog.text.count("is corrupt") == 1
    first.close()
    second.close()
