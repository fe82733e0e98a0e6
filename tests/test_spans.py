"""Step 1, reading spans: both semantic-convention generations, both header spellings, odd values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.trace import SpanKind

from otel_mixpanel.spans import (
    _read_http, _read_identity, _read_plain_http, _read_plain_identity, read_http, read_identity, request_header,
)

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


@pytest.mark.parametrize("value", [None, "", "   ", b"", (), [None], 12.5, True, "\ud800", "x" * 100_000,
                                   float("inf"), float("-inf"), float("nan"), pytest.param(10**400, id="huge-int")])
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
    assert read_identity({"geo.location.lat": 10**400, "geo.location.lon": 13.4})[2] is None


# --- The plain-span fast paths give exactly what the general readers give ---------------------------------

class _Text(str):
    """A str subclass, as a hand-set attribute may hold: never taken as plain text."""

    def __str__(self) -> str:
        return "converted"


HEADER_KEYS = [f"http.{side}.header.{name}" for side, name in (
    ("request", "referer"), ("request", "accept"), ("request", "user-agent"), ("request", "user_agent"),
    ("request", "sec-fetch-dest"), ("request", "sec_fetch_dest"), ("request", "sec-fetch-mode"),
    ("request", "sec_fetch_mode"), ("response", "content-type"), ("response", "content_type"))]
HTTP_KEYS = sorted({*OLD, *STABLE, "http.url", "url.full", "http.server_name", "net.host.name", "http.client_ip",
                    "user_agent.synthetic.type", *HEADER_KEYS})
IDENTITY_KEYS = ["enduser.id", "enduser.pseudo.id", "user.id", "geo.location.lat", "geo.location.lon",
                 "otel_mixpanel.job.request_user_id"]
PLAIN_VALUES = st.sampled_from(["GET", "post", "HTTPS", "shop.example.com", "/p/1", "utm_source=x", "Mozilla/5.0 (X11)",
                                "203.0.113.9", "text/html", "document", "navigate", "d-1", "u-1", "a b"])
ODD_VALUES = st.one_of(
    st.sampled_from(["", " ", " x", "x ", "\tx", "x\n", "\x1fx", "é", "\ud800", "null", "N/A", "0", "x" * 201,
                     "00000000-0000-0000-0000-000000000000"]),
    st.text(max_size=12), st.integers(-1, 600), st.booleans(), st.floats(), st.binary(max_size=4),
    st.builds(_Text, st.text(max_size=4)),
    st.lists(st.one_of(PLAIN_VALUES, st.text(max_size=4), st.integers()), max_size=3).map(tuple),
    st.lists(PLAIN_VALUES, max_size=2),
)
HEADER_VALUES = st.one_of(PLAIN_VALUES.map(lambda value: (value,)), PLAIN_VALUES)


def _spans(keys: list[str], base: dict[str, object]) -> st.SearchStrategy[dict[str, object]]:
    """Usual spans (the base, with headers and ids as instrumentation records them), some of their
    attributes dropped, and others set to plain or odd values."""
    extra = st.dictionaries(st.sampled_from(keys), st.one_of(PLAIN_VALUES, HEADER_VALUES, ODD_VALUES), max_size=4)
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=3)
    return st.builds(lambda drop, add: {**{k: v for k, v in base.items() if k not in drop}, **add}, dropped, extra)


USUAL_HTTP = [OLD, STABLE, {**OLD, **STABLE},
              {**OLD, "url.path": "/p/1", "http.request.header.accept": ("text/html",),
               "http.request.header.sec-fetch-dest": ("document",), "http.response.header.content-type": ("text/html",)}]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(USUAL_HTTP).flatmap(lambda base: _spans(HTTP_KEYS, base)))
def test_plain_http_reading_agrees_with_the_general_reading(attributes):
    plain = _read_plain_http(attributes)
    if plain is not None:
        general = _read_http("GET /p/2", attributes)
        assert plain == general and list(map(type, plain)) == list(map(type, general))


@pytest.mark.parametrize("attributes", USUAL_HTTP[1:], ids=["stable", "dup", "old-with-path-and-headers"])
def test_usual_spans_take_the_plain_path(attributes):
    assert _read_plain_http(attributes) == _read_http("GET /p/2", attributes) != None  # noqa: E711


USUAL_IDENTITY = {"enduser.pseudo.id": "d-1", "enduser.id": "u-1"}


@settings(max_examples=400, deadline=None)
@given(_spans(IDENTITY_KEYS, USUAL_IDENTITY))
def test_plain_identity_reading_agrees_with_the_general_reading(attributes):
    plain = _read_plain_identity(attributes)
    if plain is not None:
        general = _read_identity(attributes)
        assert plain == general and list(map(type, plain)) == list(map(type, general))


def test_usual_identities_take_the_plain_path():
    for attributes in ({}, USUAL_IDENTITY, {"enduser.pseudo.id": "d-1"}, {"user.id": "u-1"}):
        assert _read_plain_identity(attributes) == _read_identity(attributes)
