"""A plain WSGI shop (no framework) with opentelemetry-instrumentation-wsgi and otel-mixpanel.

    OTEL_EXPORTER_MIXPANEL_TOKEN=<project token> python examples/wsgi_app.py --port 8000

``--port 0`` (or ``PORT=0``) picks a free port; the first line printed says which.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import os
import signal
import sys
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.web import MixpanelMiddleware, identify, reset_device_id, set_profile, set_user, track
from otel_mixpanel.web.device_id import parse_cookies

# Demo value; a real app reads its secret from its configuration.
SECRET = os.environ.get("SESSION_SECRET", "example-only-secret").encode()
ACCOUNTS: dict[str, dict[str, str]] = {}
_user_numbers = itertools.count(1)


def signed(user_id: str) -> str:
    return f"{user_id}.{hmac.new(SECRET, user_id.encode(), hashlib.sha256).hexdigest()}"


def session_user(environ: dict) -> str | None:
    for value in parse_cookies(environ.get("HTTP_COOKIE")).get("session", []):
        user_id, _, _ = value.rpartition(".")
        if user_id and hmac.compare_digest(signed(user_id), value):
            return user_id
    return None


def shop(environ: dict, start_response) -> list[bytes]:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
    form = {}
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(length).decode()).items()}
    user_id = session_user(environ)
    if user_id:
        set_user(user_id)
    headers = [("Content-Type", "text/html; charset=utf-8")]
    status, title = "200 OK", None

    if method == "GET" and path in ("/", "/pricing"):
        title = "Shop" if path == "/" else "Pricing"
    elif method == "POST" and path == "/signup":
        ACCOUNTS[form["email"]] = {"user_id": f"u-{next(_user_numbers)}", "plan": form.get("plan", "free")}
        track("Signed Up", {"plan": form.get("plan", "free")})
        title = "Account created"
    elif method == "POST" and path == "/login":
        account = ACCOUNTS.get(form.get("email", ""))
        if account is None:
            status, title = "401 Unauthorized", "Unknown account"
        else:
            identify(account["user_id"])
            track("Logged In", {"method": "password"})
            set_profile({"$email": form["email"], "plan": account["plan"]})
            headers.append(("Set-Cookie", f"session={signed(account['user_id'])}; Path=/; HttpOnly; SameSite=Lax"))
            title = "Welcome back"
    elif method == "GET" and path == "/account":
        status, title = ("200 OK", "Your account") if user_id else ("401 Unauthorized", "Please log in")
    elif method == "POST" and path == "/checkout":
        track("Purchased", {"amount": float(form["amount"]), "currency": "EUR"})
        title = "Thank you"
    elif method == "GET" and path == "/logout":
        track("Logged Out")
        reset_device_id()
        headers.append(("Set-Cookie", "session=; Path=/; Max-Age=0"))
        title = "Logged out"
    else:
        status, title = "404 Not Found", "Not found"
    start_response(status, headers)
    return [f"<!doctype html><title>{title}</title><h1>{title}</h1>".encode()]


# The order of the two middlewares does not matter; inside is where the span already exists.
app = OpenTelemetryMiddleware(MixpanelMiddleware(shop))


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def start(host: str, port: int) -> tuple[WSGIServer, TracerProvider]:
    """The shop's server, not yet serving, and the tracing that sends its events to Mixpanel."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(MixpanelSpanExporter()))
    trace.set_tracer_provider(provider)
    return make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler), provider


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plain WSGI example for otel-mixpanel")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    server, provider = start(args.host, args.port)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        # Sends what is still queued before the process ends.
        provider.shutdown()


if __name__ == "__main__":
    # SIGTERM ends the server like Ctrl-C, so queued events are still sent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
