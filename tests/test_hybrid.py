"""Hybrid set-ups: the middleware writes the Mixpanel JavaScript SDK's cookie for new visitors.

A Flask site behind the real OpenTelemetry WSGI middleware, over loopback HTTP, exporting to
the local Mixpanel look-alike. The cookie is read back the way mixpanel-browser 2.83.0's
``_.cookie.get`` / ``parse`` read it: the value as the browser stores it,
``decodeURIComponent``, then JSON. tests/test_hybrid_browser.py runs the SDK itself.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from http.cookies import SimpleCookie
from typing import Any, Callable

import pytest

from otel_mixpanel.web import js_cookie
from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState, valid_device_id
from otel_mixpanel.web.js_cookie import encode_js_cookie, js_sdk_cookie, page_view_advice

from conftest import Site
from test_first_touch import GOOGLE_SEARCH, LANDING, Client, shop
from test_web_asgi import VISIT, asgi_site, fastapi_app  # noqa: F401 (asgi_site is a fixture)

JS_COOKIE = "mp_test-token_mixpanel"


def read_as_mixpanel_js(set_cookie: str) -> dict[str, Any]:
    """What the SDK's ``_.cookie.parse(name)`` gives for a cookie the browser stored from ``set_cookie``."""
    name, _, rest = set_cookie.partition("=")
    stored = rest.split(";")[0]  # a browser keeps the value's characters as sent
    decoded = urllib.parse.unquote(stored, errors="strict")  # decodeURIComponent
    return json.loads(decoded)


def js_set_cookie(set_cookies: list[str]) -> str | None:
    return next((c for c in set_cookies if c.startswith(JS_COOKIE + "=")), None)


@pytest.fixture
def hybrid_site(site_factory: Callable[..., Site]) -> Callable[..., Site]:
    def make(id_merge: str = "simplified", **options: Any) -> Site:
        app = shop(mixpanel_token="test-token", write_js_cookie=True, js_tracks_page_views=False, **options)
        return site_factory(app, events_api="track", id_merge=id_merge)
    return make


# mixpanel-js (2.46 and later) names an anonymous browser $device:<uuid> in both ID Merge modes.
@pytest.mark.parametrize("id_merge, prefix", [("simplified", "$device:"), ("original", "$device:")])
def test_a_new_visitor_gets_the_sdk_cookie_with_the_server_device_id(hybrid_site, ingest, id_merge, prefix):
    site = hybrid_site(id_merge)
    client = Client(site)
    device, set_cookies = client.open(LANDING, referer=GOOGLE_SEARCH)
    written = js_set_cookie(set_cookies)
    assert written is not None, set_cookies
    attributes = [a.strip().lower() for a in written.split(";")[1:]]
    assert "path=/" in attributes and "httponly" not in attributes
    assert not [a for a in attributes if a.startswith("domain=")]
    assert read_as_mixpanel_js(written) == {
        "distinct_id": prefix + device, "$device_id": device,
        "$initial_referrer": GOOGLE_SEARCH, "$initial_referring_domain": "www.google.com",
    }
    assert valid_device_id(device) == device == client.cookie("otel_mp_device_id")

    # The SDK's cookie comes back: the server keeps the same id and writes it no more.
    _, again = client.open("/pricing", referer=client.base + "/")
    assert again == []
    site.flush()
    events = ingest.wait_for(2)
    assert {e["properties"]["distinct_id"] for e in events} == {prefix + device}


def test_asgi_writes_the_sdk_cookie_too(asgi_site, ingest):
    site = asgi_site()
    app = fastapi_app(site, mixpanel_token="test-token", write_js_cookie=True, js_tracks_page_views=False)
    with site.serving(app):
        _, headers, body = site.request("/shop/boots", VISIT)
        _, again, _ = site.request("/shop/boots", {**VISIT, "Cookie": f"{JS_COOKIE}=%7B%7D"})
        site.flush()
    device = body.decode().split()[-1].removesuffix("</html>")
    written = js_set_cookie(headers.get_all("Set-Cookie") or [])
    assert written and read_as_mixpanel_js(written) == {
        "distinct_id": "$device:" + device, "$device_id": device,
        "$initial_referrer": VISIT["Referer"], "$initial_referring_domain": "www.google.com"}
    assert js_set_cookie(again.get_all("Set-Cookie") or []) is None
    received = ingest.wait_for(4)
    assert len(received) == 4 and {e["properties"]["$initial_referrer"] for e in received} == {VISIT["Referer"]}


def test_an_existing_sdk_cookie_is_never_overwritten(hybrid_site):
    client = Client(hybrid_site())
    for value in ["%7B%22distinct_id%22%3A%22%24device%3Aabc%22%7D", "garbage", ""]:
        _, set_cookies = client.open("/", cookie=f"{JS_COOKIE}={value}")
        assert js_set_cookie(set_cookies) is None, set_cookies


def test_a_returning_visitor_without_the_sdk_cookie_gets_it_with_the_known_id(hybrid_site):
    site = hybrid_site(first_touch=False)
    client = Client(site)
    device, first = client.open("/")
    client.jar.clear(domain="127.0.0.1", path="/", name=JS_COOKIE)
    _, later = client.open("/pricing")
    assert read_as_mixpanel_js(js_set_cookie(later) or "") == {"distinct_id": "$device:" + device,
                                                                "$device_id": device}


def test_after_a_reset_the_sdk_cookie_holds_the_new_id_and_no_first_touch():
    options = DeviceIdOptions.build(environ={}, mixpanel_token="tok", write_js_cookie=True)
    device = DeviceState("0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b", "cookie", False, False)
    device.device_id = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
    cookie = js_sdk_cookie("", device, None, options)
    assert cookie is not None and not cookie.httponly
    assert read_as_mixpanel_js(cookie.header()) == {"distinct_id": "$device:1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                                                    "$device_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"}
    off = DeviceIdOptions.build(environ={}, mixpanel_token="tok")
    assert js_sdk_cookie("", device, None, off) is None


def test_the_value_is_encode_uri_component_of_compact_json_and_no_cookie_writer_quotes_it():
    value = encode_js_cookie({"distinct_id": "$device:x", "$initial_referrer": "https://a.example/p(1)?q=é&r='!*~"})
    assert value == ("%7B%22distinct_id%22%3A%22%24device%3Ax%22%2C%22%24initial_referrer%22%3A%22https%3A%2F%2F"
                     "a.example%2Fp%281%29%3Fq%3D%5Cu00e9%26r%3D'!*~%22%7D")
    cookie: SimpleCookie = SimpleCookie()
    cookie["mp"] = value
    assert cookie.output(header="").strip() == f"mp={value}"  # as Django writes it: not quoted


def test_the_token_comes_from_the_exporter_variable(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_MIXPANEL_TOKEN", "sekrit-token")
    options = DeviceIdOptions.build(write_js_cookie=True)
    assert options.js_cookie == "mp_sekrit-token_mixpanel"
    assert "sekrit" not in repr(options)


@pytest.mark.parametrize("options", [
    {"write_js_cookie": True},
    {"write_js_cookie": "yes", "mixpanel_token": "sekrit-token"},
    {"write_js_cookie": True, "js_cookie_name": "otel_mp_device_id"},
    {"write_js_cookie": True, "mixpanel_token": "sekrit token"},
    {"js_tracks_page_views": "no"},
])
def test_bad_hybrid_options_are_refused_without_echoing_the_token(options):
    with pytest.raises(ValueError) as refused:
        DeviceIdOptions.build(environ={}, **options)
    assert "sekrit" not in str(refused.value)


@pytest.mark.parametrize("js, page_views, level, words", [
    (None, "", logging.WARNING, "keep track_pageview"),
    (True, "true", logging.WARNING, "tracked twice"),
    (True, "false", logging.INFO, "by the Mixpanel JavaScript SDK"),
    (False, "", logging.INFO, "by the exporter"),
    (None, "off", logging.WARNING, "turn track_pageview on"),
    (False, "0", logging.WARNING, "No side"),
])
def test_which_side_tracks_page_views_is_said_at_start(js, page_views, level, words):
    options = DeviceIdOptions.build(environ={}, mixpanel_token="tok", write_js_cookie=True, js_tracks_page_views=js)
    advice = page_view_advice(options, {"OTEL_EXPORTER_MIXPANEL_PAGE_VIEWS": page_views})
    assert advice is not None and advice[0] == level and words in advice[1]
    assert page_view_advice(DeviceIdOptions.build(environ={}), {}) is None


def test_the_middleware_warns_once_when_both_sides_track_page_views(caplog, monkeypatch):
    monkeypatch.setattr(js_cookie, "_announced", set())  # as in a new process
    caplog.set_level(logging.INFO, logger="otel_mixpanel.web")
    for _ in range(2):
        shop(mixpanel_token="other-token", write_js_cookie=True, js_tracks_page_views=True)
    (warning,) = [r for r in caplog.records if "tracked twice" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "other-token" not in warning.getMessage()


@pytest.mark.parametrize("character", ["a", "é", "😀"])
def test_a_huge_first_touch_is_cut_so_that_the_browser_keeps_the_cookie(character):
    from otel_mixpanel.web.first_touch import resolve_first_touch

    options = DeviceIdOptions.build(environ={}, mixpanel_token="tok", write_js_cookie=True)
    touch = resolve_first_touch("", "https://x.example/" + character * 2000, None, options)
    device = DeviceState("0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b", "new", True, False)
    cookie = js_sdk_cookie("", device, touch, options)
    assert cookie is not None and len(cookie.header().split(";")[0]) < 4000
    read = read_as_mixpanel_js(cookie.header())
    assert read["$device_id"] == device.device_id
    assert read.get("$initial_referrer", "https://x.example/").startswith("https://x.example/")
