"""otel_mixpanel.testing: the local ingestion server's waits, and its stop."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from otel_mixpanel.testing.ingest_server import IngestServer


def post_event(server: IngestServer, name: str) -> None:
    record = {"event": name, "properties": {"token": "t", "distinct_id": "u-1", "time": int(time.time() * 1000),
                                           "$insert_id": name.replace(" ", "-")}}
    response = requests.post(server.url + "/track", json=[record], timeout=5)
    assert response.status_code == 200


def test_wait_for_returns_as_soon_as_the_events_arrive(ingest):
    sender = threading.Thread(target=lambda: [post_event(ingest, f"E {n}") for n in range(3)])
    sender.start()
    events = ingest.wait_for(3, timeout=10)
    sender.join()
    assert sorted(e["event"] for e in events) == ["E 0", "E 1", "E 2"]


def test_wait_for_fails_loudly_with_what_arrived_instead_of_returning_fewer(ingest):
    post_event(ingest, "Only One")
    with pytest.raises(TimeoutError, match=r"waited 0.2 s for 2 events, 1 arrived: \['Only One'\]"):
        ingest.wait_for(2, timeout=0.2)
    with pytest.raises(TimeoutError, match="for 1 profiles, 0 arrived"):
        ingest.wait_for(1, timeout=0.05, what="profiles")


def test_stop_closes_the_server_and_a_stopped_server_refuses_connections():
    server = IngestServer().start()
    post_event(server, "Before Stop")
    server.stop()
    assert [e["event"] for e in server.events()] == ["Before Stop"]
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/track", json=[], timeout=1)
