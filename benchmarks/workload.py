"""A realistic request mix, as WSGI environs, as the spans instrumentation makes of them,
and as the request objects the baseline helper reads.

Spans come from the real stack (``OpenTelemetryMiddleware`` around otel-mixpanel's
``MixpanelMiddleware`` around a small shop app) into an ``InMemorySpanExporter``, so
they carry exactly the attributes opentelemetry-instrumentation-wsgi writes.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl
from wsgiref.util import setup_testing_defaults

from mixpanel import Mixpanel
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_mixpanel
from benchmarks.baseline_helper import Request, User, track_to_mp
from otel_mixpanel.web import MixpanelMiddleware
from otel_mixpanel.web.device_id import DEFAULT_COOKIE_NAME

HOST = "shop.example.com"
# (weight, user agent, is a crawler)
USER_AGENTS = [
    (22, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.6099.109 Safari/537.36", False),
    (10, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.2 Safari/605.1.15", False),
    (6, "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", False),
    (5, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91", False),
    (20, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.1 Mobile/15E148 Safari/604.1", False),
    (14, "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.6099.144 Mobile Safari/537.36", False),
    (4, "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1", False),
    (4, "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36", False),
    (5, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
    (2, "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
]
REFERRERS = [
    "https://www.google.com/", "https://www.bing.com/search?q=running+shoes", "https://t.co/x1Yz9",
    "https://news.ycombinator.com/item?id=38000000", "https://www.facebook.com/",
    f"https://{HOST}/products/1042", f"https://{HOST}/",
]
CAMPAIGNS = [
    "utm_source=google&utm_medium=cpc&utm_campaign=winter_sale&utm_term=trail+shoes&gclid=Cj0KCQiA",
    "utm_source=newsletter&utm_medium=email&utm_campaign=2024-01-digest&utm_content=hero",
    "utm_source=facebook&utm_medium=social&utm_campaign=launch",
]
# Where the handlers find what this request is about (its business events, for one).
VISIT_KEY = "benchmark.visit"
PAGES = ["/", "/pricing", "/about", "/blog/how-to-choose-running-shoes", "/cart", "/account"]


@dataclass
class Visit:
    method: str
    path: str
    query: str
    user_agent: str
    referrer: str | None
    ip: str
    device_id: str | None
    user_id: str | None
    # Business events the handler tracks: (name, properties).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Further request headers, by their WSGI environ keys (HTTP_ACCEPT, HTTP_SEC_FETCH_MODE, ...).
    headers: dict[str, str] = field(default_factory=dict)
    # What the handler answers with.
    content_type: str = "text/html"
    # Further cookies the browser sends ("name=value; ..."), e.g. the first touch an earlier response set.
    cookies: str = ""

    @property
    def page_view(self) -> bool:
        return self.method == "GET" and not self.path.startswith(("/static/", "/missing", "/api/"))


def _novel_user_agent(rng: random.Random, serial: int) -> str:
    """A browser build never seen before: real shapes, versions no earlier request had."""
    build, patch = 6000 + serial // 200, serial % 200
    if rng.random() < 0.5:
        return ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{rng.randint(100, 125)}.0.{build}.{patch} Safari/537.36")
    return ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{rng.randint(100, 125)}.0.{build}.{patch} Mobile Safari/537.36")


def make_visits(count: int, seed: int, novel_user_agents: float = 0.0) -> list[Visit]:
    """``count`` requests of a shop; ``novel_user_agents`` of them with a user agent never seen before."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in USER_AGENTS]
    devices = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(10, count // 8))]
    logged_in = {device: f"user-{i}" for i, device in enumerate(devices) if rng.random() < 0.3}
    visits = []
    for serial in range(count):
        _, user_agent, bot = rng.choices(USER_AGENTS, weights)[0]
        if not bot and rng.random() < novel_user_agents:
            user_agent = _novel_user_agent(rng, seed * 1_000_000 + serial)
        device = None if bot or rng.random() < 0.05 else rng.choice(devices)
        user = logged_in.get(device) if device else None
        roll = rng.random()
        events: list[tuple[str, dict[str, Any]]] = []
        if roll < 0.08:
            method, path = "GET", f"/static/app.{rng.randint(1, 9)}.js"
        elif roll < 0.10:
            method, path = "GET", "/missing-page"
        elif roll < 0.16:
            method, path = "POST", "/cart/add"
            events.append(("Added To Cart", {"product_id": rng.randint(1000, 1100), "price": 89.9,
                                             "currency": "EUR", "quantity": rng.randint(1, 3)}))
        elif roll < 0.18:
            method, path = "POST", "/signup"
            events.append(("Signed Up", {"Signup Type": rng.choice(["email", "google"])}))
        elif roll < 0.40:
            method, path = "GET", f"/products/{rng.randint(1000, 1100)}"
        else:
            method, path = "GET", rng.choice(PAGES)
        query = rng.choice(CAMPAIGNS) if method == "GET" and rng.random() < 0.25 else ""
        referrer = rng.choice(REFERRERS) if rng.random() < 0.5 else None
        ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        visits.append(Visit(method, path, query, user_agent, referrer, ip, device, user, events))
    return visits


def environ_for(visit: Visit) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": visit.method,
        "PATH_INFO": visit.path,
        "QUERY_STRING": visit.query,
        # gunicorn and uWSGI pass the raw target; the instrumentation records it as http.target.
        "RAW_URI": visit.path + ("?" + visit.query if visit.query else ""),
        "HTTP_HOST": HOST,
        "SERVER_NAME": HOST,
        "SERVER_PORT": "443",
        "wsgi.url_scheme": "https",
        "HTTP_USER_AGENT": visit.user_agent,
        "REMOTE_ADDR": visit.ip,
        # A browser loading a page says so; the exporter counts only such loads as page views.
        "HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "HTTP_SEC_FETCH_DEST": "document",
        "HTTP_SEC_FETCH_MODE": "navigate",
    }
    if visit.referrer:
        environ["HTTP_REFERER"] = visit.referrer
    cookies = []
    if visit.device_id:
        cookies.append(f"{DEFAULT_COOKIE_NAME}={visit.device_id}")
    if visit.user_id:
        cookies.append(f"session={visit.user_id}")
    if visit.cookies:
        cookies.append(visit.cookies)
    if cookies:
        environ["HTTP_COOKIE"] = "; ".join(cookies)
    if visit.method == "POST":
        environ["CONTENT_LENGTH"] = "0"
    environ.update(visit.headers)
    environ[VISIT_KEY] = visit
    setup_testing_defaults(environ)
    return environ


def _session_user(environ: dict[str, Any]) -> str | None:
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session":
            return value
    return None


def shop_app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """The application: knows the user from its session, tracks business events."""
    user = _session_user(environ)
    if user:
        otel_mixpanel.set_user(user)
    if environ["PATH_INFO"].startswith("/missing"):
        start_response("404 Not Found", [("Content-Type", "text/html")])
        return [b"<html>not found</html>"]
    visit = environ[VISIT_KEY]
    for name, properties in visit.events:
        otel_mixpanel.track(name, dict(properties))
    start_response("200 OK", [("Content-Type", visit.content_type)])
    return [b"<html>ok</html>"]


def helper_app(mp: Mixpanel) -> Callable:
    """The same application built on the seeds' helper instead: ``track_to_mp`` in the handler."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        visit = environ[VISIT_KEY]
        if environ["PATH_INFO"].startswith("/missing"):
            start_response("404 Not Found", [("Content-Type", "text/html")])
            return [b"<html>not found</html>"]
        request = baseline_request(visit)
        for name, properties in baseline_calls(visit):
            track_to_mp(mp, request, name, properties)
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>ok</html>"]

    return app


def instrumented(app: Callable, provider: TracerProvider) -> Callable:
    return OpenTelemetryMiddleware(MixpanelMiddleware(app), tracer_provider=provider)


def call(app: Callable, environ: dict[str, Any]) -> None:
    def start_response(status: str, headers: list, exc_info: Any = None) -> Callable:
        return lambda data: None

    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def make_spans(visits: list[Visit]) -> list[ReadableSpan]:
    """Finished spans of these requests, as the WSGI instrumentation records them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    app = instrumented(shop_app, provider)
    for visit in visits:
        call(app, environ_for(visit))
    provider.shutdown()
    return list(memory.get_finished_spans())


def baseline_request(visit: Visit) -> Request:
    headers = {"User-Agent": visit.user_agent}
    if visit.referrer:
        headers["Referer"] = visit.referrer
    cookies = {"SESSION_ID": visit.device_id} if visit.device_id else {}
    return Request(headers, dict(parse_qsl(visit.query)), visit.ip, cookies, User(visit.user_id))


def baseline_calls(visit: Visit) -> list[tuple[str, dict[str, Any]]]:
    """What the handlers of an app built on the seeds' helper track for this request."""
    calls: list[tuple[str, dict[str, Any]]] = []
    if visit.page_view:
        calls.append(("$mp_web_page_view", {"$current_url": f"https://{HOST}{visit.path}"
                                            + (f"?{visit.query}" if visit.query else "")}))
    calls.extend((name, dict(properties)) for name, properties in visit.events)
    return calls
