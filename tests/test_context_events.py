"""Steps 2b to 4 without delivery: a request's spans -> its context -> Mixpanel messages."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pytest

import otel_mixpanel
from otel_mixpanel.assembly import TraceAssembler
from otel_mixpanel.config import Settings
from otel_mixpanel.context import RequestContext, build_context, read_request
from otel_mixpanel.events import EVENTS, PROFILES, EventBuilder, Message

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.1 Mobile/15E148 Safari/604.1")
REQUEST = {"http.request.method": "GET", "url.scheme": "https", "server.address": "shop.example.com",
           "url.path": "/shoes", "url.query": "utm_source=google&utm_campaign=winter&token=s3cret",
           "http.route": "/shoes", "http.response.status_code": 200, "user_agent.original": IPHONE,
           "client.address": "203.0.113.9", "http.request.header.referer": ("https://www.google.com/",),
           "http.request.header.sec-fetch-dest": ("document",), "http.request.header.sec-fetch-mode": ("navigate",),
           "http.request.header.accept": ("text/html,application/xhtml+xml",),
           "enduser.pseudo.id": "6f1c9b8e-2d4a-4c1e-9f3b-7a5d2e8c1b40"}


def _request(attributes: dict, handler=lambda: None):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /shoes", kind=trace.SpanKind.SERVER, attributes=attributes):
        with tracer.start_as_current_span("handler"):
            handler()
    [local] = TraceAssembler(60).add(memory.get_finished_spans())
    return local


def _convert(attributes: dict, handler=lambda: None, **settings) -> tuple[RequestContext, list[Message]]:
    configured = Settings(token="t", **settings)
    local = _request(attributes, handler)
    context = build_context(local, configured, frozenset(configured.redact_query_params))
    return context, list(EventBuilder(configured).messages(local, context))


def test_the_context_carries_what_every_event_of_the_request_shares():
    context, _ = _convert(REQUEST)
    properties = context.properties
    assert (properties["$browser"], properties["$os"], properties["$device"]) == ("Mobile Safari", "iOS", "iPhone")
    assert properties["$referring_domain"] == "www.google.com" and properties["$search_engine"] == "google"
    assert (properties["utm_source"], properties["utm_campaign"]) == ("google", "winter")
    assert properties["$current_url"] == "https://shop.example.com/shoes?utm_source=google&utm_campaign=winter&token=redacted"
    assert properties["ip"] == "203.0.113.9"
    assert context.device_id == "6f1c9b8e-2d4a-4c1e-9f3b-7a5d2e8c1b40" and context.user_id is None


def test_a_page_view_and_a_business_event_share_the_context_and_identity():
    _, messages = _convert(REQUEST, lambda: otel_mixpanel.track("Viewed Shoes", {"distinct_id": "forged", "n": 2}))
    page_view, business = (m.body for m in messages)
    assert page_view["event"] == "$mp_web_page_view" and business["event"] == "Viewed Shoes"
    assert page_view["properties"]["current_url_path"] == "/shoes"
    for body in (page_view, business):
        assert body["properties"]["distinct_id"] == "$device:6f1c9b8e-2d4a-4c1e-9f3b-7a5d2e8c1b40"
        assert body["properties"]["utm_source"] == "google" and body["properties"]["token"] == "t"
    assert business["properties"]["n"] == 2
    assert page_view["properties"]["$insert_id"] != business["properties"]["$insert_id"]


def test_the_same_spans_give_the_same_messages():
    local = _request(REQUEST, lambda: otel_mixpanel.track("Viewed Shoes"))
    settings = Settings(token="t")
    builder = EventBuilder(settings)
    first = list(builder.messages(local, build_context(local, settings, frozenset())))
    second = list(builder.messages(local, build_context(local, settings, frozenset())))
    assert first == second


def test_login_under_original_id_merge_sends_identify_and_simplified_does_not():
    def login() -> None:
        otel_mixpanel.identify("user-7")

    _, original = _convert(REQUEST, login, id_merge="original")
    identify = [m.body for m in original if m.body["event"] == "$identify"]
    assert len(identify) == 1 and identify[0]["properties"]["distinct_id"] == "user-7"
    _, simplified = _convert(REQUEST, login)
    assert not [m for m in simplified if m.endpoint == EVENTS and m.body["event"] == "$identify"]
    assert all(m.body["properties"]["$user_id"] == "user-7" for m in simplified if m.endpoint == EVENTS)


def test_profile_updates_only_for_known_users():
    _, anonymous = _convert(REQUEST, lambda: otel_mixpanel.set_profile({"plan": "pro"}))
    assert not [m for m in anonymous if m.endpoint == PROFILES]

    def known() -> None:
        otel_mixpanel.set_user("user-7")
        otel_mixpanel.set_profile({"plan": "pro"})

    _, identified = _convert(REQUEST, known)
    [update] = [m.body for m in identified if m.endpoint == PROFILES and "$set" in m.body]
    assert update["$distinct_id"] == "user-7" and update["$set"] == {"plan": "pro"}
    _, opted_in = _convert(REQUEST, lambda: otel_mixpanel.set_profile({"plan": "pro"}), anonymous_profiles=True)
    [anonymous_update] = [m.body for m in opted_in if m.endpoint == PROFILES]
    assert anonymous_update["$distinct_id"] == "$device:6f1c9b8e-2d4a-4c1e-9f3b-7a5d2e8c1b40"


def test_crawlers_send_nothing_unless_asked():
    crawler = {**REQUEST, "user_agent.original": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    context, messages = _convert(crawler, lambda: otel_mixpanel.track("Crawled"))
    assert context.is_bot and messages == []
    _, tracked = _convert(crawler, lambda: otel_mixpanel.track("Crawled"), track_bots=True)
    assert "Crawled" in [m.body["event"] for m in tracked]


GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
FETCH = {"http.request.header.sec-fetch-dest": ("empty",), "http.request.header.sec-fetch-mode": ("cors",),
         "http.request.header.accept": ("application/json",)}


@pytest.mark.parametrize(("changes", "handler", "settings", "skipped"), [
    ({}, lambda: None, {}, False),
    (FETCH, lambda: None, {}, True),
    (FETCH, lambda: otel_mixpanel.track("Added To Cart"), {}, False),
    (FETCH, lambda: otel_mixpanel.set_user("u-1"), {}, True),
    (FETCH, lambda: otel_mixpanel.identify("u-1"), {"id_merge": "original"}, False),
    (FETCH, lambda: (otel_mixpanel.set_user("u-1"), otel_mixpanel.set_profile({"plan": "pro"})), {}, False),
    ({"url.path": "/static/app.js"}, lambda: None, {}, True),
    ({"http.response.status_code": 404}, lambda: None, {}, True),
    ({"user_agent.original": GOOGLEBOT}, lambda: otel_mixpanel.track("Crawled"), {}, True),
    ({"user_agent.original": GOOGLEBOT}, lambda: None, {"track_bots": True}, False),
    ({"user_agent.original": "curl/8.4.0"}, lambda: None, {}, True),
])
def test_requests_that_give_no_message_are_known_before_enrichment(changes, handler, settings, skipped):
    """The exporter enriches only requests ``may_produce`` admits: it must admit every one that gives a message."""
    configured = Settings(token="t", **settings)
    local = _request({**REQUEST, **changes}, handler)
    builder = EventBuilder(configured)
    messages = list(builder.messages(local, build_context(local, configured, frozenset())))
    facts = read_request(local, configured)
    admitted = builder.may_produce(local, facts)
    assert admitted is not skipped
    assert builder.may_produce(local, facts, builder.page_view(facts)) is admitted
    context = build_context(local, configured, frozenset())
    assert list(builder.messages(local, context, builder.page_view(facts))) == messages
    assert admitted or not messages
    assert bool(messages) is not skipped
