"""Delivery across processes: a SIGKILLed process, forked workers sharing a spool, process exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otel_mixpanel.delivery import create_sender
from otel_mixpanel.testing.ingest_server import Fault, IngestServer

from delivery_helpers import API_SECRET, assert_exactly_once, fast_settings, insert_ids, messages

HERE = Path(__file__).parent


def _spawn_sender(url: str, spool_dir: Path, count: int, then: str) -> subprocess.Popen:
    """A child interpreter that spools ``count`` events, prints their ids, then does ``then``."""
    code = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(HERE)!r})
        from delivery_helpers import fast_settings, insert_ids, messages
        from otel_mixpanel.delivery import create_sender
        sender = create_sender(fast_settings({url!r}, {str(spool_dir)!r}, timeout_ms=5000, batch_size=20))
        items = messages({count})
        sender.send_many(items)
        print(json.dumps(insert_ids(items)), flush=True)
        {then}
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("trouble", ["hanging", "down"])
def test_sigkill_loses_no_spooled_event(tmp_path, trouble):
    server = IngestServer(credentials=(API_SECRET, "")).start()
    port = int(server.url.rsplit(":", 1)[1])
    if trouble == "down":
        server.stop()
    else:
        server.fail_next(*[Fault("hang", seconds=30.0)] * 10)
    child = _spawn_sender(server.url, tmp_path, 50, "time.sleep(60)")
    try:
        expected = json.loads(child.stdout.readline())
        time.sleep(0.3)  # a batch is leased and in flight (or failing to connect)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    if trouble == "hanging":
        server.stop()
    with IngestServer(credentials=(API_SECRET, ""), port=port) as restarted:
        sender = create_sender(fast_settings(restarted.url, tmp_path))
        try:
            assert sender.flush(timeout_millis=10_000)
            assert_exactly_once(restarted, expected)
        finally:
            sender.shutdown(timeout_millis=500)


def _exit_code(pid: int, timeout: float) -> int | None:
    """The child's exit code; a child still running at the deadline is killed and fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_forked_workers_sharing_a_spool_deliver_every_event_once(tmp_path):
    with IngestServer(credentials=(API_SECRET, "")) as server:
        server.latency = 0.01  # keeps batches in flight while the other processes claim
        sender = create_sender(fast_settings(server.url, tmp_path, batch_size=15))
        before = messages(30)
        sender.send_many(before)  # the parent's delivery thread and SQLite connection exist before fork
        per_worker = [messages(60), messages(60)]
        children = []
        for items in per_worker:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    sender.send_many(items)
                    code = 0 if sender.flush(timeout_millis=10_000) else 3
                    sender.shutdown(timeout_millis=1000)
                finally:
                    os._exit(code)
            children.append(pid)
        after = messages(30)
        sender.send_many(after)
        assert sender.flush(timeout_millis=10_000)
        for pid in children:
            assert _exit_code(pid, timeout=20) == 0
        assert sender.flush(timeout_millis=10_000)
        expected = insert_ids(before + per_worker[0] + per_worker[1] + after)
        assert_exactly_once(server, expected)
        sender.shutdown(timeout_millis=500)


def test_process_exit_does_not_hang_on_a_hanging_server(tmp_path):
    with IngestServer(credentials=(API_SECRET, "")) as server:
        server.fail_next(*[Fault("hang", seconds=30.0)] * 10)
        started = time.monotonic()
        child = _spawn_sender(server.url, tmp_path, 5, "time.sleep(0.2)")
        child.stdout.read()
        assert child.wait(timeout=15) == 0
        # The atexit flush gives Mixpanel 2 s at most.
        assert time.monotonic() - started < 6
    sender = create_sender(fast_settings("http://127.0.0.1:9", tmp_path))
    try:
        assert sender.spool.pending()[0] == 0  # different endpoint, different spool file
    finally:
        sender.shutdown(timeout_millis=100)


def test_events_sent_by_an_earlier_atexit_hook_are_delivered_by_its_shutdown(tmp_path):
    """A TracerProvider registers its atexit shutdown before the exporter builds the sender; it runs last."""
    with IngestServer(credentials=(API_SECRET, "")) as server:
        then = textwrap.dedent("""
            import atexit
            late = messages(3)
            def provider_shutdown():
                sender.send_many(late)
                sender.shutdown(timeout_millis=5000)
                print(json.dumps(insert_ids(late)), flush=True)
            atexit._clear()
            atexit.register(provider_shutdown)
            atexit.register(sender.flush_at_exit)
        """).replace("\n", "\n        ")
        child = _spawn_sender(server.url, tmp_path, 2, then)
        first = json.loads(child.stdout.readline())
        late = json.loads(child.stdout.readline())
        assert child.wait(timeout=15) == 0
        assert_exactly_once(server, first + late)


def test_a_running_sender_takes_over_the_records_of_a_worker_killed_meanwhile(tmp_path):
    with IngestServer(credentials=(API_SECRET, "")) as server:
        server.fail_next(*[Fault("hang", seconds=30.0)] * 10)
        survivor = create_sender(fast_settings(server.url, tmp_path, timeout_ms=5000))
        try:
            survivor.flush(timeout_millis=100)  # its thread is running, with nothing to do
            child = _spawn_sender(server.url, tmp_path, 20, "time.sleep(60)")
            expected = json.loads(child.stdout.readline())
            time.sleep(0.3)  # the child holds its batch in a hanging request
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            with server.lock:
                server.faults.clear()
            assert survivor.flush(timeout_millis=10_000)
            assert_exactly_once(server, expected)
        finally:
            survivor.shutdown(timeout_millis=500)
