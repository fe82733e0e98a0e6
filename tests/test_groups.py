"""Group analytics: set_group() on the request's events and profile, set_group_profile() to /groups."""

from __future__ import annotations

import pytest
from opentelemetry import trace

import otel_mixpanel
from conftest import DESKTOP_CHROME
from test_business_events_identity import DEVICE, by_name, serve


def _member_of_acme(tracer, environ):
    span = trace.get_current_span()
    span.set_attribute("enduser.pseudo.id", DEVICE)
    if "login" in environ["PATH_INFO"]:
        span.set_attribute("enduser.id", "u-42")
    otel_mixpanel.track("Checkout", {"cart": 3})  # before set_group: still the request's event
    with tracer.start_as_current_span("load-account"):
        otel_mixpanel.set_group("company", "acme")
        otel_mixpanel.set_group_profile("company", "acme", {"name": "Acme Inc", "seats": 12})
    otel_mixpanel.track("Invited", {"team": "other"})
    otel_mixpanel.set_group("team", [7, "ops"])


def test_group_keys_on_every_event_and_the_group_profile_to_groups(site_factory, ingest):
    endpoints = []

    def before_send(record, endpoint):
        endpoints.append(endpoint)
        return record

    # Neither event list filters the helpers' instructions.
    site = serve(site_factory, _member_of_acme, included_events=["Checkout", "Invited"], before_send=before_send,
                 super_properties={"company": ["configured"], "app": "shop"})
    site.request("/login", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    events = ingest.events()
    assert sorted(e["event"] for e in events) == ["$mp_web_page_view", "Checkout", "Invited"]
    for event in events:
        # set_group() registers after the configured super properties, as a later register() in mixpanel-js.
        assert event["properties"]["company"] == ["acme"] and event["properties"]["app"] == "shop"
    assert by_name(ingest, "Checkout")[0]["properties"]["team"] == ["7", "ops"]
    # An event's own property wins over the registered group, as over any super property.
    assert by_name(ingest, "Invited")[0]["properties"]["team"] == "other"
    # The user's profile gets the memberships, as mixpanel-js's set_group people.set()s them.
    assert sorted((u["$distinct_id"], tuple(u["$set"].items())) for u in ingest.profile_updates()) == [
        ("u-42", (("company", ["acme"]),)), ("u-42", (("team", ["7", "ops"]),))]
    # The group's own profile, in the shape of mixpanel-js's MixpanelGroup and mixpanel-python's group_set.
    assert ingest.group_updates() == [{"$group_key": "company", "$group_id": "acme", "$token": "test-token",
                                       "$set": {"name": "Acme Inc", "seats": 12}}]
    [request] = [r for r in ingest.requests if r.path == "/groups"]
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sorted(endpoints) == ["events"] * 3 + ["groups"] + ["people"] * 2


def test_an_anonymous_visitors_groups_are_on_events_but_make_no_profile(site_factory, ingest):
    site = serve(site_factory, _member_of_acme)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert {tuple(e["properties"]["company"]) for e in ingest.events()} == {("acme",)}
    assert ingest.profile_updates() == []
    assert [u["$group_id"] for u in ingest.group_updates()] == ["acme"]


def test_group_keys_given_to_a_single_track_stay_on_that_event(site_factory, ingest):
    def handler(tracer, environ):
        trace.get_current_span().set_attribute("enduser.id", "u-7")
        otel_mixpanel.track("Report Exported", {"company": "globex"})

    site = serve(site_factory, handler)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert by_name(ingest, "Report Exported")[0]["properties"]["company"] == "globex"
    assert "company" not in by_name(ingest, "$mp_web_page_view")[0]["properties"]


def test_a_group_key_or_id_json_cannot_carry_costs_no_event(site_factory, ingest):
    def handler(tracer, environ):
        trace.get_current_span().set_attribute("enduser.id", "u-7")
        otel_mixpanel.set_group("comp\ud800any", ["acme\udfff", "x" * 300])
        otel_mixpanel.track("Report Exported")

    site = serve(site_factory, handler)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view", "Report Exported"]
    for event in ingest.events():
        # As any property: text Mixpanel takes, cut to its 255 bytes.
        assert event["properties"]["comp?any"] == ["acme?", "x" * 255]
    assert [u["$set"] for u in ingest.profile_updates()] == [{"comp?any": ["acme?", "x" * 255]}]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: otel_mixpanel.set_group("", "acme"), "group key"),
    (lambda: otel_mixpanel.set_group("company", []), "group id"),
    (lambda: otel_mixpanel.set_group("company", " "), "group id"),
    (lambda: otel_mixpanel.set_group_profile(None, "acme", {"a": 1}), "group key"),
    (lambda: otel_mixpanel.set_group_profile("company", "", {"a": 1}), "group id"),
])
def test_group_helpers_refuse_what_mixpanel_could_not_place(call, message):
    with pytest.raises(ValueError, match=message):
        call()
