"""A spool on a disk that fills up: a real, small tmpfs, filled to the last byte."""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import subprocess
import time

import pytest

from otel_mixpanel.delivery import MixpanelSender
from otel_mixpanel.delivery.spool import Spool, spool_path
from otel_mixpanel.testing.ingest_server import Fault

from delivery_helpers import RecordingClock, assert_exactly_once, fast_settings, insert_ids, messages


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs of its own (root only: CI runs as root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk) -> str:
    """Write a ballast file until the disk has no byte left; return its path."""
    ballast = os.path.join(disk, "ballast")
    chunk = b"\0" * 4096
    with open(ballast, "wb", buffering=0) as file:
        try:
            while True:
                file.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC
        try:
            while True:
                file.write(b"\0")
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return ballast


def spool_directly(path: str, count: int) -> tuple[Spool, list[str]]:
    """``count`` events spooled by another process's spool, left open (as a running application's is)."""
    spool = Spool(path, max_events=10**6, max_bytes=10**9)
    items = messages(count)
    spool.put_many(items)
    return spool, insert_ids(items)


def records_in_file(path: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [json.loads(body)["properties"]["$insert_id"] for (body,) in db.execute(
            "SELECT body FROM records ORDER BY id")]


def disk_full_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the disk is full" in r.getMessage()]


def test_a_full_disk_does_not_stop_delivery(server, make_sender, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    path = spool_path(fast_settings(server.url, small_disk))
    other, spooled = spool_directly(path, 40)
    fill(small_disk)
    sender = make_sender(spool_dir=str(small_disk))
    fresh = messages(30)
    sender.send_many(fresh)
    assert sender.flush(timeout_millis=10_000)
    other.close()
    assert_exactly_once(server, spooled + insert_ids(fresh))
    assert sender.stats.dropped == 0 and sender.stats.accepted == 30
    assert sender.spool.pending() == (0, 0)
    assert len(disk_full_lines(caplog)) == 1
    assert "cannot rollback" not in caplog.text
    assert "delivery failed unexpectedly" not in caplog.text


def test_records_sent_while_the_disk_is_full_are_buffered_bounded_and_written_back(make_sender, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    sender = make_sender(endpoint="http://127.0.0.1:9", spool_dir=str(small_disk), spool_max_events=60)
    before = messages(5)
    sender.send_many(before)
    ballast = fill(small_disk)
    during = messages(70)
    sender.send_many(during)
    # At most the spool's bound is kept in memory; the oldest beyond it are dropped, and counted.
    assert sender.stats.dropped == 10 and sender.stats.accepted == 75
    assert sender.spool.pending()[0] == 65
    assert records_in_file(sender.spool.path) == insert_ids(before)
    assert len(disk_full_lines(caplog)) == 1
    # The warning names the bound that applies, the memory's, not the spool file's.
    [overflow] = [r.getMessage() for r in caplog.records if "dropped the 10 oldest" in r.getMessage()]
    assert "kept in memory" in overflow and "(60 records / 33554432 bytes)" in overflow
    assert "SPOOL_MAX" not in overflow

    os.remove(ballast)
    deadline = time.monotonic() + 15
    while len(records_in_file(sender.spool.path)) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Back on disk by itself, within the spool's bound (the oldest go first).
    assert records_in_file(sender.spool.path) == (insert_ids(before) + insert_ids(during)[10:])[-60:]
    assert sender.spool.pending()[0] == 60
    assert "takes writes again" in caplog.text
    assert len(disk_full_lines(caplog)) == 1


def test_a_batch_leased_before_the_disk_filled_and_delivered_after_lets_flush_complete(server, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    server.fail_next(Fault("status", 503))
    clock = RecordingClock(real_waits=True)
    sender = MixpanelSender(fast_settings(server.url, small_disk, retry_initial_ms=200, retry_max_ms=300),
                            clock=clock)
    try:
        items = messages(20)
        sender.send_many(items)
        # The first request failed: its batch's leases are in the file, and the thread waits to retry.
        assert clock.waiting.wait(5)
        fill(small_disk)
        # The retry delivers the batch, whose deletion (and the end of its leases) must wait for the disk.
        assert sender.flush(timeout_millis=10_000)
        assert_exactly_once(server, insert_ids(items))
        assert sender.spool.pending() == (0, 0)
        assert len(disk_full_lines(caplog)) == 1
    finally:
        sender.shutdown(timeout_millis=500)


def test_a_process_starting_on_a_full_disk_delivers_new_events_and_the_spool_once_there_is_room(
        server, make_sender, small_disk, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    path = spool_path(fast_settings(server.url, small_disk))
    earlier, spooled = spool_directly(path, 20)
    earlier.close()  # the last process using the spool stopped: SQLite removed its -shm file
    ballast = fill(small_disk)
    sender = make_sender(spool_dir=str(small_disk))
    fresh = messages(5)
    sender.send_many(fresh)
    assert sender.flush(timeout_millis=5000)
    # Sent from memory: the spool file cannot even be opened (SQLite cannot size its -shm file).
    assert_exactly_once(server, insert_ids(fresh))
    assert sender.spool.path == path and sender.stats.dropped == 0
    assert len(disk_full_lines(caplog)) == 1 and "cannot be created" not in caplog.text

    os.remove(ballast)
    server.wait_for(25, timeout=15)
    assert_exactly_once(server, spooled + insert_ids(fresh))
    assert "takes writes again" in caplog.text
    assert len(disk_full_lines(caplog)) == 1
