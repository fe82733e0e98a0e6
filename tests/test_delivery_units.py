"""The small pieces of delivery: backoff, answer classification, request splitting, spool leases."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from otel_mixpanel.delivery.pacing import Backoff
from otel_mixpanel.delivery.spool import Spool, _free_expiry
from otel_mixpanel.delivery.spool_db import PAGE_SIZE, split_ids
from otel_mixpanel.delivery.routes import route_for
from otel_mixpanel.delivery.transport import Verdict, classify, json_array, request_size, split_by_size

from delivery_helpers import fast_settings


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    backoff = Backoff(initial_s=2.0, max_s=60.0)
    delays = [backoff.next_delay() for _ in range(8)]
    for attempt, delay in enumerate(delays):
        base = min(60.0, 2.0 * 2 ** attempt)
        assert base * 0.8 <= delay <= min(60.0, base * 1.2)
    assert delays[-1] <= 60.0
    assert backoff.next_delay(retry_after_s=7.5) == 7.5
    assert backoff.next_delay(retry_after_s=10**9) == 3600.0
    backoff.reset()
    assert backoff.next_delay() <= 2.4


@pytest.fixture
def import_route(tmp_path):
    return route_for(fast_settings("http://127.0.0.1:1", tmp_path), "events")


@pytest.mark.parametrize("status,verdict", [
    (200, Verdict.DELIVERED), (429, Verdict.RETRY), (500, Verdict.RETRY), (502, Verdict.RETRY),
    (503, Verdict.RETRY), (504, Verdict.RETRY), (401, Verdict.CREDENTIALS), (403, Verdict.CREDENTIALS),
    (413, Verdict.TOO_LARGE), (400, Verdict.REJECTED), (404, Verdict.MISCONFIGURED),
])
def test_classification_of_answers(import_route, status, verdict):
    assert classify(import_route, status, b'{"error": "x"}').verdict is verdict


def test_retry_after_in_seconds_and_as_a_date(import_route):
    assert classify(import_route, 429, b"{}", "3").retry_after_s == 3.0
    assert classify(import_route, 503, b"{}", "Wed, 21 Oct 2015 07:28:00 GMT").retry_after_s == 0.0
    assert classify(import_route, 503, b"{}", "soon").retry_after_s is None


def test_strict_400_names_failed_records(import_route):
    body = json.dumps({"code": 400, "error": "some failed", "num_records_imported": 1, "failed_records": [
        {"index": 1, "$insert_id": "bad id", "field": "properties.$insert_id", "message": "invalid"}]})
    outcome = classify(import_route, 400, body.encode())
    assert outcome.verdict is Verdict.DELIVERED
    assert [(f.index, f.insert_id, f.field) for f in outcome.failed] == [(1, "bad id", "properties.$insert_id")]


def test_track_verbose_status_0_is_a_refusal(tmp_path):
    track = route_for(fast_settings("http://127.0.0.1:1", tmp_path, api_secret=None, project_id="1"), "events")
    assert track.path == "/track" and track.params == {"verbose": "1", "ip": "0"}
    assert classify(track, 200, b'{"status": 0, "error": "bad"}').verdict is Verdict.REJECTED
    assert classify(track, 200, b'{"status": 1, "error": null}').verdict is Verdict.DELIVERED


def test_routes_for_hosts_and_credentials(tmp_path):
    eu = fast_settings("https://api-eu.mixpanel.com", tmp_path)
    assert route_for(eu, "imports").url == "https://api-eu.mixpanel.com/import"
    assert route_for(eu, "people").url == "https://api-eu.mixpanel.com/engage"
    assert route_for(eu, "groups").url == "https://api-eu.mixpanel.com/groups"
    service = fast_settings("https://api-in.mixpanel.com", tmp_path, service_account_username="sa",
                            service_account_secret="s", project_id="77")
    assert route_for(service, "events").params == {"strict": "1", "project_id": "77"}
    with pytest.raises(ValueError):
        route_for(eu, "alias")


def test_split_by_size_keeps_each_request_within_the_limit():
    sizes = [100, 100, 100, 500, 100]
    groups = split_by_size(list(range(5)), sizes, max_bytes=250)
    assert groups == [[0, 1], [2], [3], [4]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",))), min_size=1, max_size=20))
def test_request_size_from_the_records_sizes_is_the_bytes_of_the_json_array(bodies):
    # Records carry their size (UTF-8 bytes, as spooled): the request is sized without encoding it again.
    assert request_size([len(body.encode()) for body in bodies]) == len(json_array(bodies).encode())


@given(st.lists(st.integers(min_value=-10**6, max_value=10**6).filter(bool)))
def test_split_ids_keeps_the_order_of_the_files_and_the_buffered_ids(ids):
    on_disk, buffered = split_ids(iter(ids))
    assert on_disk == [row_id for row_id in ids if row_id > 0]
    assert buffered == [-row_id for row_id in ids if row_id < 0]


def test_leases_keep_two_claimers_apart_and_expire():
    spool = Spool(None, max_events=100, max_bytes=10**6)
    spool.put_many([("events", json.dumps({"n": i})) for i in range(10)])
    first = spool.claim("a", 6, lease_s=60)
    second = spool.claim("b", 6, lease_s=60)
    assert len(first) == 6 and len(second) == 4
    assert not {r.id for r in first} & {r.id for r in second}
    assert spool.claim("c", 6, lease_s=60) == []
    spool.release(r.id for r in second)
    assert len(spool.claim("c", 6, lease_s=-1)) == 4  # an expired lease can be claimed again
    assert len(spool.claim("d", 6, lease_s=60)) == 4


def test_a_claim_holds_one_endpoint_only():
    spool = Spool(None, max_events=100, max_bytes=10**6)
    spool.put_many([("events", "{}"), ("people", "{}"), ("events", "{}")])
    assert [r.endpoint for r in spool.claim("a", 10, 60)] == ["events", "events"]
    assert [r.endpoint for r in spool.claim("a", 10, 60)] == ["people"]


def _traced_statements(spool: Spool) -> list[str]:
    statements: list[str] = []

    def trace(sql: str) -> None:
        # SQLite traces a statement again for each trigger run it causes (the totals per deleted row).
        if not statements or statements[-1] != sql:
            statements.append(sql)

    with spool._use() as db:
        db.set_trace_callback(trace)
    return statements


@pytest.mark.parametrize("rows", [3, 1500])
def test_claim_renew_release_and_remove_cost_the_same_statements_for_any_batch_size(rows):
    # executemany would run one statement per row, each a GIL hand-over; sets of ids are one statement.
    spool = Spool(None, max_events=10_000, max_bytes=10**8)
    spool.put_many([("events", json.dumps({"n": i})) for i in range(rows)])
    statements = _traced_statements(spool)
    claimed = spool.claim("a", 2000, lease_s=60)
    spool.renew((r.id for r in claimed), "a", 60)
    spool.release(r.id for r in claimed)
    spool.remove(r.id for r in claimed)
    assert len(claimed) == rows
    # The claim: a look at the owner's lease expiries, INSERT leases, SELECT bodies; then renew, release, remove.
    assert len(statements) == 6
    assert spool.pending() == (0, 0)


def test_claim_returns_every_body_intact_and_in_order():
    spool = Spool(None, max_events=100, max_bytes=10**6)
    bodies = [json.dumps({"n": 0}), "{}", json.dumps({"s": "a,b;c\u001e\u0000"}),
              json.dumps({"é": "日本語 ☃ 😀"}, ensure_ascii=False), json.dumps({"long": "x" * 70_000}), "{}"]
    spool.put_many([("events", body) for body in bodies] + [("people", "{}")])
    claimed = spool.claim("a", 100, lease_s=60)
    assert [r.body for r in claimed] == bodies
    assert [r.size for r in claimed] == [len(body.encode()) for body in bodies]
    assert [r.endpoint for r in claimed] == ["events"] * len(bodies)
    assert [r.id for r in claimed] == sorted(r.id for r in claimed)
    assert spool.claimable() == 1 and spool.held("a") == len(bodies)


def test_renew_release_and_remove_touch_only_the_given_rows():
    spool = Spool(None, max_events=100, max_bytes=10**6)
    spool.put_many([("events", json.dumps({"n": i})) for i in range(6)])
    claimed = spool.claim("a", 6, lease_s=60)
    spool.release(r.id for r in claimed[:2])
    assert spool.claimable() == 2 and spool.held("a") == 4
    spool.renew([claimed[2].id], "b", 60)
    assert spool.held("a") == 3 and spool.held("b") == 1
    spool.remove(r.id for r in claimed[3:])
    assert spool.pending()[0] == 3 and spool.held("a") == 0
    spool.remove([])
    assert spool.pending()[0] == 3


def test_leases_of_several_dead_owners_are_freed_in_one_go(tmp_path):
    import socket
    import subprocess
    import sys

    dead_pids = [subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                text=True, check=True).stdout.strip() for _ in range(2)]
    host = socket.gethostname()
    spool = Spool(None, max_events=100, max_bytes=10**6)
    spool.put_many([("events", "{}")] * 6)
    for pid in dead_pids:
        spool.claim(f"{host}:{pid}:00", 2, lease_s=60)
    spool.claim(f"{host}:{__import__('os').getpid()}:00", 2, lease_s=60)
    assert spool.reclaim_from_dead_owners() == 4
    assert spool.claimable() == 4


def test_a_record_dropped_to_fit_the_bounds_takes_its_lease_with_it():
    spool = Spool(None, max_events=6, max_bytes=10**6)
    spool.put_many([("events", json.dumps({"n": i})) for i in range(6)])
    leased = spool.claim("a", 3, lease_s=60)
    assert spool.held("a") == 3
    spool.put_many([("events", json.dumps({"n": i})) for i in range(6, 9)])  # the three oldest go
    assert spool.held("a") == 0 and spool.claimable() == 6
    assert {r.id for r in spool.claim("b", 10, lease_s=60)}.isdisjoint(r.id for r in leased)


def test_a_new_spool_file_has_its_page_size_and_an_existing_one_keeps_its_own(tmp_path):
    new = Spool(str(tmp_path / "new.sqlite3"), max_events=100, max_bytes=10**6)
    new.put_many([("events", "{}")])
    old_path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(old_path) as db:  # a spool file made by an earlier version, with SQLite's default pages
        db.execute("PRAGMA page_size=4096")
        db.execute("CREATE TABLE t (x)")
    old = Spool(old_path, max_events=100, max_bytes=10**6)
    old.put_many([("events", json.dumps({"n": n})) for n in range(3)])
    assert [r.body for r in old.claim("a", 10, 60)] == [json.dumps({"n": n}) for n in range(3)]
    for spool, page_size in ((new, PAGE_SIZE), (old, 4096)):
        with spool._use() as db:
            assert db.execute("PRAGMA page_size").fetchone()[0] == page_size
        spool.close()


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["events", "people", "groups"]),
                            st.sampled_from(["none", "live", "expired", "excluded"])), max_size=30),
    limit=st.integers(min_value=1, max_value=12),
)
def test_a_claim_takes_the_oldest_claimable_records_of_the_oldest_ones_endpoint(rows, limit):
    spool = Spool(None, max_events=1000, max_bytes=10**6)
    spool.put_many([(endpoint, json.dumps({"n": n})) for n, (endpoint, _) in enumerate(rows)])
    ids = [row[0] for row in spool._read("SELECT id FROM records ORDER BY id")]
    for row_id, (_, state) in zip(ids, rows):
        if state in ("live", "expired"):
            spool.renew([row_id], "other", 60 if state == "live" else -1)
    excluded = [row_id for row_id, (_, state) in zip(ids, rows) if state == "excluded"]
    # The definition: the oldest `limit` records nobody holds, then those of the first one's endpoint.
    claimable = [(row_id, endpoint) for row_id, (endpoint, state) in zip(ids, rows) if state in ("none", "expired")]
    oldest = claimable[:limit]
    expected = [row_id for row_id, endpoint in oldest if endpoint == oldest[0][1]] if oldest else []
    claimed = spool._claim_on_disk("a", limit, 60, excluded)
    assert [record.id for record in claimed] == expected
    assert {record.endpoint for record in claimed} == ({oldest[0][1]} if oldest else set())
    assert spool.held("a") == len(expected)


def test_a_claims_expiry_is_one_no_other_lease_of_its_owner_has():
    spool = Spool(None, max_events=100, max_bytes=10**6)
    spool.put_many([("events", "{}"), ("people", "{}"), ("events", "{}")])
    set_aside = spool.claim("a", 1, lease_s=60)
    with spool._use() as db:
        (until,) = db.execute("SELECT until FROM leases WHERE owner = 'a'").fetchone()
        assert _free_expiry(db, "a", until) == math.nextafter(until, math.inf)
        assert _free_expiry(db, "b", until) == until
    # The next claim of the same owner returns its own batch only, not the records it holds already.
    assert [r.endpoint for r in spool.claim("a", 10, lease_s=60)] == ["people"]
    assert spool.held("a") == 2 and [r.id for r in set_aside] == [1]
