"""HTTP server spans from the real WSGI instrumentation become page views, in every semconv mode."""

from __future__ import annotations

import http.client
import logging
import os
import select
import socket

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import otel_mixpanel
from conftest import (DESKTOP_CHROME, GOOGLEBOT, IPHONE, NAVIGATION, SEMCONV_MODES, quick_delivery, text_app,
                      without_volatile)
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.config import ConfigError, Settings
from otel_mixpanel.page_views import HTML_TYPES, _is_static, is_document_load, media_type, prefers_html
from otel_mixpanel.spans import HttpFacts
from otel_mixpanel.web import MixpanelMiddleware
from test_web import Browser, serve

CAMPAIGN_URL = ("/shop/shoes?utm_source=newsletter&utm_medium=email&utm_campaign=winter&utm_content=hero"
                "&utm_term=boots&utm_id=42&gclid=g-1&fbclid=f-1&msclkid=m-1&ttclid=t-1&wbraid=w-1&color=red")
VISIT_HEADERS = {"Host": "shop.example.com", "User-Agent": IPHONE,
                 "Referer": "https://www.google.com/search?q=boots"}


def page_views(ingest, name="$mp_web_page_view"):
    return [e for e in ingest.events() if e["event"] == name]


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_page_view_carries_page_browser_referrer_and_campaign(site_factory, ingest, mode):
    site = site_factory(text_app, mode=mode, capture_headers="referer")
    assert site.request(CAMPAIGN_URL, headers=VISIT_HEADERS)[0] == 200
    site.flush()

    [view] = page_views(ingest)
    props = view["properties"]
    assert props["$current_url"] == "http://shop.example.com" + CAMPAIGN_URL
    assert props["current_url_path"] == "/shop/shoes"
    assert props["current_url_search"] == CAMPAIGN_URL[len("/shop/shoes"):]
    assert props["current_url_protocol"] == "http:"
    assert props["current_domain"] == "shop.example.com"
    assert (props["$browser"], props["$browser_version"], props["$os"], props["$device"]) == (
        "Mobile Safari", 17.1, "iOS", "iPhone")
    assert props["$referrer"] == "https://www.google.com/search?q=boots"
    assert props["$referring_domain"] == "www.google.com"
    assert props["$search_engine"] == "google"
    assert {k: props[k] for k in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "utm_id")} == {
        "utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "winter", "utm_content": "hero",
        "utm_term": "boots", "utm_id": "42"}
    assert {k: props[k] for k in ("gclid", "fbclid", "msclkid", "ttclid", "wbraid")} == {
        "gclid": "g-1", "fbclid": "f-1", "msclkid": "m-1", "ttclid": "t-1", "wbraid": "w-1"}
    assert "color" not in props
    assert props["ip"] == "127.0.0.1"
    assert isinstance(props["time"], int)


def test_same_request_gives_same_event_in_all_three_modes(site_factory, ingest):
    seen = []
    for mode in SEMCONV_MODES:
        site = site_factory(text_app, mode=mode, capture_headers="referer")
        site.request(CAMPAIGN_URL, headers={**VISIT_HEADERS, "Cookie": "a=b"})
        site.flush()
        [view] = page_views(ingest)[len(seen):]
        seen.append(view)
    first = without_volatile(seen[0]["properties"])
    for other in seen[1:]:
        assert without_volatile(other["properties"]) == first
        assert other["event"] == seen[0]["event"]


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_wsgiref_gives_the_path_even_where_the_instrumentation_records_none(site_factory, ingest, mode):
    # wsgiref passes no RAW_URI: the stable mode records no url.path, the old one writes http.url.
    site = site_factory(text_app, mode=mode, server="wsgiref")
    site.request("/docs/intro?utm_source=x", headers={"Host": "docs.example.com", "User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["current_url_path"] == "/docs/intro"
    assert view["properties"]["current_domain"] == "docs.example.com"
    if mode == "http":
        assert "utm_source" not in view["properties"], "the stable mode under wsgiref records no query"
    else:
        assert view["properties"]["utm_source"] == "x"
        assert view["properties"]["$current_url"] == "http://docs.example.com/docs/intro?utm_source=x"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_only_get_requests_are_page_views(site_factory, ingest, method):
    site = site_factory(text_app)
    # No body with HEAD, as browsers send none: werkzeug drains an unread body after the response with a
    # blocking read, which left the request unfinished on a loaded machine.
    body = None if method == "HEAD" else b"x=1"
    site.request("/form", method=method, headers={"User-Agent": DESKTOP_CHROME}, body=body)
    site.request("/form", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    views = page_views(ingest)
    assert len(views) == 1


def head_with_body_app(environ: dict, start_response) -> list[bytes]:
    """An app that answers HEAD with a body, which werkzeug's server sends on."""
    start_response("200 OK", [("Content-Type", "text/html")])
    return [b"<html>ok</html>"]


def test_a_head_request_whose_client_resets_the_connection_still_finishes(site_factory, ingest):
    site = site_factory(head_with_body_app)
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as client:
        client.sendall(b"HEAD /form HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += client.recv(1)
        # Closing with the body's bytes unread resets the connection while werkzeug drains it, and werkzeug
        # then skips the body's close(): the request still counts as finished once its span has ended.
        select.select([client], [], [], 10)
    assert head.startswith(b"HTTP/1.1 200")
    site.request("/form", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert len(page_views(ingest)) == 1


def test_failed_responses_and_static_assets_are_not_page_views(site_factory, ingest):
    site = site_factory(text_app)
    for path in ("/missing/page", "/static/app.js", "/img/logo.PNG", "/favicon.ico", "/fonts/a.woff2", "/pricing"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert [v["properties"]["current_url_path"] for v in page_views(ingest)] == ["/pricing"]


def test_include_and_exclude_rules_and_event_name_are_configurable(site_factory, ingest):
    site = site_factory(text_app, page_view_include=["/app/*", "/"], page_view_exclude=["/app/health*"],
                        page_view_event="Page Viewed")
    for path in ("/", "/app/home", "/app/healthz", "/blog/post"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(v["properties"]["current_url_path"] for v in page_views(ingest, "Page Viewed")) == ["/", "/app/home"]
    assert page_views(ingest) == []


def test_page_views_can_be_turned_off(site_factory, ingest):
    site = site_factory(text_app, page_views=False)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert ingest.events() == []


def test_route_is_carried_when_the_framework_knows_it(site_factory, ingest):
    from opentelemetry import trace

    def routed_app(environ, start_response):
        trace.get_current_span().set_attribute("http.route", "/users/<id>")
        return text_app(environ, start_response)

    site = site_factory(routed_app)
    site.request("/users/17", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["http_route"] == "/users/<id>"
    assert view["event"] == "$mp_web_page_view", "the page is a property, never the event name"


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, "AlwaysOn-Monitor/1.0"])
def test_bots_produce_no_events_unless_asked(site_factory, ingest, user_agent):
    from opentelemetry import trace

    def app(environ, start_response):
        trace.get_current_span().add_event("Searched", {"q": "x"})
        return text_app(environ, start_response)

    site = site_factory(app)
    site.request("/", headers={"User-Agent": user_agent})
    site.flush()
    assert ingest.events() == []

    tracking = site_factory(app, track_bots=True)
    tracking.request("/", headers={"User-Agent": user_agent})
    tracking.flush()
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view", "Searched"]


def test_unknown_user_agent_fields_are_left_out(site_factory, ingest):
    site = site_factory(text_app)
    site.request("/", headers={"User-Agent": "Xyzzy/3.2"})
    site.flush()
    [view] = page_views(ingest)
    props = view["properties"]
    assert not {"$browser", "$os", "$device", "$browser_version"} & props.keys()
    assert "Other" not in props.values()


def test_works_under_simple_span_processor(site_factory, ingest):
    site = site_factory(text_app, processor="simple")
    site.request("/simple", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["$browser"] == "Chrome"
    assert view["properties"]["$os"] == "Windows"


# --- Page views are document loads by people ------------------------------------------------

COOKIE = "otel_mp_device_id"
CHROME_FETCH = {"User-Agent": DESKTOP_CHROME, "Accept": "*/*", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"}
PROBES = ["kube-probe/1.29", "ELB-HealthChecker/2.0", "GoogleHC/1.0", "curl/8.4.0", "python-requests/2.31.0",
          "Go-http-client/1.1", "", None]


def shop_app(environ, start_response):
    """HTML pages, and JSON under /api/; every request also records a business event."""
    otel_mixpanel.track("Looked", {"path": environ["PATH_INFO"]})
    if environ.get("HTTP_IF_NONE_MATCH") == '"v1"':
        start_response("304 Not Modified", [("ETag", '"v1"')])
        return []
    if environ["PATH_INFO"].startswith("/api/"):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"items": []}']
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [b"<!doctype html><title>Shop</title>"]


def web_site(site_factory, **options):
    """The shop behind the web middleware and no header capture: what the middleware records decides."""
    return site_factory(MixpanelMiddleware(shop_app), capture_navigation=False, **options)


def set_cookies(site, path, headers):
    """One GET sent exactly as given: its status and the names of every cookie it sets."""
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, {c.partition("=")[0]: c for c in response.msg.get_all("Set-Cookie") or ()}
    finally:
        connection.close()


def looked(ingest):
    return [e["properties"] for e in ingest.events() if e["event"] == "Looked"]


@pytest.mark.parametrize("headers", [
    {"User-Agent": DESKTOP_CHROME, **NAVIGATION},
    # Safari before 16.4 sends no Sec-Fetch-*: its Accept asks for HTML first.
    {"User-Agent": IPHONE, "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    # Firefox weighs image/avif as high as text/html.
    {"User-Agent": DESKTOP_CHROME, "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,"
                                             "image/avif,image/webp,*/*;q=0.8"},
    # Sec-Fetch-Mode alone (Chrome 76-79 sent no Sec-Fetch-Dest).
    {"User-Agent": DESKTOP_CHROME, "Accept": "*/*", "Sec-Fetch-Mode": "navigate"},
], ids=["sec-fetch", "accept-only", "accept-tie", "mode-only"])
def test_a_browser_loading_a_page_is_one_page_view_with_a_new_device(site_factory, ingest, headers):
    site = web_site(site_factory)
    status, cookies = set_cookies(site, "/products", headers)
    site.flush()
    assert status == 200
    [view] = page_views(ingest)
    assert cookies[COOKIE].startswith(f"{COOKIE}={view['properties']['$device_id']};")
    assert [p["$device_id"] for p in looked(ingest)] == [view["properties"]["$device_id"]]


@pytest.mark.parametrize("path, headers", [
    ("/products", CHROME_FETCH),
    ("/products", {**CHROME_FETCH, "Accept": "application/json", "Sec-Fetch-Mode": "same-origin"}),
    # XHR from a browser that sends no Sec-Fetch-*; axios's default Accept.
    ("/products", {"User-Agent": IPHONE, "Accept": "application/json, text/plain, */*"}),
    ("/products", {"User-Agent": IPHONE, "Accept": "application/json, text/html;q=0.5"}),
    ("/products", {"User-Agent": IPHONE, "Accept": "*/*"}),
    ("/products", {"User-Agent": IPHONE}),
    # An embedded frame is not the page the person is on.
    ("/products", {"User-Agent": DESKTOP_CHROME, **NAVIGATION, "Sec-Fetch-Dest": "iframe"}),
    # A browser navigating to an API URL: the request looks like a page load, the JSON answer is not one.
    ("/api/cart", {"User-Agent": DESKTOP_CHROME, **NAVIGATION}),
], ids=["fetch", "fetch-json", "xhr-axios", "prefers-json", "accept-any", "no-accept", "iframe", "json-response"])
def test_api_calls_are_no_page_views_but_their_business_events_count(site_factory, ingest, path, headers):
    site = web_site(site_factory)
    cookie = f"{COOKIE}=3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f"
    status, cookies = set_cookies(site, path, {**headers, "Cookie": cookie})
    site.flush()
    assert status == 200 and COOKIE not in cookies
    assert page_views(ingest) == []
    [event] = looked(ingest)
    assert event["path"] == path and event["$device_id"] == "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f"


@pytest.mark.parametrize("user_agent", PROBES, ids=lambda ua: "missing" if ua is None else (ua or "empty"))
def test_health_checkers_and_scripts_get_no_page_view_and_no_device(site_factory, ingest, user_agent):
    site = web_site(site_factory)
    # Even asking for HTML as a browser would: the User-Agent says no person is there.
    headers = dict(NAVIGATION) if user_agent is None else {**NAVIGATION, "User-Agent": user_agent}
    for _ in range(2):
        status, cookies = set_cookies(site, "/", headers)
        assert status == 200 and cookies == {}, "no cookie of any kind"
    site.flush()
    assert page_views(ingest) == []
    events = looked(ingest)
    assert len(events) == 2, "their business events are still sent"
    assert not any("$device_id" in p for p in events)
    assert all(p["distinct_id"] == "" for p in events)


def test_a_page_load_answered_not_modified_is_a_page_view(site_factory, ingest):
    # The browser shows its cached copy, and mixpanel-js would run on it as on any load.
    cached = {"User-Agent": DESKTOP_CHROME, "If-None-Match": '"v1"'}
    for options in ({}, {"page_view_detection": "any-get"}):
        site = web_site(site_factory, **options)
        assert site.request("/products", headers={**cached, **NAVIGATION}, navigation=False)[0] == 304
        assert site.request("/products", headers={**cached, **CHROME_FETCH}, navigation=False)[0] == 304
        site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["current_url_path"] == "/products"
    assert len(looked(ingest)) == 4


def test_a_script_keeps_a_device_id_it_presents(site_factory, ingest):
    site = web_site(site_factory)
    device = "18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2"
    site.request("/", headers={"User-Agent": "curl/8.4.0", "Cookie": f"{COOKIE}={device}"})
    site.flush()
    assert [p["$device_id"] for p in looked(ingest)] == [device]


def test_any_get_counts_every_successful_get_except_automated_clients(site_factory, ingest):
    site = web_site(site_factory, page_view_detection="any-get")
    site.request("/products", headers=CHROME_FETCH, navigation=False)
    site.request("/api/cart", headers={"User-Agent": IPHONE, "Accept": "application/json"}, navigation=False)
    site.request("/", headers={"User-Agent": "kube-probe/1.29"}, navigation=False)
    site.flush()
    assert sorted(v["properties"]["current_url_path"] for v in page_views(ingest)) == ["/api/cart", "/products"]
    assert len(looked(ingest)) == 3


def test_detection_is_a_setting_checked_at_start(site_factory):
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_MIXPANEL_PAGE_VIEW_DETECTION"):
        Settings.load(environ={"OTEL_EXPORTER_MIXPANEL_TOKEN": "t", "OTEL_EXPORTER_MIXPANEL_PAGE_VIEW_DETECTION": "all"})
    loaded = Settings.load(environ={"OTEL_EXPORTER_MIXPANEL_TOKEN": "t",
                                    "OTEL_EXPORTER_MIXPANEL_PAGE_VIEW_DETECTION": " Any-GET "})
    assert loaded.page_view_detection == "any-get"
    assert Settings(token="t").page_view_detection == "document"


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_captured_headers_decide_without_the_middleware(site_factory, ingest, mode):
    # The instrumentation's own capture, in its spelling (http.request.header.sec_fetch_dest), request and response.
    os.environ["OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"] = "content-type"
    site = site_factory(shop_app, mode=mode)
    site.request("/products", headers={"User-Agent": IPHONE})
    site.request("/api/cart", headers={"User-Agent": IPHONE})
    site.request("/products", headers={"User-Agent": IPHONE, "Sec-Fetch-Dest": "empty"})
    site.flush()
    assert [v["properties"]["current_url_path"] for v in page_views(ingest)] == ["/products"]
    assert len(looked(ingest)) == 3


def test_without_middleware_or_capture_no_request_is_known_to_be_a_page_load(site_factory, ingest):
    site = site_factory(shop_app, capture_navigation=False)
    site.request("/products", headers={"User-Agent": IPHONE})
    site.flush()
    assert page_views(ingest) == [] and len(looked(ingest)) == 1


def test_flask_records_what_the_decision_needs(ingest):
    import flask
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from otel_mixpanel.web.flask import MixpanelFlask

    app = flask.Flask(__name__)

    @app.get("/products")
    def products():
        otel_mixpanel.track("Looked", {"path": "/products"})
        return "<!doctype html><title>Products</title>"

    @app.get("/api/cart")
    def cart():
        otel_mixpanel.track("Looked", {"path": "/api/cart"})
        return {"items": []}

    exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    MixpanelFlask(app)
    try:
        with serve(app) as url:
            browser = Browser(DESKTOP_CHROME)
            assert browser.get(url + "/products", headers=NAVIGATION)[0] == 200
            assert browser.get(url + "/api/cart", headers=NAVIGATION)[0] == 200
            assert browser.get(url + "/products", headers=CHROME_FETCH)[0] == 200
            probe = Browser("kube-probe/1.29")
            assert probe.get(url + "/products", headers=NAVIGATION)[0] == 200
            assert probe.cookie() is None
        assert exporter.force_flush(5000)
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        provider.shutdown()
    [view] = page_views(ingest)
    assert view["properties"]["current_url_path"] == "/products"
    assert view["properties"]["$device_id"] == browser.cookie()
    assert len(looked(ingest)) == 4


@pytest.mark.parametrize("accept, html", [
    ("TEXT/HTML", True), ("application/xhtml+xml", True), ("text/html, */*", True),
    ("text/html;q=0", False), ("text/html;q=abc", False), ("text/html;q=2", False), ("text/*", False),
    ("image/webp,text/html;q=0.9", False),
    ("text/html;q=0.5, */*;q=0.9", False), ("", False), (",,;;q=,", False),
])
def test_accept_prefers_html_only_when_nothing_named_is_preferred(accept, html):
    assert prefers_html(accept) is html


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_any_accept_header_is_read_without_error(accept):
    assert prefers_html(accept) in (True, False)


def test_a_set_up_that_records_no_request_headers_is_warned_about_once(site_factory, ingest, caplog):
    site = site_factory(shop_app, capture_navigation=False)
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        for _ in range(3):
            site.request("/products", headers={"User-Agent": IPHONE})
        site.flush()
    [warning] = [r.getMessage() for r in caplog.records if "Page views:" in r.getMessage()]
    assert "otel_mixpanel.web" in warning and "accept,sec-fetch-dest,sec-fetch-mode" in warning
    assert page_views(ingest) == [] and len(looked(ingest)) == 3


@pytest.mark.parametrize("user_agent", [IPHONE, "kube-probe/1.29"])
def test_no_set_up_warning_where_the_headers_are_recorded_or_no_person_is_there(site_factory, ingest, caplog,
                                                                               user_agent):
    site = web_site(site_factory)
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        site.request("/api/cart", headers={"User-Agent": user_agent, "Accept": "application/json"}, navigation=False)
        site.flush()
    assert len(looked(ingest)) == 1
    # A probe has no device id by design: neither warning applies to it.
    assert not [r for r in caplog.records if "Page views:" in r.getMessage() or "without a user" in r.getMessage()]


@pytest.mark.parametrize("content_type", [None, "text/html", "TEXT/HTML", "text/html; charset=utf-8", " text/html",
                                          "application/xhtml+xml", "application/json", "", "text/htm"])
@pytest.mark.parametrize("fetch_dest", [None, "document", "Document", "DOCUMENT", "empty", "iframe", ""])
@pytest.mark.parametrize("fetch_mode", [None, "navigate", "Navigate", "cors", ""])
def test_document_load_shortcuts_decide_as_the_media_type_and_lower_case_reading(content_type, fetch_dest, fetch_mode):
    """is_document_load compares the usual spellings first; every spelling decides as the general reading."""
    facts = HttpFacts("GET", "https", "shop.example.com", "/", None, None, 200, "Mozilla/5.0", False, None, None,
                      "text/html", fetch_dest, fetch_mode, content_type)
    if content_type is not None and media_type(content_type) not in HTML_TYPES:
        expected = False
    elif fetch_dest is not None:
        expected = fetch_dest.lower() == "document"
    elif fetch_mode is not None:
        expected = fetch_mode.lower() == "navigate"
    else:
        expected = True
    assert is_document_load(facts) is expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("/.aJsScCΣİ0"), max_size=12),
       st.sampled_from([Settings().static_extensions, (".js", ".CSS"), ("js",), (".tar.gz", "gz"), ()]))
def test_static_paths_are_told_as_by_comparing_the_lower_cased_path(path, extensions):
    assert _is_static(path, extensions) is path.lower().endswith(extensions)
