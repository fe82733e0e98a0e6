"""Records spooled under a refused token: delivered once the token is fixed, never to another project."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from otel_mixpanel.delivery import create_sender
from otel_mixpanel.delivery.spool import spool_path
from otel_mixpanel.testing.ingest_server import IngestServer

from delivery_helpers import assert_exactly_once, event, fast_settings, insert_ids

GOOD_TOKEN = "good-token-0123456789"
WRONG_TOKEN = "wrong-token-9876543210"


def token_messages(token: str, count: int) -> list[tuple[str, str]]:
    items = []
    for index in range(count):
        record = event(f"Event {index}")
        record["properties"]["token"] = token
        items.append(("events", json.dumps(record)))
    return items


def settings_with(url: str, spool_dir, token: str):
    # The token alone authenticates /import (as Basic user), as with no API secret configured.
    return fast_settings(url, spool_dir, token=token, api_secret=None)


def run_until_refused(url: str, spool_dir, token: str, count: int) -> list[str]:
    """A process with ``token`` spools ``count`` events, is refused (401), and stops."""
    sender = create_sender(settings_with(url, spool_dir, token))
    items = token_messages(token, count)
    sender.send_many(items)
    assert not sender.flush(timeout_millis=400)
    sender.shutdown(timeout_millis=200)
    return insert_ids(items)


def records_in(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]


@pytest.fixture
def service(monkeypatch):
    """Names the application, as OTEL_SERVICE_NAME does."""
    return lambda name: monkeypatch.setenv("OTEL_SERVICE_NAME", name)


def test_events_kept_after_a_wrong_token_are_delivered_once_it_is_fixed(tmp_path, service, caplog):
    caplog.set_level(logging.WARNING, logger="otel_mixpanel.delivery")
    service("shop")
    with IngestServer(credentials=(GOOD_TOKEN, "")) as server:
        kept = run_until_refused(server.url, tmp_path, WRONG_TOKEN, 6)
        assert server.accepted_insert_ids() == []
        fixed = create_sender(settings_with(server.url, tmp_path, GOOD_TOKEN))
        try:
            fresh = token_messages(GOOD_TOKEN, 2)
            fixed.send_many(fresh)
            assert fixed.flush(timeout_millis=5000)
            assert_exactly_once(server, kept + insert_ids(fresh))
            # Sent with the token of the fixed settings, not the refused one.
            assert {e["properties"]["token"] for e in server.events()} == {GOOD_TOKEN}
        finally:
            fixed.shutdown(timeout_millis=500)
    assert records_in(spool_path(settings_with(server.url, tmp_path, WRONG_TOKEN))) == 0
    assert "took over 6 records" in caplog.text
    assert WRONG_TOKEN not in caplog.text and GOOD_TOKEN not in caplog.text


def test_applications_with_other_projects_sharing_a_directory_never_send_each_others_events(tmp_path, service):
    with IngestServer(credentials=(GOOD_TOKEN, "")) as server:
        service("billing")
        billing = run_until_refused(server.url, tmp_path, WRONG_TOKEN, 5)
        service("shop")
        shop = create_sender(settings_with(server.url, tmp_path, GOOD_TOKEN))
        try:
            items = token_messages(GOOD_TOKEN, 3)
            shop.send_many(items)
            assert shop.flush(timeout_millis=5000)
            assert_exactly_once(server, insert_ids(items))
        finally:
            shop.shutdown(timeout_millis=500)
    assert not set(billing) & set(server.accepted_insert_ids())
    assert records_in(spool_path(settings_with(server.url, tmp_path, WRONG_TOKEN))) == 5


def test_a_spool_that_mixpanel_accepted_once_is_never_taken_over(tmp_path, service):
    """A token that worked is a project's token (revoked later, perhaps): its records are not another's to send."""
    service("shop")
    with IngestServer(credentials=(WRONG_TOKEN, "")) as server:
        earlier = create_sender(settings_with(server.url, tmp_path, WRONG_TOKEN))
        earlier.send_many(token_messages(WRONG_TOKEN, 1))
        assert earlier.flush(timeout_millis=5000)
        earlier.shutdown(timeout_millis=200)
        path = spool_path(settings_with(server.url, tmp_path, WRONG_TOKEN))
        with sqlite3.connect(path) as db:  # then refused, with two records left
            db.executemany("INSERT INTO records (endpoint, body, size, created) VALUES ('events', ?, 1, 0)",
                           [(body,) for _, body in token_messages(WRONG_TOKEN, 2)])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('credentials_refused', '1')")
        other = create_sender(settings_with(server.url, tmp_path, GOOD_TOKEN))
        assert other.flush(timeout_millis=5000)  # its first pass looks for stranded spools
        other.shutdown(timeout_millis=200)
    assert records_in(path) == 2
