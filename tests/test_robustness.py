"""Whatever the attributes hold, export() never raises, and what is sent stays within Mixpanel's limits."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

import otel_mixpanel
from conftest import DESKTOP_CHROME, quick_delivery, record_spans, text_app
from otel_mixpanel.limits import json_safe, truncate_utf8
from otel_mixpanel.testing.ingest_server import IngestServer

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(), st.binary(max_size=300), st.text(min_size=200, max_size=2000),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=6)),
    max_leaves=20,
)
attribute_maps = st.dictionaries(st.text(max_size=30), values, max_size=12)
odd_text = st.one_of(st.text(), st.sampled_from([
    "", " ", "999.999.999.999", "::ffff:not-ip", "[::1", "unknown", "_hidden", "for=", '"', "%zz", "http://[::1",
    "http://exa mple.com/a b?x=%", "//no-scheme", "javascript:alert(1)", "a" * 5000, "\x00\ud800",
]))
HTTP_KEYS = ["http.method", "http.request.method", "http.target", "http.url", "url.path", "url.query", "url.full",
             "http.host", "server.address", "http.scheme", "url.scheme", "http.user_agent", "user_agent.original",
             "client.address", "net.peer.ip", "http.client_ip", "http.status_code", "http.response.status_code",
             "http.route", "http.request.header.x-forwarded-for", "http.request.header.x_forwarded_for",
             "http.request.header.forwarded", "http.request.header.referer", "enduser.id", "enduser.pseudo.id",
             "user.id", "geo.location.lat", "geo.location.lon", "user_agent.synthetic.type"]
http_attribute_maps = st.dictionaries(st.sampled_from(HTTP_KEYS), st.one_of(odd_text, values), max_size=len(HTTP_KEYS))


@pytest.fixture(scope="module")
def delivered():
    """One exporter for many examples, delivering to a server that validates like Mixpanel's strict mode."""
    with IngestServer() as server:
        exporter = otel_mixpanel.MixpanelSpanExporter(**quick_delivery(endpoint=server.url))
        yield exporter, server
        exporter.shutdown(5000)


def finished_spans(span_attributes, event_attributes, kind=SpanKind.SERVER, name="GET /x"):
    def request(tracer):
        with tracer.start_as_current_span(name, kind=kind) as root:
            root.set_attributes(span_attributes)
            with tracer.start_as_current_span("child") as child:
                child.add_event("Fuzzed", attributes=event_attributes)
                otel_mixpanel.set_profile(event_attributes)

    return record_spans(request)


def export_and_deliver(exporter, server, spans):
    before = len(server.requests)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.force_flush(5000)
    answers = [r.answered for r in server.requests[before:]]
    assert set(answers) <= {200}, f"Mixpanel would refuse part of it: {server.rejected[-3:]}"
    return server.requests[before:]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(http_attribute_maps, attribute_maps)
def test_export_never_raises_and_mixpanel_accepts_what_is_sent(delivered, span_attributes, event_attributes):
    exporter, server = delivered
    spans = finished_spans({"http.method": "GET", **span_attributes}, event_attributes)
    for request in export_and_deliver(exporter, server, spans):
        for record in request.records:
            properties = record.get("properties", record.get("$set", {}))
            assert len(properties) < 255
            assert all(math.isfinite(v) for v in properties.values() if isinstance(v, float))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attribute_maps)
def test_export_of_non_http_spans_never_raises(delivered, attributes):
    exporter, server = delivered
    spans = finished_spans(attributes, attributes, kind=SpanKind.INTERNAL, name="job")
    requests = export_and_deliver(exporter, server, spans)
    assert any(record.get("event") == "Fuzzed" for request in requests for record in request.records)


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_truncation_keeps_whole_characters(text, limit):
    cut = truncate_utf8(text, limit)
    encoded = cut.encode("utf-8")
    assert len(encoded) <= limit
    assert text.encode("utf-8", "replace").decode("utf-8").startswith(cut)


def test_json_safe_handles_every_attribute_shape():
    assert json_safe(b"\xffbytes") == "\ufffdbytes"
    assert json_safe(float("nan")) is None and json_safe(float("inf")) is None
    assert json_safe(2**70) == str(2**70)
    assert json_safe(("a", 1, None)) == ["a", 1, None]
    assert json_safe({"a": {"b": {"c": {"d": 1}}}}) == {"a": {"b": {"c": "{'d': 1}"}}}
    big = json_safe(["x" * 200] * 100)
    assert len(json.dumps(big)) <= 8 * 1024 and len(big) > 0
    assert json_safe(object.__new__(type("Odd", (), {"__str__": lambda self: 1 / 0}))) == "<Odd>"


def test_too_many_properties_keeps_identity_and_dedup_fields(site_factory, ingest):
    from opentelemetry import trace

    def app(environ, start_response):
        span = trace.get_current_span()
        span.set_attribute("enduser.id", "u-1")
        span.add_event("Wide", {f"p{n:03d}": n for n in range(400)})
        return text_app(environ, start_response)

    # The SDK keeps 128 attributes per event unless told otherwise; let all 400 reach the exporter.
    os.environ["OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"] = "1000"
    site = site_factory(app)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [wide] = [e for e in ingest.events() if e["event"] == "Wide"]
    props = wide["properties"]
    assert len(props) == 254
    assert props["distinct_id"] == "u-1" and props["$insert_id"] and props["time"] and props["token"]


def test_huge_values_and_malformed_headers_do_not_cost_other_events(site_factory, ingest):
    from opentelemetry import trace

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/fine":
            return text_app(environ, start_response)
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", "d" * 10_000)
        span.set_attribute("http.request.header.x-forwarded-for", "not-an-ip, , ::::")
        span.add_event("Big", {"blob": "é" * 100_000, "raw": b"\x00\xff" * 1000})
        return text_app(environ, start_response)

    site = site_factory(app, trusted_proxies="1")
    site.request("/", headers={"User-Agent": "Mozilla/5.0 " + "(" * 3000, "Referer": "http://[::1"})
    site.request("/fine", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    names = sorted(e["event"] for e in ingest.events())
    assert names == ["$mp_web_page_view", "$mp_web_page_view", "Big"]
    [big] = [e for e in ingest.events() if e["event"] == "Big"]
    assert len(big["properties"]["blob"].encode()) <= 255
    assert big["properties"]["ip"] == "0", "an unusable forwarded address is not replaced by a guess"


def test_spans_made_by_hand_convert_like_the_sdks(delivered):
    """Spans whose attributes are a plain dict (built by hand, or by another SDK) take the
    copying path where the SDK's spans are read in place: the events must be the same."""
    from opentelemetry.sdk.trace import ReadableSpan

    exporter, server = delivered
    attributes = {"http.method": "GET", "http.target": "/shoes?utm_source=news", "http.host": "shop.example",
                  "http.scheme": "https", "http.status_code": 200, "net.peer.ip": "203.0.113.9",
                  "http.user_agent": DESKTOP_CHROME, "http.request.header.accept": ("text/html",),
                  "enduser.pseudo.id": "d-1"}

    def request(tracer):
        with tracer.start_as_current_span("GET /shoes", kind=SpanKind.SERVER) as span:
            span.set_attributes(attributes)

    [sdk_span] = record_spans(request)
    by_hand = ReadableSpan(name=sdk_span.name, context=sdk_span.context, parent=None, attributes=dict(attributes),
                           kind=SpanKind.SERVER, start_time=sdk_span.start_time, end_time=sdk_span.end_time)
    [from_sdk] = [r for q in export_and_deliver(exporter, server, [sdk_span]) for r in q.records]
    [from_hand] = [r for q in export_and_deliver(exporter, server, [by_hand]) for r in q.records]
    assert from_hand == from_sdk
    assert from_sdk["properties"]["utm_source"] == "news" and from_sdk["properties"]["ip"] == "203.0.113.9"


def test_serialisation_falls_back_to_json_for_what_orjson_refuses():
    from otel_mixpanel.admission import dumps as _dumps

    class Key(str):
        pass

    body = {"event": "x", "properties": {Key("plan"): "pro", "big": 2**70}}
    assert json.loads(_dumps(body)) == {"event": "x", "properties": {"plan": "pro", "big": 2**70}}
    assert json.loads(_dumps({"event": "é", "properties": {"n": 1.5}})) == {"event": "é", "properties": {"n": 1.5}}
