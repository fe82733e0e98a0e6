"""Shared fixtures: a Mixpanel-like ingestion server and instrumented WSGI sites on loopback."""

from __future__ import annotations

import http.client
import os
import threading
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_mixpanel
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.testing.ingest_server import IngestServer, stop_serving

# The delivery tests' fixtures (``server``, ``make_sender``), for every test module.
pytest_plugins = ["delivery_helpers"]

SEMCONV_MODES = ("old", "http", "http/dup")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# What Chrome 120 sends with every page it loads, beside its User-Agent.
NAVIGATION = {
    "Accept": ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,"
               "*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "none",
}
# Without the web middleware, header capture is how these reach the span.
NAVIGATION_CAPTURE = "accept,sec-fetch-dest,sec-fetch-mode"


def pytest_sessionstart(session: pytest.Session) -> None:
    """An editable install's compiled modules (setup.py) shadow their sources: edited since, they would be tested
    instead of the code as it now reads."""
    package = Path(otel_mixpanel.__file__).parent
    stale = [str(source.relative_to(package.parent)) for source in package.rglob("*.py")
             for suffix in EXTENSION_SUFFIXES
             if source.with_suffix(suffix).exists()
             and source.with_suffix(suffix).stat().st_mtime < source.stat().st_mtime]
    if stale:
        raise pytest.UsageError(f"changed since the build compiled them: {', '.join(stale)}; run `pip install -e .` "
                                "again (OTEL_MIXPANEL_COMPILE=0 builds pure Python)")


@pytest.fixture(autouse=True)
def _own_environment() -> Iterator[None]:
    """Tests state their settings: nothing leaks in from the machine's environment or out to the next test."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("OTEL_EXPORTER_MIXPANEL_", "OTEL_SEMCONV_", "OTEL_INSTRUMENTATION_HTTP_CAPTURE")):
            del os.environ[name]
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def ingest() -> Iterator[IngestServer]:
    with IngestServer() as server:
        yield server


def use_semconv_mode(mode: str) -> None:
    """Make opentelemetry-instrumentation read OTEL_SEMCONV_STABILITY_OPT_IN again, as a new process would."""
    if mode == "old":
        os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    else:
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = mode
    _OpenTelemetrySemanticConventionStability._initialized = False
    _OpenTelemetrySemanticConventionStability._initialize()


def quick_delivery(**settings: Any) -> dict[str, Any]:
    """Settings for a test exporter: in-memory spool, short delays."""
    defaults = {"token": "test-token", "spool": "memory", "schedule_delay_ms": 20, "timeout_ms": 2000,
                "retry_initial_ms": 20, "retry_max_ms": 100}
    defaults.update(settings)
    return defaults


class InFlight:
    """Counts requests an app is still serving, so a test can wait until every request's span has ended."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def _started(self) -> None:
        with self._changed:
            self._count += 1

    def _finished(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_until_none(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)


class RequestsInFlight(InFlight):
    """WSGI wrapper counting requests whose span the OpenTelemetry middleware inside has not ended yet: it ends
    a request's span when the response body is exhausted or closed, whichever comes first."""

    def __init__(self, app: Callable) -> None:
        super().__init__()
        self._app = app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        self._started()
        try:
            return _ClosingBody(self._app(environ, start_response), self._finished)
        except BaseException:
            self._finished()
            raise


class _ClosingBody:
    """The middleware's body, calling ``finished`` once, after the span has ended. Exhaustion counts as well as
    close(): werkzeug skips close() when the client resets the connection while it drains the socket."""

    def __init__(self, body: Any, finished: Callable[[], None]) -> None:
        self._body = body
        self._finished = finished
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body
        self._finish()

    def close(self) -> None:
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._finished()


class Site:
    """A WSGI app behind the real OpenTelemetry WSGI middleware, served on loopback, exporting to Mixpanel.

    Requests are a browser's page loads (``NAVIGATION``) unless ``navigation=False``, and the
    instrumentation captures the headers that say so unless ``capture_navigation=False``.
    """

    def __init__(self, app: Callable, ingest: IngestServer, *, mode: str = "old", server: str = "werkzeug",
                 processor: str = "batch", capture_headers: str | None = None, capture_navigation: bool = True,
                 **settings: Any) -> None:
        use_semconv_mode(mode)
        captured = [h for h in (capture_headers, NAVIGATION_CAPTURE if capture_navigation else None) if h]
        if captured:
            # Read by the WSGI middleware when it is built, as in an application set up from the environment.
            os.environ["OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"] = ",".join(captured)
        else:
            os.environ.pop("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", None)
        self.exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, **settings))
        self.provider = TracerProvider()
        span_processor = (BatchSpanProcessor(self.exporter, schedule_delay_millis=20) if processor == "batch"
                          else SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(span_processor)
        self.tracer = self.provider.get_tracer("tests")
        self._requests = RequestsInFlight(OpenTelemetryMiddleware(app, tracer_provider=self.provider))
        self._server = _make_server(server, self._requests)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def request(self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                body: bytes | None = None, navigation: bool = True) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers={**(NAVIGATION if navigation else {}),
                                                                  **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def flush(self) -> None:
        # A client has its answer before the server has closed the response, which ends the request's span.
        # A deadline for a hung request, not a clock: passing runs wait milliseconds, a loaded machine seconds.
        assert self._requests.wait_until_none(60), "a request did not finish"
        self.provider.force_flush()
        assert self.exporter.force_flush(5000), "events were not all delivered"

    def close(self) -> None:
        stop_serving(self._server)
        self.provider.shutdown()


def _make_server(kind: str, app: Callable):
    if kind in ("werkzeug", "dual-stack"):
        # Werkzeug's server passes RAW_URI/REQUEST_URI, as gunicorn and uWSGI do.
        from werkzeug.serving import make_server

        # dual-stack: an IPv6 socket that takes IPv4 connections too, whose peers are IPv4-mapped (::ffff:a.b.c.d).
        return make_server("::" if kind == "dual-stack" else "127.0.0.1", 0, app, threaded=True)
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    return make_server("127.0.0.1", 0, app, handler_class=QuietHandler)


@pytest.fixture
def site_factory(ingest: IngestServer) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(app: Callable, **options: Any) -> Site:
        site = Site(app, ingest, **options)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.close()
    use_semconv_mode("old")


@pytest.fixture
def pipeline(ingest: IngestServer) -> Iterator[Callable[..., tuple[MixpanelSpanExporter, Any]]]:
    """``pipeline(**settings)``: an exporter to ``ingest`` behind a SimpleSpanProcessor, and a tracer using it."""
    providers: list[TracerProvider] = []

    def make(**settings: Any) -> tuple[MixpanelSpanExporter, Any]:
        exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, **settings))
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        return exporter, provider.get_tracer("tests")

    yield make
    for provider in providers:
        provider.shutdown()


def record_spans(body: Callable[[Any], None]) -> tuple:
    """The finished SDK spans of ``body(tracer)``, as an instrumented process would hand them to an exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    body(provider.get_tracer("tests"))
    return memory.get_finished_spans()


def text_app(environ: dict, start_response: Callable) -> list[bytes]:
    """A page that answers 200, or the status asked for in ``?status=``."""
    status = "404 Not Found" if environ.get("PATH_INFO", "").startswith("/missing") else "200 OK"
    start_response(status, [("Content-Type", "text/html")])
    # No body for HEAD, as frameworks do: werkzeug's server sends what the app returns, and a client that closes
    # with those bytes unread resets the connection.
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"<html>ok</html>"]


def without_volatile(properties: dict[str, Any]) -> dict[str, Any]:
    """Properties minus what differs between two otherwise equal requests."""
    return {k: v for k, v in properties.items() if k not in ("time", "$insert_id")}
