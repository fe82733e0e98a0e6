"""See what otel-mixpanel sends, without a Mixpanel account: ``python -m otel_mixpanel.demo``.

Starts a Mixpanel look-alike (``IngestServer``) and a small shop (a WSGI app with the
web middleware) on loopback, with the exporter pointed at the look-alike; drives one
visit through real HTTP as an iPhone's Safari would (an anonymous landing from a Google
ad, a sign-up, a login, a page seen logged in); then prints, as JSON on stdout, the
events and profile updates Mixpanel would have received.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import sys
import threading
import urllib.parse
import urllib.request
from socketserver import ThreadingMixIn
from typing import Any, Callable, TextIO
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Tracer

from otel_mixpanel.exporter import MixpanelSpanExporter
from otel_mixpanel.testing.ingest_server import IngestServer
from otel_mixpanel.web import MixpanelMiddleware, identify, set_profile, set_user, track
from otel_mixpanel.web.device_id import parse_cookies

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
LANDING = "/?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&gclid=demo-click"
DEMO_USER = "user-1001"


def shop(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
    """The demo site; its login "session" is an unsigned cookie, acceptable only in a demo."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
    form: dict[str, str] = {}
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(length).decode()).items()}
    logged_in = parse_cookies(environ.get("HTTP_COOKIE")).get("demo_user", [None])[0]
    if logged_in:
        set_user(logged_in)
    headers = [("Content-Type", "text/html; charset=utf-8")]
    if method == "POST" and path == "/signup":
        track("Signed Up", {"plan": form.get("plan", "free"), "referral": "google"})
    elif method == "POST" and path == "/login":
        identify(DEMO_USER)
        track("Logged In", {"method": "password"})
        set_profile({"$email": form.get("email", ""), "$name": "Ada Lovelace", "plan": "pro"})
        headers.append(("Set-Cookie", f"demo_user={DEMO_USER}; Path=/; HttpOnly; SameSite=Lax"))
    start_response("200 OK", headers)
    return [b"<!doctype html><title>Demo shop</title><h1>Demo shop</h1>"]


class _ServerSpans:
    """The server span opentelemetry-instrumentation-wsgi would start, for installs without it."""

    def __init__(self, app: Callable[..., Any], tracer: Tracer) -> None:
        self.app, self.tracer = app, tracer

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        attributes = {
            "http.request.method": method,
            "url.scheme": environ.get("wsgi.url_scheme", "http"),
            "server.address": environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""),
            "client.address": environ.get("REMOTE_ADDR", ""),
            "user_agent.original": environ.get("HTTP_USER_AGENT", ""),
        }
        with self.tracer.start_as_current_span(f"{method} {path}", kind=SpanKind.SERVER,
                                               attributes=attributes) as span:
            def _start_response(status: str, headers: list, *exc_info: Any) -> Any:
                span.set_attribute("http.response.status_code", int(status.split()[0]))
                return start_response(status, headers, *exc_info)

            return list(self.app(environ, _start_response))


def instrumented(app: Callable[..., Any], provider: TracerProvider, real_instrumentation: bool = True):
    """``app`` with the web middleware, behind OpenTelemetry's WSGI middleware when installed."""
    app = MixpanelMiddleware(app)
    if real_instrumentation:
        try:
            from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
        except ImportError:
            pass
        else:
            return OpenTelemetryMiddleware(app, tracer_provider=provider)
    return _ServerSpans(app, provider.get_tracer("otel_mixpanel.demo"))


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _visit(base: str) -> None:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def send(path: str, form: dict[str, str] | None = None, referer: str | None = None) -> None:
        headers = {"User-Agent": IPHONE, **({"Referer": referer} if referer else {})}
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        with opener.open(urllib.request.Request(base + path, data=data, headers=headers), timeout=10) as response:
            response.read()

    send(LANDING, referer="https://www.google.com/")
    send("/signup", {"email": "ada@example.com", "plan": "pro"}, referer=base + "/")
    send("/login", {"email": "ada@example.com"}, referer=base + "/signup")
    send("/account", referer=base + "/login")


def demo(out: TextIO | None = None, real_instrumentation: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Run the demo visit; print and return ``{"events": [...], "profile_updates": [...]}``."""
    out = sys.stdout if out is None else out
    with IngestServer() as ingest:
        exporter = MixpanelSpanExporter(token="demo-project-token", endpoint=ingest.url, spool="memory",
                                        schedule_delay_ms=50)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        server = make_server("127.0.0.1", 0, instrumented(shop, provider, real_instrumentation),
                             server_class=_ThreadingServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            _visit(f"http://127.0.0.1:{server.server_port}")
        finally:
            server.shutdown()
            server.server_close()
            provider.shutdown()
        result = {
            "events": sorted(ingest.events(), key=lambda e: e.get("properties", {}).get("time", 0)),
            "profile_updates": ingest.profile_updates(),
        }
    json.dump(result, out, indent=2, ensure_ascii=False)
    out.write("\n")
    return result


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(prog="python -m otel_mixpanel.demo", description=__doc__.split("\n\n")[1]).parse_args(argv)
    result = demo()
    print(f"Mixpanel would receive {len(result['events'])} event(s) and {len(result['profile_updates'])} "
          "profile update(s), printed above; nothing was sent to Mixpanel.", file=sys.stderr)


if __name__ == "__main__":
    main()
