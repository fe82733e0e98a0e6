"""Delivery throughput: several requests in flight, prevalidated hand-over, and the test server itself."""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
import threading
import time

import mixpanel
import pytest
import requests

from otel_mixpanel.delivery import create_sender
from otel_mixpanel.delivery.workers import CONCURRENT_REQUESTS
from otel_mixpanel.testing.ingest_server import Fault, IngestServer

from delivery_helpers import API_SECRET, assert_exactly_once, event, fast_settings, insert_ids, messages


@pytest.fixture
def slow_server():
    with IngestServer(credentials=(API_SECRET, ""), latency=0.25) as running:
        yield running


def test_batches_travel_at_once_and_every_event_arrives_once(slow_server, tmp_path):
    sender = create_sender(fast_settings(slow_server.url, tmp_path, batch_size=10, timeout_ms=5000))
    try:
        items = messages(40)
        started = time.monotonic()
        sender.send_many(items)
        assert sender.flush(timeout_millis=10_000)
        elapsed = time.monotonic() - started
        assert sender.spool.pending() == (0, 0)  # flush waited for every thread, not just the first done
    finally:
        sender.shutdown(timeout_millis=500)
    assert_exactly_once(slow_server, insert_ids(items))
    assert len(slow_server.requests) == 4
    assert slow_server.max_concurrent >= 2
    assert elapsed < 3 * slow_server.latency  # one after the other: at least 4 x latency


def test_each_thread_leases_its_batch_under_its_own_owner(slow_server, tmp_path):
    # Each of the first requests is held for seconds, so all of them are in flight together however slowly
    # a loaded machine starts the threads (with the fixed latency alone, the first could end before the last began).
    slow_server.fail_next(*[Fault("slow", seconds=3.0)] * CONCURRENT_REQUESTS)
    sender = create_sender(fast_settings(slow_server.url, tmp_path, batch_size=5, timeout_ms=10_000))
    try:
        sender.send_many(messages(5 * CONCURRENT_REQUESTS))
        deadline = time.monotonic() + 20
        while slow_server.in_flight < CONCURRENT_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.005)
        with sqlite3.connect(sender.spool.path) as db:
            leases = db.execute("SELECT owner, COUNT(*) FROM leases GROUP BY owner").fetchall()
        assert sender.flush(timeout_millis=20_000)
    finally:
        sender.shutdown(timeout_millis=500)
    assert len(leases) == CONCURRENT_REQUESTS and all(count == 5 for _, count in leases)


def _lease_owners(spool_path: str) -> set[str]:
    with sqlite3.connect(spool_path) as db:
        return {owner for (owner,) in db.execute(
            "SELECT DISTINCT owner FROM leases WHERE until >= ?", (time.time(),))}


def test_a_429_with_retry_after_holds_back_every_thread(tmp_path):
    pause = 0.6
    with IngestServer(credentials=(API_SECRET, ""), latency=0.05) as server:
        server.fail_next(Fault("status", 429, retry_after=pause))
        sender = create_sender(fast_settings(server.url, tmp_path, batch_size=5, timeout_ms=5000,
                                             retry_initial_ms=10, retry_max_ms=10))
        try:
            items = messages(5 * 40)
            sender.send_many(items)
            deadline = time.monotonic() + 5
            while not any(r.answered == 429 for r in server.requests) and time.monotonic() < deadline:
                time.sleep(0.005)
            # The other threads give their batches back instead of holding them through the pause.
            [refused] = [r for r in server.requests if r.answered == 429]
            owners = _lease_owners(sender.spool.path)
            while len(owners) > 1 and time.monotonic() < refused.answered_at + 0.8 * pause:
                time.sleep(0.01)
                owners = _lease_owners(sender.spool.path)
            assert len(owners) == 1
            assert sender.flush(timeout_millis=20_000)
        finally:
            sender.shutdown(timeout_millis=500)
        assert_exactly_once(server, insert_ids(items))
        during = [r for r in server.requests if refused.answered_at < r.arrived_at < refused.answered_at + pause - 0.05]
    # Without a shared pause the other threads would send about 30 requests meanwhile. A thread may
    # send one whose claim raced the 429's answer; allow for a loaded machine.
    assert len(during) <= 2 * (CONCURRENT_REQUESTS - 1)


def test_shutdown_deadline_holds_for_every_thread(server, make_sender):
    server.fail_next(*[Fault("hang", seconds=10.0)] * 10)
    sender = make_sender(timeout_ms=5000, batch_size=2)
    sender.send_many(messages(2 * CONCURRENT_REQUESTS))
    deadline = time.monotonic() + 5
    while server.in_flight < CONCURRENT_REQUESTS and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    sender.shutdown(timeout_millis=300)
    assert time.monotonic() - started < 0.8
    assert sender.stats.sent == 0
    assert make_sender().spool.pending()[0] == 2 * CONCURRENT_REQUESTS


def test_a_trickle_wakes_no_thread_and_goes_out_in_one_request(server, make_sender):
    # The schedule is long, so nothing but the flushes below can send: no clock decides this test. Nor
    # can a time-out on a loaded machine: a request retried would be a third.
    sender = make_sender(schedule_delay_ms=60_000, timeout_ms=30_000)
    sender.send_many(messages(2))
    assert sender.flush(timeout_millis=5000)  # the threads have started, and all wait again
    trickle = [messages(2) for _ in range(4)]
    for items in trickle:
        # Fewer than a batch each: spooled, and no thread is woken for them.
        sender.send_many(items)
    assert sender.flush(timeout_millis=5000)
    first, rest = server.requests
    assert len(first.records) == 2 and len(rest.records) == 8
    assert len(server.accepted_insert_ids()) == 10


def test_forked_child_starts_its_own_threads(server, make_sender):
    import os

    # A request timed out on a loaded machine would be sent again, and accepted twice.
    sender = make_sender(timeout_ms=30_000)
    first = messages(3)
    sender.send_many(first)
    assert sender.flush(timeout_millis=5000)
    items = messages(4)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            sender.send_many(items)
            alive = [t.name for t in threading.enumerate() if t.name.startswith("otel-mixpanel-delivery")]
            code = 0 if sender.flush(timeout_millis=5000) and len(alive) == CONCURRENT_REQUESTS else 3
            sender.shutdown(timeout_millis=500)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The child's flush ends when nothing is left to claim; the parent's own threads share the spool and may
    # have claimed some of the child's records, and be sending them still.
    server.wait_for(7, timeout=5)
    assert_exactly_once(server, insert_ids(first + items))


# send_many(prevalidated=True): what the exporter hands over goes to the spool as it is.


def test_prevalidated_messages_are_spooled_and_sent_verbatim(server, make_sender):
    sender = make_sender(compression="none")
    # Spacing the default path's json.dumps would have removed shows nothing was re-serialised.
    items = [("events", json.dumps(event(f"E{i}"), indent=1)) for i in range(3)]
    sender.send_many(items, prevalidated=True)
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    [request] = server.requests
    assert request.body_bytes == len("[" + ",".join(message for _, message in items) + "]")
    assert sender.stats.accepted == 3 and sender.stats.sent == 3


def test_prevalidated_still_rejects_an_unknown_endpoint(make_sender):
    sender = make_sender()
    with pytest.raises(ValueError, match="unknown Mixpanel endpoint"):
        sender.send_many([("events", "{}"), ("nowhere", "{}")], prevalidated=True)
    assert sender.stats.accepted == 0


def test_the_default_path_still_validates_and_fills_in_insert_ids(make_sender):
    sender = make_sender(endpoint="http://127.0.0.1:9")
    bare = event("No Id")
    del bare["properties"]["$insert_id"]
    sender.send_many([("events", json.dumps([bare, event("Has Id", insert_id="keep-me")]))])
    with sqlite3.connect(sender.spool.path) as db:
        bodies = [json.loads(body) for (body,) in db.execute("SELECT body FROM records ORDER BY id")]
    assert [b["event"] for b in bodies] == ["No Id", "Has Id"]
    assert len(bodies[0]["properties"]["$insert_id"]) == 32 and bodies[1]["properties"]["$insert_id"] == "keep-me"
    sender.send_many([("events", "[1]")])
    assert sender.stats.rejected == 1 and sender.spool.pending()[0] == 2


# The test server.


def test_ingest_server_reads_verbose_from_the_form_body_as_the_official_consumer_sends_it(server):
    consumer = mixpanel.Consumer(events_url=server.url + "/track", retry_limit=0)
    consumer.send("events", json.dumps(event("Via SDK")))  # raises unless the answer is {"status": 1, ...}
    assert [e["event"] for e in server.events()] == ["Via SDK"]
    answer = requests.post(server.url + "/track", data={"data": json.dumps([event("Plain")])}, timeout=5)
    assert answer.json() == 1


def test_ingest_server_answers_without_a_delayed_ack_stall(server):
    body = json.dumps([event()])
    with requests.Session() as session:
        times = []
        for _ in range(9):
            started = time.perf_counter()
            session.post(server.url + "/import", data=body, auth=(API_SECRET, ""), timeout=5)
            times.append(time.perf_counter() - started)
    # With Nagle's algorithm on, every answer's body waited for the client's delayed ACK (40 ms).
    assert statistics.median(times) < 0.03


def test_ingest_server_counts_requests_handled_at_once(server):
    server.latency = 0.2
    threads = [threading.Thread(target=requests.post, args=(server.url + "/track",),
                                kwargs={"data": {"data": "[]"}, "timeout": 5}) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The server counts a request finished only after its answer is written, a moment after the client has it.
    deadline = time.monotonic() + 2
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.max_concurrent == 3 and server.in_flight == 0
    assert all(r.arrived_at + 0.2 <= r.answered_at for r in server.requests)


@pytest.mark.parametrize("requests_per_batch, renewals", [(1, 0), (2, 0), (3, 1)])
def test_a_batch_is_leased_for_two_requests_at_its_claim_and_renewed_only_before_later_ones(
        requests_per_batch, renewals, tmp_path):
    # Records of about 700 bytes in requests of at most 1024: one record per request.
    items = [("events", json.dumps(event(f"Event {i}", **{f"p{k}": "x" * 200 for k in range(3)})))
             for i in range(requests_per_batch)]
    with IngestServer(credentials=(API_SECRET, "")) as server:
        sender = create_sender(fast_settings(server.url, tmp_path, max_request_bytes=1024, timeout_ms=5000))
        try:
            sender.spool.put_many(items)
            lease_writes: list[str] = []
            with sender.spool._use() as db:
                db.set_trace_callback(lambda sql: lease_writes.append(sql) if "INTO leases" in sql else None)
            started = time.time()
            assert sender.flush(timeout_millis=10_000)
            assert_exactly_once(server, insert_ids(items))
            assert len(server.requests) == requests_per_batch
            claims = [sql for sql in lease_writes if "WITH oldest" in sql]
            assert len(lease_writes) - len(claims) == renewals
            # A claim leases for the first request and the next: two time-outs plus the margin. The
            # owner and the expiry are the first string and number the statement binds.
            for claim in claims:
                until = float(re.search(r"'[^']*', ([0-9]+\.[0-9]+)", claim)[1])
                assert started + 5 + 5 + 30 <= until <= time.time() + 5 + 5 + 30
        finally:
            sender.shutdown(timeout_millis=2_000)
