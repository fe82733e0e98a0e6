"""Step 1, reading spans: both semantic-convention generations, both header spellings, odd values."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind

from otel_mixpanel.spans import read_http, read_identity, request_header

OLD = {"http.method": "GET", "http.scheme": "https", "http.host": "shop.example.com", "http.target": "/p/1?utm_source=x",
       "http.route": "/p/<id>", "http.status_code": 200, "http.user_agent": "UA/1", "net.peer.ip": "203.0.113.9"}
STABLE = {"http.request.method": "GET", "url.scheme": "https", "server.address": "shop.example.com",
          "url.path": "/p/1", "url.query": "utm_source=x", "http.route": "/p/<id>",
          "http.response.status_code": 200, "user_agent.original": "UA/1", "client.address": "203.0.113.9"}


@pytest.mark.parametrize("attributes", [OLD, STABLE, {**OLD, **STABLE}], ids=["old", "stable", "dup"])
def test_both_generations_read_the_same_request(attributes):
    facts = read_http("GET /p/<id>", SpanKind.SERVER, attributes)
    assert facts is not None
    assert (facts.method, facts.scheme, facts.host, facts.path, facts.query) == \
        ("GET", "https", "shop.example.com", "/p/1", "utm_source=x")
    assert (facts.route, facts.status_code, facts.user_agent, facts.peer_address) == \
        ("/p/<id>", 200, "UA/1", "203.0.113.9")


def test_only_server_spans_with_a_method_are_requests():
    assert read_http("GET", SpanKind.CLIENT, STABLE) is None
    assert read_http("GET", SpanKind.INTERNAL, STABLE) is None
    assert read_http("job", SpanKind.SERVER, {"url.path": "/"}) is None


def test_the_full_url_fills_what_is_missing():
    facts = read_http("GET", SpanKind.SERVER, {"http.method": "get", "http.url": "http://a.example:8080/x?y=1"})
    assert facts is not None
    assert (facts.method, facts.scheme, facts.host, facts.path, facts.query) == \
        ("GET", "http", "a.example:8080", "/x", "y=1")


def test_wsgiref_stable_mode_path_comes_from_the_span_name():
    facts = read_http("GET /pricing", SpanKind.SERVER, {"http.request.method": "GET"})
    assert facts is not None and facts.path == "/pricing" and facts.query is None


@pytest.mark.parametrize("key", ["http.request.header.referer"])
def test_captured_headers_in_either_spelling_and_shape(key):
    for spelled in (key, key.replace("-", "_")):
        for value in (("https://ref.example/",), ["https://ref.example/"], "https://ref.example/"):
            facts = read_http("GET /", SpanKind.SERVER, {**STABLE, spelled: value})
            assert facts is not None and facts.referer == "https://ref.example/"


def test_forwarded_headers_keep_every_value():
    attributes = {**STABLE, "http.request.header.x_forwarded_for": ("1.1.1.1", "2.2.2.2")}
    assert request_header(attributes, "x-forwarded-for") == ("1.1.1.1", "2.2.2.2")
    assert request_header({"http.request.header.forwarded": "for=1.1.1.1"}, "forwarded") == ("for=1.1.1.1",)
    assert request_header(attributes, "x-real-ip") == ()


@pytest.mark.parametrize("value", [None, "", "   ", b"", (), [None], 12.5, True, "\ud800", "x" * 100_000])
def test_odd_values_never_raise(value):
    attributes = {**STABLE, "user_agent.original": value, "url.path": value, "http.response.status_code": value,
                  "client.address": value, "enduser.id": value, "enduser.pseudo.id": value,
                  "geo.location.lat": value, "geo.location.lon": value}
    facts = read_http("GET /", SpanKind.SERVER, attributes)
    assert facts is not None
    if facts.user_agent is not None:
        facts.user_agent.encode("utf-8")
    read_identity(attributes)


def test_identity_from_either_user_attribute_and_placeholders_are_nobody():
    assert read_identity({"enduser.id": "u-1", "enduser.pseudo.id": "d-1"})[:2] == ("d-1", "u-1")
    assert read_identity({"user.id": 42})[:2] == (None, "42")
    assert read_identity({"enduser.id": "null", "enduser.pseudo.id": "N/A"})[:2] == (None, None)
    assert len(read_identity({"enduser.id": "é" * 500}).user_id.encode()) <= 200


def test_location_needs_both_finite_coordinates():
    assert read_identity({"geo.location.lat": 52.5, "geo.location.lon": "13.4"})[2:] == (52.5, 13.4)
    assert read_identity({"geo.location.lat": float("nan"), "geo.location.lon": 13.4})[2] is None
    assert read_identity({"geo.location.lat": True, "geo.location.lon": 13.4})[2] is None
