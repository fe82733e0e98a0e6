"""Django: the middleware inside DjangoInstrumentor's, over real loopback HTTP.

Django's settings are process-wide, so this module configures them once for itself.
"""

from __future__ import annotations

import json
import time
import re
from urllib.parse import unquote

import django
import pytest
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_mixpanel import api
from otel_mixpanel.web import current_device_id, reset_device_id
from otel_mixpanel.web.device_id import valid_device_id
from conftest import NAVIGATION, quick_delivery
from otel_mixpanel import MixpanelSpanExporter
from test_web import Browser, serve, server_spans


def home(request):
    return HttpResponse(current_device_id() or "")


@csrf_exempt
def login(request):
    api.identify(request.POST["user"])
    api.track("Logged In", {"method": "password"})
    api.set_profile({"$email": "ada@example.com"})
    return HttpResponse("welcome")


def logout(request):
    old = current_device_id(request)
    reset_device_id(request)
    return HttpResponse(old)


def cart(request):
    api.track("Cart Viewed")
    return JsonResponse({"items": []})


urlpatterns = [path("", home), path("login", login), path("logout", logout), path("api/cart", cart)]


@pytest.fixture(scope="module")
def django_settings():
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["django.middleware.common.CommonMiddleware", "otel_mixpanel.web.django.MixpanelMiddleware"],
            OTEL_MIXPANEL_WEB={"cookie_name": "did", "samesite": "Strict"},
            INSTALLED_APPS=[],
        )
        django.setup()


@pytest.fixture
def django_app(django_settings):
    from django.core.wsgi import get_wsgi_application
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = DjangoInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield get_wsgi_application(), exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def test_django_cookie_span_attributes_helpers_and_logout(django_app):
    app, exporter = django_app
    browser = Browser()
    with serve(app) as url:
        _, headers, device = browser.get(url + "/?utm_campaign=spring", headers={
            "Referer": "https://www.bing.com/search?q=shoes", "X-Forwarded-For": "198.51.100.4"})
        assert valid_device_id(device) == device and browser.cookie("did") == device
        assert "SameSite=Strict" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
        assert browser.get(url + "/login", data={"user": "u-7"})[2] == "welcome"
        assert browser.get(url + "/logout")[2] == device
        _, _, after = browser.get(url + "/")
    assert after != device and browser.cookie("did") == after

    home_span, login_span, logout_span, home_again = server_spans(exporter)
    assert home_span.attributes["enduser.pseudo.id"] == device
    assert home_span.attributes["http.request.header.referer"] == ("https://www.bing.com/search?q=shoes",)
    assert home_span.attributes["http.request.header.x-forwarded-for"] == ("198.51.100.4",)
    assert home_span.attributes["url.path"] == "/" and home_span.attributes["url.query"] == "utm_campaign=spring"
    assert login_span.attributes["enduser.id"] == "u-7" and login_span.attributes["enduser.pseudo.id"] == device
    assert [e.name for e in login_span.events] == [api.IDENTIFY_EVENT, "Logged In", api.SET_PROFILE_EVENT]
    assert logout_span.attributes["enduser.pseudo.id"] == device
    assert home_again.attributes["enduser.pseudo.id"] == after
    assert not [k for s in exporter.get_finished_spans() for k in s.attributes if "cookie" in k]


def test_django_records_what_the_page_view_decision_needs(django_app, ingest):
    app, spans = django_app
    browser = Browser()
    fetch = {"Accept": "*/*", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"}
    with serve(app) as url:
        assert browser.get(url + "/", headers=NAVIGATION)[0] == 200
        assert browser.get(url + "/api/cart", headers=NAVIGATION)[0] == 200
        assert browser.get(url + "/", headers=fetch)[0] == 200
        probe = Browser("kube-probe/1.29")
        _, probe_headers, _ = probe.get(url + "/api/cart")
    assert "Set-Cookie" not in probe_headers

    page, api_call, fetched, probed = server_spans(spans)
    assert page.attributes["http.request.header.accept"] == (NAVIGATION["Accept"],)
    assert page.attributes["http.request.header.sec-fetch-dest"] == ("document",)
    assert page.attributes["http.request.header.sec-fetch-mode"] == ("navigate",)
    assert page.attributes["http.response.header.content-type"] == ("text/html; charset=utf-8",)
    assert api_call.attributes["http.response.header.content-type"] == ("application/json",)
    assert fetched.attributes["http.request.header.sec-fetch-dest"] == ("empty",)
    assert "enduser.pseudo.id" not in probed.attributes

    exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url))
    exporter.export(spans.get_finished_spans())
    assert exporter.force_flush(5000)
    exporter.shutdown()
    views = [e["properties"] for e in ingest.events() if e["event"] == "$mp_web_page_view"]
    assert [(v["current_url_path"], v["$device_id"]) for v in views] == [("/", browser.cookie("did"))]
    carts = [e["properties"] for e in ingest.events() if e["event"] == "Cart Viewed"]
    assert [c.get("$device_id") for c in carts] == [browser.cookie("did"), None]


def test_django_records_a_tls_proxys_headers_as_the_other_middlewares_do(django_app, ingest):
    app, spans = django_app
    proxy = {"X-Forwarded-For": "::ffff:72.229.28.186", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "www.shop.example", "Forwarded": "for=72.229.28.186;proto=https",
             "X-Real-IP": "72.229.28.186", "CF-Connecting-IP": "72.229.28.186", "True-Client-IP": "72.229.28.186"}
    with serve(app) as url:
        status, headers, _ = Browser().get(url + "/", headers={**NAVIGATION, **proxy})
    assert status == 200 and "; Secure" in headers["Set-Cookie"]

    (page,) = server_spans(spans)
    for name, value in proxy.items():
        assert page.attributes[f"http.request.header.{name.lower()}"] == (value,), name
    exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, trusted_proxies="127.0.0.1",
                                                     forwarded_host=True))
    exporter.export(spans.get_finished_spans())
    assert exporter.force_flush(5000)
    exporter.shutdown()
    (view,) = [e["properties"] for e in ingest.events() if e["event"] == "$mp_web_page_view"]
    assert (view["$current_url"], view["current_url_protocol"]) == ("https://www.shop.example/", "https:")
    assert view["ip"] == "72.229.28.186"


OUR_MIDDLEWARE = "otel_mixpanel.web.django.MixpanelMiddleware"

COMMON = "django.middleware.common.CommonMiddleware"


@pytest.mark.parametrize("set_up", ["instrumentor, ours listed last", "instrumentor, ours listed first",
                                    "instrumentor before ours is listed", "wsgi middleware, no instrumentor"])
def test_django_middleware_works_whichever_way_tracing_is_set_up(django_settings, set_up):
    from django.core.wsgi import get_wsgi_application
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    saved = list(settings.MIDDLEWARE)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = DjangoInstrumentor()
    try:
        if set_up == "wsgi middleware, no instrumentor":
            settings.MIDDLEWARE = [COMMON, OUR_MIDDLEWARE]
            app = OpenTelemetryMiddleware(get_wsgi_application(), tracer_provider=provider)
        elif set_up == "instrumentor before ours is listed":
            settings.MIDDLEWARE = [COMMON]
            instrumentor.instrument(tracer_provider=provider)
            settings.MIDDLEWARE = [*settings.MIDDLEWARE, OUR_MIDDLEWARE]
            app = get_wsgi_application()
        else:
            ours_first = set_up.endswith("first")
            settings.MIDDLEWARE = [OUR_MIDDLEWARE, COMMON] if ours_first else [COMMON, OUR_MIDDLEWARE]
            instrumentor.instrument(tracer_provider=provider)
            app = get_wsgi_application()
        browser = Browser()
        with serve(app) as url:
            _, _, device = browser.get(url + "/", headers={"Referer": "https://www.google.com/"})
            assert browser.get(url + "/login", data={"user": "u-9"})[2] == "welcome"
        # A server span ends when the server closes the response, which can be after the client has read it.
        deadline = time.monotonic() + 5
        while len(server_spans(exporter)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        instrumentor.uninstrument()
        settings.MIDDLEWARE = saved
        provider.shutdown()

    home, login = server_spans(exporter)
    assert valid_device_id(device) == device and browser.cookie("did") == device
    assert home.attributes["enduser.pseudo.id"] == device
    assert home.attributes["http.request.header.referer"] == ("https://www.google.com/",)
    assert login.attributes["enduser.id"] == "u-9" and login.attributes["enduser.pseudo.id"] == device


def test_django_keeps_the_first_touch_in_its_cookie(django_app):
    app, exporter = django_app
    browser = Browser()
    with serve(app) as url:
        _, headers, _ = browser.get(url + "/?utm_source=bing&utm_term=shoes",
                                    headers={"Referer": "https://www.bing.com/search?q=shoes"})
        stored = browser.cookie("otel_mp_first_touch")
        # Written as sent: base64url, which Django's cookie quoting leaves alone.
        assert stored and re.fullmatch(r"[A-Za-z0-9_-]+", stored)
        browser.get(url + "/", headers={"Referer": url + "/"})
        browser.get(url + "/logout")
        assert browser.cookie("otel_mp_first_touch") is None
        browser.get(url + "/")

    first, second, logout_span, after = server_spans(exporter)
    for span in (first, second, logout_span):
        assert span.attributes["otel_mixpanel.initial_referrer"] == "https://www.bing.com/search?q=shoes"
        assert span.attributes["otel_mixpanel.initial_referring_domain"] == "www.bing.com"
        assert span.attributes["otel_mixpanel.initial_utm_source"] == "bing"
        assert span.attributes["otel_mixpanel.initial_utm_term"] == "shoes"
    assert after.attributes["otel_mixpanel.initial_referrer"] == "$direct"
    assert "otel_mixpanel.initial_utm_source" not in after.attributes
    # The current campaign, for every later event of the browser, until the logout clears it.
    for span in (first, second, logout_span):
        assert span.attributes["otel_mixpanel.campaign.utm_source"] == "bing"
        assert span.attributes["otel_mixpanel.campaign.utm_term"] == "shoes"
    assert not [name for name in after.attributes if name.startswith("otel_mixpanel.campaign.")]


def test_django_writes_the_js_sdk_cookie_for_a_new_visitor(django_app):
    from django.core.wsgi import get_wsgi_application

    _, exporter = django_app
    saved = settings.OTEL_MIXPANEL_WEB
    settings.OTEL_MIXPANEL_WEB = {**saved, "mixpanel_token": "tok", "write_js_cookie": True,
                                  "js_tracks_page_views": False}
    try:
        app = get_wsgi_application()
        browser = Browser()
        with serve(app) as url:
            _, _, device = browser.get(url + "/", headers={"Referer": "https://www.google.com/"})
            written = browser.cookie("mp_tok_mixpanel")
            jar_cookie = next(c for c in browser.jar if c.name == "mp_tok_mixpanel")
            _, headers, again = browser.get(url + "/")
    finally:
        settings.OTEL_MIXPANEL_WEB = saved
    # Stored as sent (not in quotes), readable by page scripts, and read back as the SDK's cookie.
    assert written and written.startswith("%7B") and not jar_cookie.has_nonstandard_attr("HttpOnly")
    assert json.loads(unquote(written)) == {"distinct_id": f"$device:{device}", "$device_id": device,
                                            "$initial_referrer": "https://www.google.com/",
                                            "$initial_referring_domain": "www.google.com"}
    assert again == device and "mp_tok_mixpanel" not in headers.get("Set-Cookie", "")
    assert server_spans(exporter)[-1].attributes["otel_mixpanel.initial_referrer"] == "https://www.google.com/"
