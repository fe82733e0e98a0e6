"""Span events become business events with the request's context; identity and profiles."""

from __future__ import annotations

import logging
import os
import re

import pytest
from opentelemetry import trace

import otel_mixpanel
from conftest import DESKTOP_CHROME, IPHONE, SEMCONV_MODES, quick_delivery, record_spans, text_app

DEVICE = "5b9a1f4e-3c2d-4a8b-9f1e-2d3c4b5a6f70"


def app_with(handler):
    """A WSGI app whose handler runs ``handler(tracer)`` inside the request, then answers 200."""

    def build(site_ref):
        def app(environ, start_response):
            handler(site_ref[0].tracer, environ)
            return text_app(environ, start_response)

        return app

    return build


def serve(site_factory, handler, **options):
    site_ref = []
    site = site_factory(app_with(handler)(site_ref), **options)
    site_ref.append(site)
    return site


def by_name(ingest, name):
    return [e for e in ingest.events() if e["event"] == name]


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_events_on_child_spans_get_the_request_context(site_factory, ingest, mode):
    def handler(tracer, environ):
        trace.get_current_span().set_attribute("enduser.pseudo.id", DEVICE)
        with tracer.start_as_current_span("checkout"):
            with tracer.start_as_current_span("charge-card"):
                otel_mixpanel.track("Order Completed", {"amount": 42.5, "items": ["a", "b"], "coupon": None})

    site = serve(site_factory, handler, mode=mode, capture_headers="referer")
    site.request("/checkout?utm_source=ads", headers={"User-Agent": IPHONE, "Referer": "https://t.co/x"})
    site.flush()
    [order] = by_name(ingest, "Order Completed")
    props = order["properties"]
    # A None attribute value: kept as null by opentelemetry-sdk 1.45 and later, dropped by earlier releases.
    assert props["amount"] == 42.5 and props["items"] == ["a", "b"] and props.get("coupon") is None
    assert props["$browser"] == "Mobile Safari" and props["$device"] == "iPhone"
    assert props["utm_source"] == "ads"
    assert props["$referrer"] == "https://t.co/x" and props["$referring_domain"] == "t.co"
    assert props["ip"] == "127.0.0.1"
    assert props["$device_id"] == DEVICE and props["distinct_id"] == f"$device:{DEVICE}"
    assert props["$current_url"].endswith("/checkout?utm_source=ads")


def test_business_event_is_timed_at_the_span_event(site_factory, ingest):
    stamps = []

    def handler(tracer, environ):
        span = trace.get_current_span()
        span.add_event("Clicked", {"button": "buy"}, timestamp=1_700_000_000_123_456_789)
        stamps.append(span.start_time)

    site = serve(site_factory, handler)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [clicked] = by_name(ingest, "Clicked")
    assert clicked["properties"]["time"] == 1_700_000_000_123
    [view] = by_name(ingest, "$mp_web_page_view")
    assert view["properties"]["time"] == stamps[0] // 1_000_000


def test_exception_events_and_configured_exclusions_are_not_sent(site_factory, ingest):
    def handler(tracer, environ):
        span = trace.get_current_span()
        span.record_exception(ValueError("boom"))
        span.add_event("debug.checkpoint")
        span.add_event("Kept")

    site = serve(site_factory, handler, excluded_events=["exception", "debug.checkpoint"])
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view", "Kept"]


def test_user_learned_in_a_child_span_applies_to_every_event_of_the_request(site_factory, ingest):
    def handler(tracer, environ):
        trace.get_current_span().set_attribute("enduser.pseudo.id", DEVICE)
        otel_mixpanel.track("Viewed Dashboard")
        with tracer.start_as_current_span("authenticate"):
            trace.get_current_span().set_attribute("user.id", "u-123")

    site = serve(site_factory, handler)
    site.request("/dashboard", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    events = ingest.events()
    assert len(events) == 2
    for event in events:
        props = event["properties"]
        assert (props["distinct_id"], props["$user_id"], props["$device_id"]) == ("u-123", "u-123", DEVICE)


def test_simplified_id_merge_anonymous_then_identified(site_factory, ingest):
    logged_in = {"value": False}

    def handler(tracer, environ):
        trace.get_current_span().set_attribute("enduser.pseudo.id", DEVICE)
        if environ["PATH_INFO"] == "/login":
            otel_mixpanel.identify("alice")
            logged_in["value"] = True
        elif logged_in["value"]:
            otel_mixpanel.set_user("alice")

    site = serve(site_factory, handler)
    for path in ("/", "/login", "/account"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    views = {e["properties"]["current_url_path"]: e["properties"] for e in by_name(ingest, "$mp_web_page_view")}
    assert views["/"]["distinct_id"] == f"$device:{DEVICE}" and "$user_id" not in views["/"]
    assert views["/login"]["$user_id"] == "alice" and views["/login"]["$device_id"] == DEVICE
    assert views["/account"]["distinct_id"] == "alice"
    assert by_name(ingest, "$identify") == [], "Simplified ID Merge links through $device_id + $user_id"


def test_original_id_merge_sends_one_identify_at_login(site_factory, ingest):
    def handler(tracer, environ):
        trace.get_current_span().set_attribute("enduser.pseudo.id", DEVICE)
        if environ["PATH_INFO"] == "/login":
            with tracer.start_as_current_span("login"):
                otel_mixpanel.identify("alice")
        elif environ["PATH_INFO"] == "/account":
            otel_mixpanel.set_user("alice")

    site = serve(site_factory, handler, id_merge="original")
    for path in ("/", "/login", "/account", "/account"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [identify] = by_name(ingest, "$identify")
    # As mixpanel-js 2.83.0 identifies (distinct_id, $anon_distinct_id), and as the HTTP API documents.
    props = identify["properties"]
    assert (props["distinct_id"], props["$anon_distinct_id"]) == ("alice", f"$device:{DEVICE}")
    assert (props["$identified_id"], props["$anon_id"]) == ("alice", f"$device:{DEVICE}")
    assert (props["$device_id"], props["$user_id"]) == (DEVICE, "alice")
    assert props["$browser"] == "Chrome" and props["$current_url"].endswith("/login")
    ids = [e["properties"]["distinct_id"] for e in by_name(ingest, "$mp_web_page_view")]
    assert sorted(ids) == sorted([f"$device:{DEVICE}", "alice", "alice", "alice"])
    assert all(e["properties"]["$device_id"] == DEVICE for e in ingest.events())


def test_events_without_identity_are_sent_and_warned_about_once(site_factory, ingest, caplog):
    site = serve(site_factory, lambda tracer, environ: otel_mixpanel.track("Anonymous Thing"))
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        for _ in range(3):
            site.request("/", headers={"User-Agent": DESKTOP_CHROME})
        site.flush()
    assert len(ingest.events()) == 6
    assert all(e["properties"]["distinct_id"] == "" for e in ingest.events())
    warnings = [r for r in caplog.records if "without a user" in r.getMessage()]
    assert len(warnings) == 1
    assert "enduser.pseudo.id" in warnings[0].getMessage() and "identify" in warnings[0].getMessage()


def test_set_profile_updates_the_request_user_with_location_outside_set(site_factory, ingest):
    def handler(tracer, environ):
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", DEVICE)
        span.set_attribute("enduser.id", "alice")
        span.set_attribute("geo.location.lat", 48.8566)
        span.set_attribute("geo.location.lon", 2.3522)
        with tracer.start_as_current_span("save-settings"):
            otel_mixpanel.set_profile({"plan": "pro", "seats": 3})

    site = serve(site_factory, handler)
    site.request("/settings", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [update] = ingest.wait_for(1, what="profiles")
    assert update["$distinct_id"] == "alice"
    assert update["$set"] == {"plan": "pro", "seats": 3}
    assert update["$ip"] == "127.0.0.1" and "$ip" not in update["$set"]
    assert (update["$latitude"], update["$longitude"]) == (48.8566, 2.3522)
    assert update["$token"] == "test-token"
    [view] = by_name(ingest, "$mp_web_page_view")
    assert (view["properties"]["$latitude"], view["properties"]["$longitude"]) == (48.8566, 2.3522)
    assert [e["event"] for e in ingest.events()] == ["$mp_web_page_view"], "set_profile is not an event"


def test_background_job_span_events_become_events_with_their_identity(ingest, pipeline):
    exporter, tracer = pipeline()
    with tracer.start_as_current_span("nightly-billing") as job:
        job.set_attribute("enduser.id", "customer-9")
        with tracer.start_as_current_span("charge"):
            otel_mixpanel.track("Invoice Sent", {"invoice": "INV-1"})
    with tracer.start_as_current_span("cleanup"):
        pass
    assert exporter.force_flush(5000)
    [invoice] = ingest.events()
    assert invoice["event"] == "Invoice Sent"
    assert invoice["properties"]["distinct_id"] == "customer-9"
    assert invoice["properties"]["invoice"] == "INV-1"
    assert "$browser" not in invoice["properties"]
    assert invoice["properties"]["ip"] == "0", "no client: Mixpanel must not locate the event at the server"


def test_insert_ids_are_deterministic_and_valid(ingest):
    def job(tracer):
        with tracer.start_as_current_span("job") as span:
            span.set_attribute("enduser.id", "u1")
            for n in range(3):
                span.add_event("Step", {"n": n})

    spans = record_spans(job)
    for _ in range(2):
        exporter = otel_mixpanel.MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url))
        exporter.export(spans)
        exporter.shutdown(5000)
    ids = ingest.accepted_insert_ids()
    assert len(ids) == 6 and len(set(ids)) == 3, "the same span exported twice gives the same $insert_ids"
    assert all(re.fullmatch(r"[A-Za-z0-9-]{1,36}", i) for i in ids)
    assert sorted(e["properties"]["n"] for e in ingest.events()) == [0, 1, 2]


def test_no_profile_update_for_a_request_without_identity(site_factory, ingest):
    def handler(tracer, environ):
        otel_mixpanel.set_profile({"plan": "pro"})
        otel_mixpanel.track("Settings Saved")

    site = serve(site_factory, handler)
    site.request("/settings", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view", "Settings Saved"]
    assert ingest.profile_updates() == []


def test_the_warning_without_identity_names_the_wsgi_middleware(site_factory, ingest, caplog):
    site = serve(site_factory, lambda tracer, environ: otel_mixpanel.track("Anonymous Thing"))
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        site.request("/", headers={"User-Agent": DESKTOP_CHROME})
        site.flush()
    [warning] = [r.getMessage() for r in caplog.records if "without a user" in r.getMessage()]
    assert "otel_mixpanel.web.MixpanelMiddleware(app)" in warning and "asgi" not in warning


def test_the_warning_for_a_job_without_identity_points_at_the_job_span(pipeline, ingest, caplog):
    _, tracer = pipeline()
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        with tracer.start_as_current_span("nightly-report"):
            otel_mixpanel.track("Report Sent")
        ingest.wait_for(1)
    [warning] = [r.getMessage() for r in caplog.records if "without a user" in r.getMessage()]
    assert "not an HTTP request" in warning and "docs/identity.md" in warning


@pytest.mark.parametrize(("included", "excluded", "expected"), [
    ([], ["exception"], ["$mp_web_page_view", "Checkout", "Signed Up", "debug.checkpoint"]),
    (["Checkout", "Signed Up"], ["exception"], ["$mp_web_page_view", "Checkout", "Signed Up"]),
    (["Checkout", "Signed Up", "exception"], ["exception", "Signed Up"], ["$mp_web_page_view", "Checkout"]),
    ("Checkout", [], ["$mp_web_page_view", "Checkout"]),
])
def test_an_allow_list_of_span_events_works_with_the_deny_list(site_factory, ingest, included, excluded, expected):
    def handler(tracer, environ):
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", DEVICE)
        span.record_exception(ValueError("boom"))
        span.add_event("debug.checkpoint")
        otel_mixpanel.track("Checkout", {"cart": 3})
        with tracer.start_as_current_span("signup"):
            otel_mixpanel.track("Signed Up")
        otel_mixpanel.set_profile({"plan": "pro"})

    site = serve(site_factory, handler, included_events=included, excluded_events=excluded, anonymous_profiles=True)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(e["event"] for e in ingest.events()) == expected
    # The helpers' own records are not span events a list filters.
    assert [u["$set"] for u in ingest.profile_updates()] == [{"plan": "pro"}]


def test_included_events_come_from_the_environment():
    os.environ["OTEL_EXPORTER_MIXPANEL_INCLUDED_EVENTS"] = "Checkout, Signed Up"
    assert otel_mixpanel.Settings.load().included_events == ("Checkout", "Signed Up")
