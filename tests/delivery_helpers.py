"""Shared pieces of the delivery tests: fast settings against a loopback IngestServer, and events."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from otel_mixpanel.config import Settings
from otel_mixpanel.delivery import MixpanelSender, create_sender
from otel_mixpanel.testing.ingest_server import IngestServer

TOKEN = "tok-0123456789abcdef"
API_SECRET = "secret-fedcba9876543210"


class RecordingClock:
    """A delivery clock that records each wait asked for; tests assert the wait instead of sleeping.

    By default a wait passes at once (the clock moves on by it). With ``real_waits`` it is waited
    out for real, interruptibly, and ``waiting`` is set once a wait has begun.
    """

    def __init__(self, real_waits: bool = False) -> None:
        self.waits: list[float] = []
        self.waiting = threading.Event()
        self._real_waits = real_waits
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def sleep(self, interrupt: threading.Event, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)
            if not self._real_waits:
                self._offset += seconds
        self.waiting.set()
        if self._real_waits:
            interrupt.wait(seconds)


def fast_settings(server_url: str, spool_dir: str, **overrides: Any) -> Settings:
    """Settings whose delays are milliseconds, so fault runs take a fraction of a second."""
    values: dict[str, Any] = dict(
        token=TOKEN, api_secret=API_SECRET, endpoint=server_url, spool_dir=str(spool_dir),
        schedule_delay_ms=20, timeout_ms=500, retry_initial_ms=20, retry_max_ms=100,
    )
    values.update(overrides)
    return Settings.load(values, environ={})


def event(name: str = "Signed Up", insert_id: str | None = None, **properties: Any) -> dict[str, Any]:
    return {
        "event": name,
        "properties": {
            "token": TOKEN, "distinct_id": "user-1", "time": int(time.time() * 1000),
            "$insert_id": insert_id or uuid.uuid4().hex[:32], **properties,
        },
    }


def messages(count: int, endpoint: str = "events") -> list[tuple[str, str]]:
    return [(endpoint, json.dumps(event(f"Event {i}"))) for i in range(count)]


def assert_exactly_once(server: Any, expected_ids: list[str]) -> None:
    received = server.accepted_insert_ids()
    assert len(received) == len(set(received)), "an event was accepted twice"
    assert sorted(received) == sorted(expected_ids)


def insert_ids(items: list[tuple[str, str]]) -> list[str]:
    return [json.loads(message)["properties"]["$insert_id"] for _, message in items]


@pytest.fixture
def server():
    with IngestServer(credentials=(API_SECRET, "")) as running:
        yield running


@pytest.fixture
def make_sender(server, tmp_path):
    """Builds senders against ``server`` with fast settings; shuts each down after the test."""
    senders: list[MixpanelSender] = []

    def make(**overrides: Any) -> MixpanelSender:
        url = overrides.pop("endpoint", server.url)
        spool_dir = overrides.pop("spool_dir", tmp_path)
        sender = create_sender(fast_settings(url, spool_dir, **overrides))
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.shutdown(timeout_millis=500)
