"""Delivery end to end on the happy path: a MixpanelSender against a loopback IngestServer."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import mixpanel
import pytest

from otel_mixpanel.delivery import SenderStats, create_sender
from otel_mixpanel.delivery.spool import spool_path
from otel_mixpanel.testing.ingest_server import Fault, IngestServer

from delivery_helpers import API_SECRET, TOKEN, assert_exactly_once, event, fast_settings, insert_ids, messages


def test_send_many_delivers_through_import_with_gzip_and_strict(server, make_sender):
    sender = make_sender()
    items = messages(5)
    sender.send_many(items)
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    request = server.requests[-1]
    assert request.path == "/import"
    assert request.query["strict"] == ["1"]
    assert request.headers["content-encoding"] == "gzip"
    expected = base64.b64encode(f"{API_SECRET}:".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert sender.stats == SenderStats(accepted=5, sent=5)
    assert sender.spool.pending() == (0, 0)


def test_events_go_to_track_as_form_with_ip_0_when_import_is_not_possible(server, make_sender):
    # A token with a project id and no secret gives no /import credentials.
    sender = make_sender(api_secret=None, project_id="123", compression="none")
    items = messages(3)
    sender.send_many(items)
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    request = server.requests[-1]
    assert request.path == "/track"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.query["ip"] == ["0"] and request.query["verbose"] == ["1"]
    assert "authorization" not in request.headers


def test_service_account_sends_project_id_and_its_credentials(tmp_path):
    with IngestServer(credentials=("sa.user", "sa-secret")) as server:
        settings = fast_settings(server.url, tmp_path, api_secret=None, service_account_username="sa.user",
                                 service_account_secret="sa-secret", project_id="4242")
        sender = create_sender(settings)
        try:
            items = messages(2, endpoint="imports")
            sender.send_many(items)
            assert sender.flush(timeout_millis=5000)
            assert_exactly_once(server, insert_ids(items))
            assert server.requests[-1].query["project_id"] == ["4242"]
        finally:
            sender.shutdown(timeout_millis=500)


def test_profile_and_group_updates_are_batched_to_engage_and_groups(server, make_sender):
    sender = make_sender()
    updates = [("people", json.dumps({"$token": TOKEN, "$distinct_id": f"u{i}", "$set": {"plan": "pro"}}))
               for i in range(4)]
    groups = [("groups", json.dumps({"$token": TOKEN, "$group_key": "company", "$group_id": "acme",
                                     "$set": {"size": 10}}))]
    sender.send_many(updates + groups)
    assert sender.flush(timeout_millis=5000)
    assert len(server.profile_updates()) == 4
    assert len(server.group_updates()) == 1
    engage = [r for r in server.requests if r.path == "/engage"]
    assert len(engage) == 1 and len(engage[0].records) == 4
    assert engage[0].query["ip"] == ["0"]


def test_batches_respect_batch_size_and_request_bytes(server, make_sender):
    sender = make_sender(batch_size=40, max_request_bytes=4096)
    items = messages(150)
    sender.send_many(items)
    assert sender.flush(timeout_millis=10_000)
    assert_exactly_once(server, insert_ids(items))
    for request in server.requests:
        assert len(request.records) <= 40
        assert len(json.dumps(request.records, separators=(",", ":"))) <= 4096


def test_official_sdk_uses_the_sender_as_its_consumer(server, make_sender):
    sender = make_sender()
    mp = mixpanel.Mixpanel(TOKEN, consumer=sender)
    mp.track("user-7", "Plan Upgraded", {"plan": "team"})
    mp.people_set("user-7", {"$email": "u7@example.com"})
    assert sender.flush()
    [received] = server.events()
    assert received["event"] == "Plan Upgraded"
    assert received["properties"]["distinct_id"] == "user-7"
    assert server.profile_updates()[0]["$distinct_id"] == "user-7"


def test_a_json_array_as_a_buffered_consumer_passes_it_is_split_into_records(server, make_sender):
    sender = make_sender()
    batch = [event("A"), event("B")]
    sender.send("events", json.dumps(batch))
    assert sender.flush(timeout_millis=5000)
    assert sorted(e["event"] for e in server.events()) == ["A", "B"]
    assert sender.stats.accepted == 2


def test_missing_insert_id_is_added_before_spooling_so_retries_dedup(server, make_sender):
    server.fail_next(Fault("status", 503))
    sender = make_sender()
    message = event("No Id")
    del message["properties"]["$insert_id"]
    sender.send("events", json.dumps(message))
    assert sender.flush(timeout_millis=5000)
    [received] = server.events()
    assert len(received["properties"]["$insert_id"]) == 32
    assert len(server.requests) == 2 and sender.stats.retried == 1


def test_an_unknown_endpoint_raises_and_content_that_is_not_json_objects_is_dropped(make_sender, caplog):
    sender = make_sender()
    with pytest.raises(ValueError, match="unknown Mixpanel endpoint"):
        sender.send("nowhere", "{}")
    sender.send("events", "[1, 2]")
    sender.send("events", "not json")
    sender.send_many([("people", "{\"$distinct_id\": \"u\"}"), ("events", "[[[]]]")])
    assert sender.stats.rejected == 3 and sender.stats.accepted == 1
    assert sender.spool.pending()[0] == 1
    refused = [r for r in caplog.records if "refused 1 message" in r.getMessage()]
    assert len(refused) == 1, "one line, then at most one a minute"


def test_memory_spool_delivers_and_writes_no_file(server, make_sender, tmp_path):
    sender = make_sender(spool="memory")
    items = messages(3)
    sender.send_many(items)
    assert sender.flush(timeout_millis=5000)
    assert_exactly_once(server, insert_ids(items))
    assert sender.spool.path is None
    assert not list(tmp_path.glob("*.sqlite3"))


def test_spool_file_is_named_per_endpoint_and_project_identity(tmp_path):
    one = fast_settings("http://127.0.0.1:1", tmp_path)
    other_token = fast_settings("http://127.0.0.1:1", tmp_path, token="another-token")
    other_host = fast_settings("http://127.0.0.1:2", tmp_path)
    new_secret = fast_settings("http://127.0.0.1:1", tmp_path, api_secret="rotated")
    assert len({spool_path(one), spool_path(other_token), spool_path(other_host)}) == 3
    # Rotating a secret keeps the spool, so events held after a 401 go out with the fixed secret.
    assert spool_path(new_secret) == spool_path(one)
    assert TOKEN not in spool_path(one)


def test_send_never_waits_for_the_network(server, make_sender):
    server.fail_next(*[Fault("hang", seconds=2.0)] * 3)
    sender = make_sender(timeout_ms=2000)
    sender.send_many(messages(1))
    time.sleep(0.1)  # the delivery thread is now stuck in a request
    started = time.monotonic()
    for _ in range(20):
        sender.send_many(messages(5))
    assert time.monotonic() - started < 0.5


def test_secrets_never_appear_in_reprs_or_logs(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    with IngestServer(credentials=("sa.user", "right-secret")) as server:
        settings = fast_settings(server.url, tmp_path, api_secret="api-secret-XYZ",
                                 service_account_username="sa.user", service_account_secret="sa-secret-XYZ",
                                 project_id="99")
        sender = create_sender(settings)
        server.fail_next(Fault("status", 503), Fault("reset"))
        sender.send_many(messages(2))
        assert not sender.flush(timeout_millis=600)  # 401 forever: wrong service-account secret
        text = caplog.text + repr(sender) + repr(settings) + repr(sender.spool) + str(sender.stats)
        sender.shutdown(timeout_millis=200)
    assert "refused the credentials" in caplog.text
    for secret in ("api-secret-XYZ", "sa-secret-XYZ", TOKEN):
        assert secret not in text
    assert urlsplit(server.url).netloc in repr(sender)


def test_counters_are_reported_as_opentelemetry_metrics(tmp_path):
    """In a child interpreter: the global meter provider can be set only once per process."""
    import subprocess
    import sys
    import textwrap

    with IngestServer(credentials=(API_SECRET, "")) as server:
        server.fail_next(Fault("status", 503))
        code = textwrap.dedent(f"""
            import json, sys
            sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
            from opentelemetry import metrics
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            from delivery_helpers import fast_settings, messages
            from otel_mixpanel.delivery import create_sender
            sender = create_sender(fast_settings({server.url!r}, {str(tmp_path)!r}))
            sender.send_many(messages(3))
            assert sender.flush(timeout_millis=5000)
            found = {{}}
            for rm in reader.get_metrics_data().resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        found[metric.name] = metric.data.data_points[0].value
            print(json.dumps(found))
        """)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["otel_mixpanel.delivery.accepted"] == 3
    assert found["otel_mixpanel.delivery.sent"] == 3
    assert found["otel_mixpanel.delivery.retried"] == 3
    assert found["otel_mixpanel.delivery.rejected"] == 0
    assert found["otel_mixpanel.delivery.dropped"] == 0


def test_shutdown_delivers_on_its_own_thread_when_no_thread_can_start(server, make_sender, monkeypatch):
    # Python 3.12+ refuses new threads at interpreter exit, when a TracerProvider's atexit shutdown runs.
    sender = make_sender()

    start = threading.Thread.start

    def refuse(thread):
        if thread.name == "otel-mixpanel-delivery":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    items = messages(3)
    sender.send_many(items)
    assert sender.flush(timeout_millis=100) is False
    sender.shutdown(timeout_millis=5000)
    monkeypatch.undo()
    assert_exactly_once(server, insert_ids(items))


def test_official_sdk_import_data_goes_to_import_with_the_configured_credentials(server, make_sender):
    sender = make_sender()
    mp = mixpanel.Mixpanel(TOKEN, consumer=sender)
    mp.import_data("ignored-key", "user-8", "Old Purchase", time.time() - 30 * 86400, {"amount": 3},
                   api_secret="ignored-secret")
    assert sender.flush(timeout_millis=5000)
    [received] = server.events()
    assert received["event"] == "Old Purchase"
    assert server.requests[-1].path == "/import"
    for suffix in ("", "-wal"):
        path = Path(sender.spool.path + suffix)
        assert not path.exists() or b"ignored-secret" not in path.read_bytes()
