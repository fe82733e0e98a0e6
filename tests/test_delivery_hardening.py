"""Delivery under hostile input and failing servers: what the application hands over, 413s,
answers dripped a byte at a time, idle threads, and shutdown during an outage."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import mixpanel
import pytest

from otel_mixpanel.delivery import MixpanelSender, create_sender
from otel_mixpanel.delivery.routes import route_for
from otel_mixpanel.delivery.transport import Transport, Verdict
from otel_mixpanel.delivery.workers import CONCURRENT_REQUESTS, RECHECK_S
from otel_mixpanel.testing.ingest_server import Fault, IngestServer

from delivery_helpers import (API_SECRET, TOKEN, RecordingClock, assert_exactly_once, event, fast_settings,
                              insert_ids, messages)


def _strict_json(body: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body, parse_constant=refuse)


def _spooled_bodies(sender: MixpanelSender) -> list[str]:
    with sqlite3.connect(sender.spool.path) as db:
        return [body for (body,) in db.execute("SELECT body FROM records ORDER BY id")]


# What the application hands over: never raised back at it, only valid JSON spooled.


def test_the_official_sdk_with_a_lone_surrogate_and_non_finite_numbers_neither_raises_nor_spools_bad_json(
        server, make_sender):
    sender = make_sender(endpoint="http://127.0.0.1:9")  # nothing is delivered: the spool is looked at
    mp = mixpanel.Mixpanel(TOKEN, consumer=sender)
    mp.track("user-1", "Odd", {"broken": "a\ud800b", "nan": float("nan"), "inf": float("inf"),
                               "ninf": float("-inf"), "fine": 1.5})
    mp.people_set("user-1", {"name": "\udfff"})
    [odd, profile] = [_strict_json(body) for body in _spooled_bodies(sender)]
    assert odd["properties"]["broken"] == "a\ufffdb"
    assert [odd["properties"][k] for k in ("nan", "inf", "ninf", "fine")] == [None, None, None, 1.5]
    assert profile["$set"]["name"] == "\ufffd"
    assert sender.stats.accepted == 2 and sender.stats.rejected == 0


def test_numbers_too_large_for_a_double_are_spooled_as_null_not_raised(server, make_sender):
    sender = make_sender(endpoint="http://127.0.0.1:9")
    # Valid JSON that Python reads as infinity, e.g. from another encoder or a hand-written message.
    sender.send("events", '{"event": "Big", "properties": {"distinct_id": "u", "n": 1e999, "m": -1E400}}')
    sender.send("people", '{"$distinct_id": "u", "$set": {"score": 2e308}}')
    [big, profile] = [_strict_json(body) for body in _spooled_bodies(sender)]
    assert big["properties"]["n"] is None and big["properties"]["m"] is None
    assert profile["$set"]["score"] is None
    assert sender.stats.accepted == 2 and sender.stats.rejected == 0


def test_odd_content_is_delivered_as_valid_json(server, make_sender):
    sender = make_sender()
    mp = mixpanel.Mixpanel(TOKEN, consumer=sender)
    mp.track("user-1", "Odd", {"broken": "\ud83d", "nan": float("nan")})
    assert sender.flush(timeout_millis=5000)
    [received] = server.events()
    assert received["properties"]["broken"] == "\ufffd" and received["properties"]["nan"] is None


def test_a_prevalidated_body_with_a_lone_surrogate_is_made_safe_not_lost_with_its_batch(server, make_sender):
    sender = make_sender()
    good = messages(3)
    broken = json.dumps(event("Broken", text="x\ud800y"), ensure_ascii=False)  # a lone surrogate, unescaped
    sender.send_many(good[:1] + [("events", broken)] + good[1:], prevalidated=True)
    assert sender.flush(timeout_millis=5000)
    received = {e["event"]: e for e in server.events()}
    assert len(received) == 4 and received["Broken"]["properties"]["text"] == "x\ufffdy"


# SCHEDULE_DELAY=0: sent at once, and no thread spins while there is nothing to send.


def test_a_schedule_delay_of_zero_sends_at_once_and_does_not_spin_while_idle(server, make_sender):
    sender = make_sender(schedule_delay_ms=0)
    items = messages(3)
    sender.send_many(items)
    assert len(server.wait_for(3)) == 3
    assert sender.flush(timeout_millis=5000)
    statements: list[str] = []
    with sender.spool._use() as db:  # the delivery threads' connection
        db.set_trace_callback(statements.append)
    cpu_before = time.process_time()
    time.sleep(0.5)  # an idle stretch, watched: there is no event that would mark its end
    cpu = time.process_time() - cpu_before
    with sender.spool._use() as db:
        db.set_trace_callback(None)
    # Spinning, the threads claimed from the spool thousands of times in half a second, on a whole core.
    assert len(statements) < 30
    assert cpu < 0.2
    sender.send_many(messages(2))
    assert len(server.wait_for(5)) == 5


# 413: split down, paced like any failure; only a record refused on its own for its size is dropped.


def test_413_on_every_request_keeps_the_events_paces_the_requests_and_warns_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    clock = RecordingClock()
    # A proxy in front of Mixpanel that refuses any body over 10 bytes.
    with IngestServer(credentials=(API_SECRET, ""), max_request_bytes=10) as server:
        sender = MixpanelSender(fast_settings(server.url, tmp_path), clock=clock)
        try:
            sender.send_many(messages(6))
            assert sender.flush(timeout_millis=1500) is False
            refused = len(server.requests)
        finally:
            sender.shutdown(timeout_millis=500)
    assert sender.stats.rejected == 0 and sender.spool.pending()[0] == 6
    # Every refused request is followed by a wait before the next: the backoff's, doubling up to its maximum.
    # (A thread that has set every record aside ends its pass; its next pass, RECHECK_S later, finds
    # the pause over without waiting for it.)
    passes = 1 + int(1.5 / RECHECK_S)
    assert len(clock.waits) >= refused - passes
    assert all(0.016 <= wait <= 0.12 for wait in clock.waits)
    assert max(clock.waits) > 0.08
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 2 and all("413" in line for line in warnings)


def test_413_for_one_large_event_delivers_the_others_and_drops_it_once_with_its_size(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    clock = RecordingClock()
    with IngestServer(credentials=(API_SECRET, ""), max_event_bytes=2000) as server:
        sender = MixpanelSender(fast_settings(server.url, tmp_path), clock=clock)
        try:
            small = messages(10)
            large = ("events", json.dumps(event("Large", blob="x" * 240, more=["y" * 200] * 12)))
            sender.send_many(small[:4] + [large] + small[4:])
            assert sender.flush(timeout_millis=5000)
        finally:
            sender.shutdown(timeout_millis=500)
    assert_exactly_once(server, insert_ids(small))
    assert sender.stats.rejected == 1 and sender.stats.sent == 10
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "'Large'" in dropped[0]
    spooled_size = len(json.dumps(json.loads(large[1]), separators=(",", ":")).encode())
    assert f"({spooled_size} bytes)" in dropped[0]
    # Each 413 to several records is followed by a backoff wait before the halves go.
    split = [r for r in server.requests if r.answered == 413 and len(r.records) > 1]
    assert split and len(clock.waits) == len(split)


# A request has one deadline, for the whole exchange.


def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_request_deadline(server, tmp_path):
    # The answer's ~150 bytes, status line and headers first, would take about 15 s to arrive.
    server.fail_next(Fault("drip", seconds=0.1))
    settings = fast_settings(server.url, tmp_path)
    transport = Transport(settings)
    try:
        started = time.monotonic()
        outcome = transport.post(route_for(settings, "events"), [json.dumps(event())], timeout_s=0.3)
        elapsed = time.monotonic() - started
        assert outcome.verdict is Verdict.RETRY and outcome.detail == "no complete answer within 0.3 s"
        assert elapsed < 2.0
        # The same transport sends the next request on a new connection.
        assert transport.post(route_for(settings, "events"), [json.dumps(event())], 2.0).verdict is Verdict.DELIVERED
    finally:
        transport.close()


def test_a_dripping_server_does_not_hold_up_delivery(server, make_sender):
    server.fail_next(Fault("drip", seconds=0.1))
    sender = make_sender(timeout_ms=300)
    items = messages(4)
    started = time.monotonic()
    sender.send_many(items)
    assert sender.flush(timeout_millis=10_000)
    assert time.monotonic() - started < 5.0
    assert_exactly_once(server, insert_ids(items))
    assert sender.stats.retried == 4


# Shutdown during an outage.


def _first_answer(server: IngestServer) -> None:
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.requests


def test_shutdown_during_an_outage_with_a_durable_spool_makes_one_attempt_and_keeps_the_rest(server, tmp_path):
    # Default backoff (2 s doubling to 60 s) and time-out: retrying within a 30 s deadline took 15-28 s.
    server.fail_next(*[Fault("status", 503)] * 1000)
    settings = fast_settings(server.url, tmp_path, schedule_delay_ms=1000, timeout_ms=10_000,
                             retry_initial_ms=2000, retry_max_ms=60_000)
    sender = create_sender(settings)
    items = messages(50)
    sender.send_many(items)
    _first_answer(server)
    started = time.monotonic()
    sender.shutdown(timeout_millis=30_000)
    assert time.monotonic() - started < 2.0
    assert len(server.requests) <= CONCURRENT_REQUESTS + 1
    assert sender.spool.path is not None and sender.stats.sent == 0

    # The next process sends them.
    with server.lock:
        server.faults.clear()
    again = create_sender(fast_settings(server.url, tmp_path))
    try:
        assert again.flush(timeout_millis=5000)
    finally:
        again.shutdown(timeout_millis=500)
    assert_exactly_once(server, insert_ids(items))


def test_shutdown_with_a_durable_spool_does_not_retry_what_failed(server, make_sender):
    server.fail_next(Fault("status", 503))
    sender = make_sender(schedule_delay_ms=60_000)  # nothing is sent before shutdown
    sender.send_many(messages(5))
    sender.shutdown(timeout_millis=5000)
    assert [r.answered for r in server.requests] == [503]
    assert sender.spool.pending()[0] == 5


def test_shutdown_with_the_memory_spool_keeps_trying_until_its_deadline(server, make_sender):
    server.fail_next(*[Fault("status", 503)] * 3)
    sender = make_sender(spool="memory", schedule_delay_ms=60_000)
    items = messages(5)
    sender.send_many(items)
    sender.shutdown(timeout_millis=5000)
    assert [r.answered for r in server.requests] == [503, 503, 503, 200]
    assert_exactly_once(server, insert_ids(items))


def test_retry_after_is_the_wait_asked_for(server, tmp_path):
    server.fail_next(Fault("status", 429, retry_after=30))
    clock = RecordingClock()
    sender = MixpanelSender(fast_settings(server.url, tmp_path), clock=clock)
    try:
        sender.send_many(messages(2))
        assert sender.flush(timeout_millis=5000)
    finally:
        sender.shutdown(timeout_millis=500)
    assert clock.waits == [pytest.approx(30.0, abs=0.5)]
    assert [r.answered for r in server.requests] == [429, 200]


def test_the_development_printer_takes_the_same_content_and_prints_valid_json(capsys, tmp_path):
    printer = create_sender(fast_settings("http://127.0.0.1:9", tmp_path, output="console"))
    mp = mixpanel.Mixpanel(TOKEN, consumer=printer)
    mp.track("user-1", "Odd", {"broken": "a\ud800b", "nan": float("nan")})
    printer.send("events", "[1]")  # skipped with a warning, not raised
    [line] = capsys.readouterr().err.splitlines()
    printed = _strict_json(line)
    assert printed["path"] == "/import"
    assert printed["record"]["properties"]["broken"] == "a\ufffdb" and printed["record"]["properties"]["nan"] is None
    assert printed["record"]["properties"]["token"] == "***"
