"""Delivery end to end: a MixpanelSender against a loopback IngestServer."""

from __future__ import annotations

import gzip
import json

import pytest

from otel_mixpanel.delivery import MixpanelSender, create_sender
from otel_mixpanel.testing.ingest_server import IngestServer

from delivery_helpers import API_SECRET, TOKEN, assert_exactly_once, event, fast_settings, insert_ids, messages


@pytest.fixture
def server():
    with IngestServer(credentials=(API_SECRET, "")) as running:
        yield running


@pytest.fixture
def make_sender(server, tmp_path):
    senders: list[MixpanelSender] = []

    def make(**overrides) -> MixpanelSender:
        sender = create_sender(fast_settings(server.url, tmp_path, **overrides))
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.shutdown(timeout_millis=1000)


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
    assert sender.stats.accepted == 5 and sender.stats.sent == 5
    assert sender.spool.pending() == (0, 0)
