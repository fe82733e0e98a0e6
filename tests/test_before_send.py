"""The before_send hook: records changed or dropped after conversion, never an error in the application."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

import otel_mixpanel
from conftest import DESKTOP_CHROME
from test_business_events_identity import DEVICE, by_name, serve


def _shop(tracer, environ):
    span = trace.get_current_span()
    span.set_attribute("enduser.id", "u-42")
    span.set_attribute("enduser.pseudo.id", DEVICE)
    otel_mixpanel.track("Checkout", {"email": "ann@example.com", "cart": 3})
    otel_mixpanel.track("Internal Probe")
    otel_mixpanel.set_profile({"$email": "ann@example.com", "plan": "pro"})


def test_the_hook_changes_and_drops_events_and_profile_updates(site_factory, ingest):
    seen = []

    def before_send(record, endpoint):
        seen.append(endpoint)
        if endpoint == "events":
            if record["event"] == "Internal Probe":
                return None
            record["properties"].pop("email", None)
            return {**record, "properties": {**record["properties"], "tenant": "acme", "odd": object}}
        return {**record, "$set": {k: v for k, v in record["$set"].items() if k != "$email"}}

    site = serve(site_factory, _shop, before_send=before_send)
    status, _, _ = site.request("/cart", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert status == 200
    assert sorted(seen) == ["events", "events", "events", "people"]
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view", "Checkout"]
    [checkout] = by_name(ingest, "Checkout")
    assert "email" not in checkout["properties"] and checkout["properties"]["cart"] == 3
    # What the hook adds is made JSON-safe like any property; identity and time are still there.
    assert checkout["properties"]["tenant"] == "acme" and checkout["properties"]["odd"] == str(object)
    assert checkout["properties"]["distinct_id"] == "u-42" and checkout["properties"]["time"] > 0
    assert [u["$set"] for u in ingest.profile_updates()] == [{"plan": "pro"}]
    assert (site.exporter.before_send.dropped, site.exporter.before_send.failed) == (1, 0)


@pytest.mark.parametrize("failure", ["raise", "not a dict"])
def test_a_failing_hook_costs_only_its_records_and_is_logged_once(site_factory, ingest, caplog, failure):
    def before_send(record, endpoint):
        if endpoint == "events" and record["event"] == "Checkout":
            if failure == "raise":
                raise RuntimeError("redaction failed")
            return ["not", "a", "record"]
        return record

    site = serve(site_factory, _shop, before_send=before_send)
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        for _ in range(2):
            assert site.request("/cart", headers={"User-Agent": DESKTOP_CHROME})[0] == 200
        site.flush()
    # The record the hook failed on is not sent as it was (it may be the one it had to redact).
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view"] * 2 + ["Internal Probe"] * 2
    assert len(ingest.profile_updates()) == 2
    warnings = [r for r in caplog.records if "before_send hook" in r.getMessage()]
    assert len(warnings) == 1
    assert (site.exporter.before_send.failed, site.exporter.before_send.dropped) == (2, 0)


def test_what_the_hook_returns_still_meets_mixpanels_limits(site_factory, ingest):
    def before_send(record, endpoint):
        if endpoint == "events":
            record["properties"].update(blob="x" * 1_500_000, time="yesterday")
        return record

    site = serve(site_factory, _shop, before_send=before_send)
    site.request("/cart", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    events = ingest.events()
    assert len(events) == 3
    for event in events:
        assert "blob" not in event["properties"] and isinstance(event["properties"]["time"], int)
    assert site.exporter.admission.trimmed == 3 and site.exporter.admission.times_fixed == 3


def test_a_hook_that_is_not_callable_is_refused_at_start():
    with pytest.raises(TypeError, match="before_send must be callable"):
        otel_mixpanel.MixpanelSpanExporter(token="t", spool="memory", before_send={"drop": "Internal Probe"})
