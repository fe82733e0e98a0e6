"""The ASGI middleware behind the real ASGI and FastAPI instrumentation, served by uvicorn.

Each test sends real HTTP on loopback and checks what Mixpanel would have received
from the exporter (the local ingestion server), as test_page_views does for WSGI.
"""

from __future__ import annotations

import asyncio
import contextvars
import http.client
import urllib.parse
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Callable, Iterator

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from hypothesis import given, settings, strategies as st
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from websockets.sync.client import connect as websocket_connect

import otel_mixpanel
from asgi_helpers import serve_asgi
from conftest import IPHONE, InFlight, NAVIGATION, SEMCONV_MODES, Site, quick_delivery, text_app, use_semconv_mode, without_volatile
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.testing.ingest_server import IngestServer
from otel_mixpanel.web import MixpanelMiddleware as WsgiMiddleware
from otel_mixpanel.web import current_device_id, reset_device_id
from otel_mixpanel.web.asgi import MixpanelMiddleware, request_environ

PAGE_VIEW = "$mp_web_page_view"
COOKIE = "otel_mp_device_id"
UUID4 = "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f"
CAMPAIGN_PATH = "/shop/caf%C3%A9?utm_source=newsletter&utm_medium=email&utm_campaign=winter&color=red"
VISIT = {"Host": "shop.example.com", "User-Agent": IPHONE, "Referer": "https://www.google.com/search?q=boots",
         **NAVIGATION}


class AsgiRequestsInFlight(InFlight):
    """ASGI wrapper counting HTTP requests the app has not returned from: the OpenTelemetry middleware inside
    ends a request's span before it returns, which can be after the client has read the whole answer."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        self._started()
        try:
            await self._app(scope, receive, send)
        finally:
            self._finished()


class AsgiSite:
    """An ASGI app served by uvicorn, its spans exported to Mixpanel (the ingestion server)."""

    def __init__(self, ingest: IngestServer, mode: str, **settings: Any) -> None:
        use_semconv_mode(mode)
        self.exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, **settings))
        self.provider = TracerProvider()
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=20))
        self.base = ""
        self._requests: AsgiRequestsInFlight | None = None

    @contextmanager
    def serving(self, app: Any, **config: Any) -> Iterator[AsgiSite]:
        self._requests = AsgiRequestsInFlight(app)
        with serve_asgi(self._requests, **config) as base:
            self.base = base
            yield self

    def request(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = http.client.HTTPConnection(urllib.parse.urlsplit(self.base).netloc, timeout=10)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def flush(self) -> None:
        if self._requests is not None:
            assert self._requests.wait_until_none(10), "a request did not finish"
        self.provider.force_flush()
        assert self.exporter.force_flush(5000), "events were not all delivered"


@pytest.fixture
def asgi_site(ingest: IngestServer) -> Iterator[Callable[[str], AsgiSite]]:
    sites: list[AsgiSite] = []

    def make(mode: str = "old", **settings: Any) -> AsgiSite:
        sites.append(AsgiSite(ingest, mode, **settings))
        return sites[-1]

    yield make
    for site in sites:
        site.provider.shutdown()
    use_semconv_mode("old")


def fastapi_app(site: AsgiSite, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/shop/{item}", response_class=HTMLResponse)
    async def shop(item: str) -> str:
        otel_mixpanel.track("Item Viewed", {"item": item})
        return f"<html>{item} {current_device_id()}</html>"

    @app.get("/logout", response_class=PlainTextResponse)
    async def logout(request: Request) -> str:
        old = current_device_id(request)
        new = reset_device_id()
        otel_mixpanel.track("Logged Out")
        return f"{old} {new}"

    app.add_middleware(MixpanelMiddleware, **options)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=site.provider)
    return app


def cookie_of(headers: http.client.HTTPMessage) -> str | None:
    for value in headers.get_all("Set-Cookie") or ():
        name, _, rest = value.partition("=")
        if name == COOKIE:
            return rest.split(";")[0]
    return None


def events(ingest: IngestServer, name: str) -> list[dict[str, Any]]:
    return [e for e in ingest.events() if e["event"] == name]


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_fastapi_page_view_has_device_referrer_and_campaign(asgi_site, ingest, mode):
    site = asgi_site(mode)
    with site.serving(fastapi_app(site)):
        status, headers, body = site.request(CAMPAIGN_PATH, VISIT)
        device = cookie_of(headers)
        assert status == 200 and device and device in body.decode()
        status, headers, _ = site.request("/shop/boots", {**VISIT, "Cookie": f"{COOKIE}={device}"})
        assert status == 200 and cookie_of(headers) is None
        site.flush()

    first, second = sorted(events(ingest, PAGE_VIEW), key=lambda e: e["properties"]["time"])
    props = first["properties"]
    assert props["$device_id"] == device == second["properties"]["$device_id"]
    assert props["$current_url"] == "http://shop.example.com" + CAMPAIGN_PATH
    assert props["current_url_path"] == "/shop/caf%C3%A9"
    assert (props["utm_source"], props["utm_medium"], props["utm_campaign"]) == ("newsletter", "email", "winter")
    assert props["$referrer"] == VISIT["Referer"] and props["$search_engine"] == "google"
    assert props["mp_keyword"] == "boots"
    assert props["$os"] == "iOS"
    [tracked] = [e for e in events(ingest, "Item Viewed") if e["properties"]["item"] == "café"]
    assert tracked["properties"]["$device_id"] == device
    assert tracked["properties"]["utm_source"] == "newsletter"


def test_fastapi_keeps_the_campaign_for_the_browsers_later_events(asgi_site, ingest):
    site = asgi_site()
    with site.serving(fastapi_app(site)):
        _, headers, _ = site.request(CAMPAIGN_PATH, VISIT)
        cookies = "; ".join(value.split(";")[0] for value in headers.get_all("Set-Cookie") or ())
        site.request("/shop/boots?utm_medium=social", {**VISIT, "Cookie": cookies})
        site.flush()

    later = [e for e in ingest.events() if e["properties"].get("item") == "boots" or
             e["properties"].get("current_url_path") == "/shop/boots"]
    assert sorted(e["event"] for e in later) == ["$mp_web_page_view", "Item Viewed"]
    for event in later:
        props = event["properties"]
        assert (props["utm_source"], props["utm_medium"], props["utm_campaign"]) == ("newsletter", "social", "winter")


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_fastapi_api_calls_and_probes_are_no_page_views(asgi_site, ingest, mode):
    site = asgi_site(mode)
    app = fastapi_app(site)

    @app.get("/api/cart")
    async def cart() -> dict[str, list[str]]:
        otel_mixpanel.track("Cart Viewed")
        return {"items": []}

    cookie = {"Cookie": f"{COOKIE}={UUID4}"}
    with site.serving(app):
        assert site.request("/api/cart", {**VISIT, **cookie})[0] == 200
        assert site.request("/shop/boots", {**VISIT, **cookie, "Accept": "*/*", "Sec-Fetch-Dest": "empty",
                                            "Sec-Fetch-Mode": "cors"})[0] == 200
        status, probe_headers, _ = site.request("/shop/boots", {**VISIT, "User-Agent": "kube-probe/1.29"})
        assert status == 200 and probe_headers.get_all("Set-Cookie") is None
        assert site.request("/shop/boots", {**VISIT, **cookie})[0] == 200
        site.flush()
    [view] = events(ingest, PAGE_VIEW)
    assert view["properties"]["current_url_path"] == "/shop/boots" and view["properties"]["$device_id"] == UUID4
    assert len(events(ingest, "Cart Viewed")) == 1 and len(events(ingest, "Item Viewed")) == 3
    [probed] = [e for e in events(ingest, "Item Viewed") if "$device_id" not in e["properties"]]
    assert probed["properties"]["distinct_id"] == ""


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_fastapi_behind_a_trusted_tls_proxy_gives_the_client_scheme_host_and_address(asgi_site, ingest, mode):
    """The proxy headers the ASGI middleware records are believed from a trusted proxy, as under WSGI."""
    site = asgi_site(mode, trusted_proxies="127.0.0.1", forwarded_host=True)
    proxied = {**VISIT, "X-Forwarded-For": "::ffff:72.229.28.186", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "www.shop.example"}
    # uvicorn left to pass the headers on, as a server not told to believe them does.
    with site.serving(fastapi_app(site), proxy_headers=False):
        status, headers, _ = site.request("/shop/boots?utm_source=ads", proxied)
        site.flush()
    assert status == 200 and "; Secure" in (headers.get("Set-Cookie") or "")
    [view] = events(ingest, PAGE_VIEW)
    props = view["properties"]
    assert props["$current_url"] == "https://www.shop.example/shop/boots?utm_source=ads"
    assert (props["current_url_protocol"], props["current_domain"]) == ("https:", "www.shop.example")
    assert props["ip"] == "72.229.28.186"


def raw_app_inside(provider: TracerProvider) -> Any:
    return OpenTelemetryMiddleware(MixpanelMiddleware(plain_asgi_page), tracer_provider=provider)


def raw_app_outside(provider: TracerProvider) -> Any:
    return MixpanelMiddleware(OpenTelemetryMiddleware(plain_asgi_page, tracer_provider=provider))


async def plain_asgi_page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": str(current_device_id()).encode()})


@pytest.mark.parametrize("mode", SEMCONV_MODES)
@pytest.mark.parametrize("wrap", [raw_app_inside, raw_app_outside], ids=["inside", "outside"])
def test_either_side_of_the_asgi_instrumentation(asgi_site, ingest, mode, wrap):
    site = asgi_site(mode)
    with site.serving(wrap(site.provider)):
        status, headers, body = site.request(CAMPAIGN_PATH, VISIT)
        site.flush()
    assert status == 200 and body.decode() == cookie_of(headers)
    [view] = events(ingest, PAGE_VIEW)
    assert view["properties"]["$device_id"] == body.decode()
    assert view["properties"]["$current_url"] == "http://shop.example.com" + CAMPAIGN_PATH
    assert view["properties"]["$referrer"] == VISIT["Referer"]


def test_same_request_gives_the_same_event_under_wsgi_and_asgi(asgi_site, site_factory, ingest):
    headers = {**VISIT, "Cookie": f"{COOKIE}={UUID4}", "X-Forwarded-For": "203.0.113.9",
               "Forwarded": "for=203.0.113.9;proto=https"}
    wsgi = site_factory(WsgiMiddleware(text_app))
    assert wsgi.request(CAMPAIGN_PATH, headers=headers)[0] == 200
    wsgi.flush()
    [from_wsgi] = events(ingest, PAGE_VIEW)

    site = asgi_site("old")
    # uvicorn believes X-Forwarded-For from 127.0.0.1 by default; the WSGI server does not.
    with site.serving(raw_app_inside(site.provider), proxy_headers=False):
        assert site.request(CAMPAIGN_PATH, headers)[0] == 200
        site.flush()
    [from_asgi] = [e for e in events(ingest, PAGE_VIEW) if e is not from_wsgi][-1:]
    assert without_volatile(from_asgi["properties"]) == without_volatile(from_wsgi["properties"])
    assert from_asgi["properties"]["$device_id"] == UUID4


def test_streaming_response_keeps_the_device_and_every_chunk(asgi_site, ingest):
    site = asgi_site()
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(50):
                yield f"{index}:{current_device_id()}\n".encode()
                await asyncio.sleep(0)
            otel_mixpanel.track("Stream Ended", {"chunks": 50})
        return StreamingResponse(chunks(), media_type="text/plain")

    app.add_middleware(MixpanelMiddleware)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=site.provider)
    with site.serving(app):
        status, headers, body = site.request("/stream", VISIT)
        site.flush()
    device = cookie_of(headers)
    assert status == 200
    assert body.decode().splitlines() == [f"{index}:{device}" for index in range(50)]
    [ended] = events(ingest, "Stream Ended")
    assert ended["properties"]["$device_id"] == device


def test_reset_device_id_in_an_async_handler(asgi_site, ingest):
    site = asgi_site()
    with site.serving(fastapi_app(site)):
        status, headers, body = site.request("/logout", {**VISIT, "Cookie": f"{COOKIE}={UUID4}"})
        site.flush()
    old, new = body.decode().split()
    assert status == 200 and old == UUID4 and cookie_of(headers) == new != old
    # The logout request's own events keep the id of the user who logged out.
    [logged_out] = events(ingest, "Logged Out")
    assert logged_out["properties"]["$device_id"] == UUID4


def test_options_are_passed_as_for_wsgi(asgi_site):
    site = asgi_site()
    with site.serving(fastapi_app(site, cookie_name="did", domain=".example.com", secure=True)):
        _, headers, _ = site.request("/shop/boots", VISIT)
    [cookie] = [c for c in headers.get_all("Set-Cookie") if c.startswith("did=")]
    assert cookie and "Domain=.example.com" in cookie and "Secure" in cookie
    with pytest.raises(TypeError, match="colour"):
        MixpanelMiddleware(plain_asgi_page, colour="red")


def test_lifespan_and_websockets_pass_through_untouched(asgi_site, ingest):
    site = asgi_site()
    started: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append("up")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"{text} {current_device_id()}")
        await websocket.close()

    app.add_middleware(MixpanelMiddleware)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=site.provider)
    with site.serving(app):
        with websocket_connect(site.base.replace("http", "ws") + "/echo") as socket:
            socket.send("hello")
            answer = socket.recv(timeout=10)
    assert started == ["up"]
    assert answer == "hello None"


def test_helpers_in_tasks_and_executors(asgi_site, ingest):
    site = asgi_site()
    app = FastAPI()

    @app.post("/login")
    async def login() -> PlainTextResponse:
        otel_mixpanel.identify("user-7")
        await asyncio.create_task(track_later("Task Event"))
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        await loop.run_in_executor(None, context.run, otel_mixpanel.track, "Executor Event", {})
        await asyncio.to_thread(otel_mixpanel.track, "To Thread Event")  # copies the context itself
        return PlainTextResponse("ok")

    app.add_middleware(MixpanelMiddleware)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=site.provider)
    with site.serving(app):
        connection = http.client.HTTPConnection(urllib.parse.urlsplit(site.base).netloc, timeout=10)
        connection.request("POST", "/login", headers={**VISIT, "Cookie": f"{COOKIE}={UUID4}"})
        assert connection.getresponse().status == 200
        connection.close()
        site.flush()
    for name in ("Task Event", "Executor Event", "To Thread Event"):
        [event] = events(ingest, name)
        assert (event["properties"]["$device_id"], event["properties"]["$user_id"]) == (UUID4, "user-7")


async def track_later(name: str) -> None:
    await asyncio.sleep(0)
    otel_mixpanel.track(name)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=200)), max_size=8),
       st.binary(max_size=100), st.binary(max_size=100))
def test_any_scope_bytes_give_an_environ(headers, raw_path, query):
    environ = request_environ({"type": "http", "headers": headers, "raw_path": raw_path, "query_string": query,
                               "path": "/", "scheme": "https"})
    assert environ["PATH_INFO"] and all(isinstance(v, str) for v in environ.values())
    assert environ["wsgi.url_scheme"] == "https"


def test_warning_without_identity_recommends_the_asgi_middleware(asgi_site, ingest, caplog):
    site = asgi_site()
    app = FastAPI()

    @app.get("/")
    async def home() -> PlainTextResponse:
        otel_mixpanel.track("Anonymous Thing")
        return PlainTextResponse("ok")

    FastAPIInstrumentor.instrument_app(app, tracer_provider=site.provider)
    with caplog.at_level("WARNING", logger="otel_mixpanel"), site.serving(app):
        for _ in range(2):
            assert site.request("/", VISIT)[0] == 200
        site.flush()
    [warning] = [r.getMessage() for r in caplog.records if "without a user" in r.getMessage()]
    assert "app.add_middleware(otel_mixpanel.web.asgi.MixpanelMiddleware)" in warning
    assert "WSGI" not in warning


def test_the_wsgi_middleware_refuses_an_asgi_app_with_the_fix():
    for app in (FastAPI(), plain_asgi_page):
        with pytest.raises(TypeError, match=r"otel_mixpanel\.web\.asgi\.MixpanelMiddleware"):
            WsgiMiddleware(app)
