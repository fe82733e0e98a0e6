"""Delivery under injected faults: after each run every event arrives exactly once, or is kept."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest

from otel_mixpanel.delivery import MixpanelSender, create_sender
from otel_mixpanel.testing.ingest_server import Fault, IngestServer

from delivery_helpers import API_SECRET, RecordingClock, assert_exactly_once, event, fast_settings, insert_ids, messages


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([Fault("status", 429)] * 3, id="429-without-retry-after"),
        pytest.param([Fault("status", 429, retry_after=0.05)], id="429-with-retry-after"),
        pytest.param([Fault("status", s) for s in (502, 503, 504, 500, 503)], id="5xx-run"),
        pytest.param([Fault("reset")] * 3, id="connection-resets"),
        pytest.param([Fault("hang", seconds=5.0)] * 2, id="server-never-answers"),
        pytest.param([Fault("slow", seconds=0.05), Fault("reset"), Fault("status", 503)], id="mixed"),
    ],
)
def test_transient_faults_end_with_every_event_delivered_once(server, make_sender, faults):
    server.fail_next(*faults)
    # A slow answer that the server accepted after the client's deadline is rightly sent again (Mixpanel
    # keeps one by $insert_id): the deadline leaves a loaded machine room for the 50 ms answer.
    slow = any(fault.kind == "slow" for fault in faults)
    sender = make_sender(timeout_ms=2000 if slow else 200, batch_size=10)
    items = messages(25)
    sender.send_many(items)
    assert sender.flush(timeout_millis=10_000)
    assert_exactly_once(server, insert_ids(items))
    stats = sender.stats
    assert stats.sent == 25 and stats.rejected == 0 and stats.dropped == 0
    # Each fault fails a whole request, one claimed batch: 10 records, or the last 5 (the four
    # delivery threads' requests may reach the server in any order).
    assert stats.retried >= 5 if faults[0].kind != "slow" else stats.retried > 0
    assert sender.spool.pending() == (0, 0)


def test_retry_after_is_honoured(server, make_sender):
    server.fail_next(Fault("status", 429, retry_after=0.4))
    sender = make_sender(retry_initial_ms=10, retry_max_ms=10)
    started = time.monotonic()
    sender.send_many(messages(1))
    assert sender.flush(timeout_millis=5000)
    assert time.monotonic() - started >= 0.4


def test_one_log_line_per_kind_of_trouble(server, make_sender, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    server.fail_next(*[Fault("status", 503)] * 6)
    sender = make_sender(batch_size=5)
    sender.send_many(messages(20))
    assert sender.flush(timeout_millis=5000)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 503" in warnings[0].getMessage()
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_strict_partial_failure_drops_only_the_named_records(server, make_sender, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    sender = make_sender()
    good = messages(8)
    bad = [("events", json.dumps(event("Bad Id", insert_id="not valid!"))),
           ("events", json.dumps(event("Too Long", insert_id="x" * 40)))]
    sender.send_many(good[:4] + bad + good[4:])
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(good))
    assert len([r for r in server.requests if r.path == "/import"]) == 1, "a 400 must never be retried"
    assert sender.stats.sent == 8 and sender.stats.rejected == 2
    refused = [r.getMessage() for r in caplog.records if "refused record" in r.getMessage()]
    assert len(refused) == 2
    assert "'Bad Id'" in refused[0] and "$insert_id" in refused[0]


def test_400_without_failed_records_isolates_the_bad_record(server, make_sender):
    # /track refuses a whole batch for one bad record; halving finds it without resending the same request.
    sender = make_sender(api_secret=None, project_id="1")
    items = messages(7)
    broken = event("No Token")
    del broken["properties"]["token"]
    sender.send_many(items[:3] + [("events", json.dumps(broken))] + items[3:])
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    assert sender.stats.rejected == 1 and sender.stats.sent == 7


def test_bad_credentials_keep_the_events_and_a_fixed_secret_delivers_them(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="otel_mixpanel.delivery")
    wrong = create_sender(fast_settings(server.url, tmp_path, api_secret="wrong-secret"))
    items = messages(6)
    wrong.send_many(items)
    assert not wrong.flush(timeout_millis=400)
    wrong.shutdown(timeout_millis=200)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "refused the credentials (HTTP 401" in errors[0].getMessage()
    assert "wrong-secret" not in caplog.text
    assert wrong.stats.dropped == 0 and wrong.stats.rejected == 0
    assert server.accepted_insert_ids() == []

    fixed = create_sender(fast_settings(server.url, tmp_path))
    try:
        assert fixed.flush(timeout_millis=5000)
        assert_exactly_once(server, insert_ids(items))
    finally:
        fixed.shutdown(timeout_millis=500)


def test_bad_import_credentials_do_not_hold_up_profile_updates(server, make_sender):
    sender = make_sender(api_secret="wrong-secret", retry_max_ms=5000)
    events = messages(3)
    people = [("people", json.dumps({"$token": "t", "$distinct_id": "u1", "$set": {"a": 1}}))]
    sender.send_many(events + people)
    assert server.wait_for(1, timeout=5, what="profiles")
    assert server.accepted_insert_ids() == []
    assert sender.flush(timeout_millis=200) is False  # the events are still held
    assert sender.spool.pending()[0] == 3


def test_413_splits_the_batch_and_retries(tmp_path):
    with IngestServer(credentials=(API_SECRET, ""), max_request_bytes=3000) as server:
        sender = create_sender(fast_settings(server.url, tmp_path, compression="none"))
        try:
            items = messages(40)
            sender.send_many(items)
            assert sender.flush(timeout_millis=5000)
            assert_exactly_once(server, insert_ids(items))
            assert any(r.answered == 413 for r in server.requests)
            assert sender.stats.sent == 40
        finally:
            sender.shutdown(timeout_millis=500)


def test_a_record_too_large_on_its_own_is_dropped_and_logged(tmp_path, caplog):
    with IngestServer(credentials=(API_SECRET, ""), max_request_bytes=1500) as server:
        sender = create_sender(fast_settings(server.url, tmp_path, compression="none"))
        try:
            huge = ("events", json.dumps(event("Huge", blob=["x" * 200] * 10)))
            items = messages(3)
            sender.send_many([huge] + items)
            assert sender.flush(timeout_millis=5000)
            assert_exactly_once(server, insert_ids(items))
            assert sender.stats.rejected == 1
            assert "too large" in caplog.text
        finally:
            sender.shutdown(timeout_millis=500)


def test_full_spool_drops_the_oldest_and_says_how_many(make_sender, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    sender = make_sender(endpoint="http://127.0.0.1:9", spool_max_events=10)
    items = messages(15)
    sender.send_many(items)
    assert sender.spool.pending()[0] == 10
    assert sender.stats.dropped == 5 and sender.stats.accepted == 15
    assert "dropped the 5 oldest" in caplog.text
    with sqlite3.connect(sender.spool.path) as db:
        kept = [json.loads(body)["properties"]["$insert_id"] for (body,) in db.execute(
            "SELECT body FROM records ORDER BY id")]
    assert kept == insert_ids(items)[5:]


def test_spool_byte_bound_drops_the_oldest(make_sender):
    sender = make_sender(endpoint="http://127.0.0.1:9", spool_max_bytes=2000)
    sender.send_many(messages(30))
    events, size = sender.spool.pending()
    assert size <= 2000 and events < 30
    assert sender.stats.dropped == 30 - events


def test_shutdown_respects_its_deadline_against_a_hanging_server(server, make_sender):
    server.fail_next(*[Fault("hang", seconds=10.0)] * 5)
    sender = make_sender(timeout_ms=5000)
    items = messages(4)
    sender.send_many(items)
    time.sleep(0.1)  # the request is in flight, the server silent
    started = time.monotonic()
    sender.shutdown(timeout_millis=300)
    assert time.monotonic() - started < 0.8
    assert sender.spool.path and sender.stats.sent == 0

    # What was not delivered stays in the spool for the next start.
    again = make_sender()
    assert again.spool.pending()[0] == 4


@pytest.mark.parametrize("spool", ["sqlite", "memory"])
def test_shutdown_wakes_a_sleeping_retry(server, tmp_path, spool):
    server.fail_next(Fault("status", 429, retry_after=30))
    clock = RecordingClock(real_waits=True)
    sender = MixpanelSender(fast_settings(server.url, tmp_path, spool=spool), clock=clock)
    sender.send_many(messages(2))
    assert clock.waiting.wait(5)  # answered 429: now sleeping 30 s before the retry
    started = time.monotonic()
    sender.shutdown(timeout_millis=2000)
    # A durable spool ends at once; the memory spool's retry would end past the deadline, so is not made.
    assert time.monotonic() - started < 0.5
    assert clock.waits == [pytest.approx(30.0, abs=0.5)] and sender.stats.sent == 0


def test_flush_returns_false_at_its_deadline_when_the_network_is_gone(make_sender):
    sender = make_sender(endpoint="http://127.0.0.1:9", timeout_ms=5000)
    sender.send_many(messages(2))
    started = time.monotonic()
    assert sender.flush(timeout_millis=300) is False
    assert 0.25 < time.monotonic() - started < 0.8
    assert sender.spool.pending()[0] == 2


def test_an_uncreatable_spool_falls_back_to_memory_and_says_so(server, make_sender, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    sender = make_sender(spool_dir=str(blocker / "spool"))
    items = messages(3)
    sender.send_many(items)
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    assert sender.spool.path is None and sender.stats.dropped == 0
    assert "cannot be created" in caplog.text and "keeping records in memory" in caplog.text
