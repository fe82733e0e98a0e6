"""The web middleware behind the real instrumentation, over real loopback HTTP.

Spans are read from an InMemorySpanExporter, so these tests check what the middleware
records for the exporter, not the exporter's mapping (tests/test_examples.py does that).
"""

from __future__ import annotations

import http.cookiejar
import json
import threading
import urllib.parse
import urllib.request
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_mixpanel import api
from otel_mixpanel.testing.ingest_server import stop_serving
from otel_mixpanel.web import MixpanelMiddleware, current_device_id, reset_device_id
from otel_mixpanel.web.device_id import (
    DeviceIdOptions,
    cookie_header,
    is_secure_request,
    js_device_id,
    parse_cookies,
    resolve_device,
    valid_device_id,
)

IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
COOKIE = "otel_mp_device_id"
# The WSGI environ's share of a request from IPHONE_UA.
PHONE = {"HTTP_USER_AGENT": IPHONE_UA}
UUID4 = "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f"


# Requests that test servers have accepted and not finished handling, across every server of the module.
_handling = threading.Condition()
_in_flight = 0


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """Counts requests until their handler returns: the server span ends when the response is closed,
    which can be after the client has read the whole answer."""

    daemon_threads = True

    def process_request(self, request, client_address):
        global _in_flight
        with _handling:
            _in_flight += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        global _in_flight
        try:
            super().process_request_thread(request, client_address)
        finally:
            with _handling:
                _in_flight -= 1
                _handling.notify_all()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        stop_serving(server)


class Browser:
    """Keeps cookies between requests, as a browser does; no redirects followed."""

    def __init__(self, user_agent: str = IPHONE_UA) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.user_agent = user_agent

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def get(self, url: str, headers: dict[str, str] | None = None, data: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(url, data=body, headers={"User-Agent": self.user_agent, **(headers or {})})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def cookie(self, name: str = COOKIE) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


@pytest.fixture()
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def server_spans(exporter: InMemorySpanExporter):
    """Server spans in request order, once every request made so far has been handled. They end when the
    server closes the response, which can be after the client, already answered, has sent its next
    request: their order of ending can differ."""
    with _handling:
        assert _handling.wait_for(lambda: _in_flight == 0, timeout=10), "a request is still being handled"
    return sorted((s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER), key=lambda s: s.start_time)


def hello_app(environ, start_response):
    api.track("Hello", {"path": environ.get("PATH_INFO", "")})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(current_device_id()).encode()]


def lazy_app(environ, start_response):
    """start_response is called only when iteration starts, after the app returned."""
    def body():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"lazy"
    return body()


# --- cookie logic -------------------------------------------------------------------------


def test_parse_cookies_is_lenient_and_keeps_cookies_after_a_broken_part():
    cookies = parse_cookies('a=1; broken; =x; b="two"; c=; a=3; ;;')
    assert cookies == {"a": ("1", "3"), "b": ("two",), "c": ("",)}
    assert parse_cookies(None) == {} and parse_cookies(b"a=1") == {}


def test_parsed_cookies_are_shared_read_only_and_long_headers_are_parsed_alike():
    header = "otel_mp_device_id=3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f; session=abc"
    first = parse_cookies(header)
    with pytest.raises(TypeError):
        first["session"] = ("forged",)  # type: ignore[index]
    assert parse_cookies(header) == first and first["session"] == ("abc",)
    long_header = "; ".join(f"c{index}=" + "v" * 60 for index in range(80)) + "; a=1; a=2"
    assert len(long_header) > 4096
    assert parse_cookies(long_header)["a"] == ("1", "2") and len(parse_cookies(long_header)) == 81


@pytest.mark.parametrize("value, expected", [
    (UUID4, UUID4),
    (UUID4.upper(), UUID4.upper()),
    ("18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2", "18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2"),
    ("abc", None),
    ("-".join(["f" * 32] * 4), None),
    (" " + UUID4 + " ", UUID4),
    ("00000000-0000-0000-0000-000000000000", None),
    ("not-a-uuid", None),
    (UUID4 + "g", None),
    (UUID4.replace("-", "_"), None),
    (UUID4 + "; Path=/", None),
    ("", None),
    (None, None),
])
def test_own_cookie_validation(value, expected):
    assert valid_device_id(value) == expected


def _js_cookie(payload) -> str:
    return urllib.parse.quote(json.dumps(payload))


@pytest.mark.parametrize("payload, expected", [
    ({"distinct_id": "$device:18f-abc", "$device_id": "18f-abc"}, "18f-abc"),
    ({"distinct_id": "$device:18f-0ab"}, "18f-0ab"),
    ({"distinct_id": "$device:18f-xyz"}, None),
    ({"distinct_id": "user-42", "$device_id": "18f-abc", "$user_id": "user-42"}, "18f-abc"),
    ({"distinct_id": "user-42"}, None),
    ({"$device_id": "null"}, None),
    ({"$device_id": "<script>"}, None),
    ({"$device_id": "a" * 500}, None),
    ({"$device_id": 5}, None),
    (["$device_id"], None),
])
def test_js_sdk_cookie_forms(payload, expected):
    options = DeviceIdOptions.build(environ={}, mixpanel_token="tok")
    assert js_device_id({"mp_tok_mixpanel": [_js_cookie(payload)]}, options) == expected


def test_js_sdk_cookie_name_follows_the_token():
    cookies = {"mp_other_mixpanel": [_js_cookie({"$device_id": "d0-0ee"})],
               "mp_tok_mixpanel": [_js_cookie({"$device_id": "d0-70c"})]}
    assert js_device_id(cookies, DeviceIdOptions.build(environ={"OTEL_EXPORTER_MIXPANEL_TOKEN": "tok"})) == "d0-70c"
    assert js_device_id(cookies, DeviceIdOptions.build(environ={}, js_cookie_name="mp_other_mixpanel")) == "d0-0ee"
    # Without a token any mp_*_mixpanel cookie is taken.
    assert js_device_id(cookies, DeviceIdOptions.build(environ={})) in ("d0-0ee", "d0-70c")
    assert js_device_id({"mp_tok_mixpanel": ["%7Bnot json"]}, DeviceIdOptions.build(environ={})) is None


def test_resolution_order_js_then_own_cookie_then_new():
    options = DeviceIdOptions.build(environ={}, mixpanel_token="tok")
    js = f"mp_tok_mixpanel={_js_cookie({'$device_id': '0d3e4f-4c657b58'})}"
    both = resolve_device({**PHONE, "HTTP_COOKIE": f"{COOKIE}={UUID4}; {js}"}, options)
    assert (both.device_id, both.source, both.cookie_needed) == ("0d3e4f-4c657b58", "mixpanel-js", True)
    same = resolve_device({**PHONE, "HTTP_COOKIE": f"{COOKIE}=0d3e4f-4c657b58; {js}"}, options)
    assert not same.cookie_needed
    # Once the JS SDK's cookie is gone, ours still holds its id.
    followed = resolve_device({**PHONE, "HTTP_COOKIE": f"{COOKIE}=0d3e4f-4c657b58"}, options)
    assert (followed.device_id, followed.source, followed.cookie_needed) == ("0d3e4f-4c657b58", "cookie", False)
    own = resolve_device({**PHONE, "HTTP_COOKIE": f"{COOKIE}=garbage; {COOKIE}={UUID4}"}, options)
    assert (own.device_id, own.source, own.cookie_needed) == (UUID4, "cookie", False)
    fresh = resolve_device({**PHONE, "HTTP_COOKIE": f"{COOKIE}=garbage"}, options)
    assert fresh.source == "new" and fresh.cookie_needed and valid_device_id(fresh.device_id)
    ignored = resolve_device({**PHONE, "HTTP_COOKIE": js},
                             DeviceIdOptions.build(environ={}, reuse_js_device_id=False))
    assert ignored.source == "new"


def test_cookie_header_defaults_and_options():
    default = cookie_header(DeviceIdOptions.build(environ={}), UUID4, secure_request=False)
    assert default.startswith(f"{COOKIE}={UUID4}; Max-Age=31536000; Expires=")
    assert "; Path=/" in default and "; HttpOnly" in default and default.endswith("; SameSite=Lax")
    assert "Secure" not in default and "Domain" not in default
    assert "; Secure" in cookie_header(DeviceIdOptions.build(environ={}), UUID4, secure_request=True)
    custom = cookie_header(DeviceIdOptions.build(environ={}, cookie_name="did", max_age=60, domain=".example.com",
                                                 path="/app", secure=True, httponly=False, samesite="strict"),
                           UUID4, secure_request=False)
    assert custom.startswith(f"did={UUID4}; Max-Age=60; Expires=")
    assert "; Path=/app; Domain=.example.com; Secure; SameSite=Strict" in custom and "HttpOnly" not in custom
    assert "; Secure" in cookie_header(DeviceIdOptions.build(environ={}, samesite="None"), UUID4, False)


@pytest.mark.parametrize("options", [
    {"cookie_name": "bad name"}, {"cookie_name": ""}, {"max_age": 0}, {"max_age": True},
    {"samesite": "sometimes"}, {"samesite": None}, {"samesite": "None", "secure": False},
    {"domain": "a.com; evil"}, {"path": "app"}, {"path": "/a b"},
])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError):
        DeviceIdOptions.build(environ={}, **options)
    with pytest.raises(TypeError):
        DeviceIdOptions.build(environ={}, cookie_nmae="typo")


@pytest.mark.parametrize("environ, secure", [
    ({"wsgi.url_scheme": "https"}, True),
    ({"wsgi.url_scheme": "http"}, False),
    ({"HTTP_X_FORWARDED_PROTO": "https, http"}, True),
    ({"HTTP_FORWARDED": "for=1.2.3.4;proto=https;host=x"}, True),
    ({"HTTP_FORWARDED": "for=1.2.3.4;proto=http, for=5.6.7.8;proto=https"}, False),
])
def test_secure_request_detection(environ, secure):
    assert is_secure_request(environ) is secure


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=100))
def test_any_cookie_header_gives_a_usable_id(header, forwarded):
    state = resolve_device({**PHONE, "HTTP_COOKIE": header, "HTTP_FORWARDED": forwarded,
                            "HTTP_X_FORWARDED_PROTO": forwarded}, DeviceIdOptions.build(environ={}))
    assert state.device_id and state.device_id.lower() not in ("null", "undefined", "0")
    assert "\n" not in state.set_cookie_header(DeviceIdOptions.build(environ={}))


# --- plain WSGI with opentelemetry-instrumentation-wsgi, both orders ------------------------


def _wsgi_stack(app, provider, order: str, **options):
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    if order == "mixpanel-inside":
        return OpenTelemetryMiddleware(MixpanelMiddleware(app, **options), tracer_provider=provider)
    return MixpanelMiddleware(OpenTelemetryMiddleware(app, tracer_provider=provider), **options)


@pytest.mark.parametrize("order", ["mixpanel-inside", "mixpanel-outside"])
@pytest.mark.parametrize("app", [hello_app, lazy_app], ids=["eager", "lazy-start-response"])
def test_wsgi_device_cookie_and_span_attributes(spans, order, app):
    provider, exporter = spans
    browser = Browser()
    with serve(_wsgi_stack(app, provider, order)) as url:
        status, headers, _ = browser.get(url + "/landing?utm_source=google&utm_medium=cpc", headers={
            "Referer": "https://www.google.com/",
            "X-Forwarded-For": "203.0.113.7, 10.0.0.2",
            "Forwarded": "for=203.0.113.7;host=shop.example",
            "Authorization": "Bearer secret",
            "Accept": "text/html,*/*;q=0.8",
            "Sec-Fetch-Dest": "document",
            "Sec-Fetch-Mode": "navigate",
        })
        assert status == 200
        set_cookies = [v.split("=")[0] for k, v in headers.items() if k.lower() == "set-cookie"]
        device = browser.cookie()
        assert set_cookies == [COOKIE, "otel_mp_first_touch"] and valid_device_id(device) == device
        _, headers, _ = browser.get(url + "/second")
        assert "Set-Cookie" not in headers

    first, second = server_spans(exporter)
    for span in (first, second):
        assert span.attributes["enduser.pseudo.id"] == device
        assert not [k for k in span.attributes if "cookie" in k.lower() or "authorization" in k.lower()]
    assert first.attributes["http.request.header.referer"] == ("https://www.google.com/",)
    assert first.attributes["http.request.header.x-forwarded-for"] == ("203.0.113.7, 10.0.0.2",)
    assert first.attributes["http.request.header.forwarded"] == ("for=203.0.113.7;host=shop.example",)
    assert first.attributes["http.request.header.accept"] == ("text/html,*/*;q=0.8",)
    assert first.attributes["http.request.header.sec-fetch-dest"] == ("document",)
    assert first.attributes["http.request.header.sec-fetch-mode"] == ("navigate",)
    # Recorded when the application answers, in either order and however late it calls start_response.
    assert first.attributes["http.response.header.content-type"] == ("text/plain",)
    assert "http.request.header.sec-fetch-dest" not in second.attributes
    assert first.attributes["url.path"] == "/landing"
    assert first.attributes["url.query"] == "utm_source=google&utm_medium=cpc"
    assert second.attributes["url.path"] == "/second" and "url.query" not in second.attributes
    assert "http.request.header.referer" not in second.attributes
    if app is hello_app:
        assert [e.name for e in first.events] == ["Hello"]


def test_url_path_recorded_by_the_instrumentation_is_kept(spans):
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    provider, exporter = spans

    def hook(span, environ):
        span.set_attribute("url.path", "/as-instrumented")

    app = OpenTelemetryMiddleware(MixpanelMiddleware(hello_app), tracer_provider=provider, request_hook=hook)
    with serve(app) as url:
        Browser().get(url + "/caf%C3%A9?q=1")
    (span,) = server_spans(exporter)
    assert span.attributes["url.path"] == "/as-instrumented" and "url.query" not in span.attributes


def test_non_ascii_path_is_percent_encoded_again(spans):
    provider, exporter = spans
    with serve(_wsgi_stack(hello_app, provider, "mixpanel-inside")) as url:
        Browser().get(url + "/caf%C3%A9/a%20b")
    (span,) = server_spans(exporter)
    assert span.attributes["url.path"] == "/caf%C3%A9/a%20b"


@pytest.mark.parametrize("cookie", [
    f"{COOKIE}=not-a-uuid",
    f"{COOKIE}=00000000-0000-0000-0000-000000000000",
    f'{COOKIE}="{"x" * 5000}"',
    "\x00\x01; ;;==; =; a",
    f"mp_tok_mixpanel=%7B%22%24device_id%22%3A%20%22%3Cscript%3E%22%7D; {COOKIE}=%%%",
])
def test_malformed_cookies_get_a_new_id(spans, cookie):
    provider, exporter = spans
    with serve(_wsgi_stack(hello_app, provider, "mixpanel-inside")) as url:
        status, headers, body = Browser().get(url + "/", headers={"Cookie": cookie, "Referer": "\t"})
    assert status == 200
    new_id = body.strip()
    assert valid_device_id(new_id) == new_id and f"{COOKIE}={new_id};" in headers["Set-Cookie"]
    (span,) = server_spans(exporter)
    assert span.attributes["enduser.pseudo.id"] == new_id
    assert "http.request.header.referer" not in span.attributes


def test_js_sdk_device_id_is_reused_and_our_cookie_follows_it(spans):
    provider, exporter = spans
    js_cookie = f"mp_tok_mixpanel={_js_cookie({'distinct_id': '$device:18f0a-4c65-0e1', '$device_id': '18f0a-4c65-0e1'})}"
    with serve(_wsgi_stack(hello_app, provider, "mixpanel-outside", mixpanel_token="tok")) as url:
        _, headers, body = Browser().get(url + "/", headers={"Cookie": f"{COOKIE}={UUID4}; {js_cookie}"})
    assert body == "18f0a-4c65-0e1"
    assert headers["Set-Cookie"].startswith(f"{COOKIE}=18f0a-4c65-0e1;")
    assert server_spans(exporter)[0].attributes["enduser.pseudo.id"] == "18f0a-4c65-0e1"


def test_https_behind_a_proxy_gets_a_secure_cookie(spans):
    provider, _ = spans
    with serve(_wsgi_stack(hello_app, provider, "mixpanel-inside")) as url:
        _, headers, _ = Browser().get(url + "/", headers={"X-Forwarded-Proto": "https"})
    assert "; Secure" in headers["Set-Cookie"]


@pytest.mark.parametrize("user_agent", ["kube-probe/1.29", "curl/8.4.0", "", None])
def test_automated_clients_are_given_no_device_id(user_agent):
    options = DeviceIdOptions.build(environ={})
    environ = {} if user_agent is None else {"HTTP_USER_AGENT": user_agent}
    state = resolve_device(environ, options)
    assert (state.device_id, state.source, state.cookie_needed) == (None, "none", False)
    assert state.set_cookie_header(options) is None
    # An id the client presents is still its own.
    kept = resolve_device({**environ, "HTTP_COOKIE": f"{COOKIE}={UUID4}"}, options)
    assert (kept.device_id, kept.source, kept.cookie_needed) == (UUID4, "cookie", False)


def test_helpers_outside_a_request():
    assert current_device_id() is None
    with pytest.raises(RuntimeError):
        reset_device_id()


# --- Flask ---------------------------------------------------------------------------------


def _flask_app(provider, order: str):
    import flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from otel_mixpanel.web.flask import MixpanelFlask

    app = flask.Flask(__name__)

    @app.post("/login")
    def login():
        api.identify(flask.request.form["user"])
        api.track("Logged In", {"method": "password"})
        api.set_profile({"$name": "Ada"})
        return "welcome"

    @app.get("/logout")
    def logout():
        old = current_device_id()
        new = reset_device_id()
        assert new != old and current_device_id(flask.request) == new
        return old

    @app.get("/")
    def home():
        return current_device_id() or ""

    if order == "instrument-first":
        FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
        MixpanelFlask(app)
    else:
        MixpanelFlask(app)
        FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app


@pytest.mark.parametrize("order", ["instrument-first", "mixpanel-first"])
def test_flask_views_identify_track_and_logout(spans, order):
    provider, exporter = spans
    browser = Browser()
    with serve(_flask_app(provider, order)) as url:
        _, _, device = browser.get(url + "/?utm_source=newsletter", headers={"Referer": "https://duckduckgo.com/"})
        assert browser.cookie() == device
        assert browser.get(url + "/login", data={"user": "u-1"})[2] == "welcome"
        _, headers, logged_out = browser.get(url + "/logout")
        assert logged_out == device and "Set-Cookie" in headers
        _, _, after = browser.get(url + "/")
    assert after != device and browser.cookie() == after

    home, login, logout, home_again = server_spans(exporter)
    assert all(s.name.startswith(("GET", "POST")) for s in (home, login))
    assert home.attributes["enduser.pseudo.id"] == device
    assert home.attributes["http.request.header.referer"] == ("https://duckduckgo.com/",)
    assert home.attributes["url.query"] == "utm_source=newsletter"
    assert login.attributes["enduser.pseudo.id"] == device and login.attributes["enduser.id"] == "u-1"
    assert [e.name for e in login.events] == [api.IDENTIFY_EVENT, "Logged In", api.SET_PROFILE_EVENT]
    assert logout.attributes["enduser.pseudo.id"] == device
    assert home_again.attributes["enduser.pseudo.id"] == after


def test_flask_extension_refuses_a_second_set_up():
    import flask

    from otel_mixpanel.web.flask import MixpanelFlask

    app = flask.Flask(__name__)
    extension = MixpanelFlask()
    extension.init_app(app)
    assert isinstance(app.wsgi_app, MixpanelMiddleware) and app.extensions["otel_mixpanel"] is extension
    with pytest.raises(RuntimeError):
        MixpanelFlask(app)


def test_flask_with_both_wsgi_middleware_and_flask_instrumentor(spans):
    """OpenTelemetry's WSGI middleware outermost: its span is the server span, Flask's a child."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    provider, exporter = spans
    app = _flask_app(provider, "instrument-first")
    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, tracer_provider=provider)
    with serve(app) as url:
        _, _, device = Browser().get(url + "/", headers={"Referer": "https://example.org/"})
    (server,) = server_spans(exporter)
    assert server.attributes["enduser.pseudo.id"] == device
    assert server.attributes["http.request.header.referer"] == ("https://example.org/",)
