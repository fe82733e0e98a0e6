"""A single-file Django shop with DjangoInstrumentor and otel-mixpanel's Django middleware.

    OTEL_EXPORTER_MIXPANEL_TOKEN=<project token> python examples/django_app.py --port 8000

``--asgi`` serves it as an ASGI application under uvicorn instead of a WSGI server.
``--port 0`` (or ``PORT=0``) picks a free port; the first line printed says which.
In a project, the settings below go to settings.py and the tracing set-up to wsgi.py
or asgi.py (before ``get_wsgi_application()``/``get_asgi_application()``, which build
the middleware chain). The pricing page is an async view.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from otel_mixpanel.web import identify, reset_device_id, set_profile, set_user, track

settings.configure(
    DEBUG=False,
    # Demo value; a real project reads its secret from its configuration.
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-secret"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    # Signed-cookie sessions, so that the example needs no database.
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "otel_mixpanel.web.django.MixpanelMiddleware",
    ],
    # DeviceIdOptions fields; the defaults are fine, this only shows where they go.
    OTEL_MIXPANEL_WEB={"samesite": "Lax"},
    INSTALLED_APPS=[],
)

ACCOUNTS: dict[str, dict[str, str]] = {}
_user_numbers = itertools.count(1)


def page(title: str, status: int = 200) -> HttpResponse:
    return HttpResponse(f"<!doctype html><title>{title}</title><h1>{title}</h1>", status=status)


def known_user(view):
    """Tells the exporter who the logged-in user is, for sync and async views alike."""
    if iscoroutinefunction(view):
        async def wrapped_async(request, *args, **kwargs):
            if "user_id" in request.session:
                set_user(request.session["user_id"])
            return await view(request, *args, **kwargs)
        return wrapped_async

    def wrapped(request, *args, **kwargs):
        if "user_id" in request.session:
            set_user(request.session["user_id"])
        return view(request, *args, **kwargs)
    return wrapped


@require_GET
@known_user
def home(request):
    return page("Shop")


@require_GET
@known_user
async def pricing(request):
    return page("Pricing")


# The example's forms have no CSRF token; a real site keeps CsrfViewMiddleware on.
@csrf_exempt
@require_POST
def signup(request):
    plan = request.POST.get("plan", "free")
    ACCOUNTS[request.POST["email"]] = {"user_id": f"u-{next(_user_numbers)}", "plan": plan}
    track("Signed Up", {"plan": plan})
    return page("Account created")


@csrf_exempt
@require_POST
def login(request):
    account = ACCOUNTS.get(request.POST.get("email", ""))
    if account is None:
        return page("Unknown account", 401)
    request.session["user_id"] = account["user_id"]
    identify(account["user_id"])
    track("Logged In", {"method": "password"})
    set_profile({"$email": request.POST["email"], "plan": account["plan"]})
    return page("Welcome back")


@require_GET
@known_user
def account(request):
    return page("Your account") if "user_id" in request.session else page("Please log in", 401)


@csrf_exempt
@require_POST
@known_user
def checkout(request):
    track("Purchased", {"amount": float(request.POST["amount"]), "currency": "EUR"})
    return page("Thank you")


@require_GET
@known_user
def logout(request):
    track("Logged Out")
    request.session.flush()
    reset_device_id(request)
    return page("Logged out")


urlpatterns = [
    path("", home), path("pricing", pricing), path("signup", signup), path("login", login),
    path("account", account), path("checkout", checkout), path("logout", logout),
]


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_asgi(host: str, port: int) -> None:
    """uvicorn, on a socket of our own so that --port 0 can say which port it got."""
    import asyncio
    import socket

    import uvicorn
    from django.core.asgi import get_asgi_application

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            print(f"listening on http://{host}:{listening.getsockname()[1]}", flush=True)

    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    server = Server(uvicorn.Config(get_asgi_application(), log_level="warning", lifespan="off"))
    # uvicorn handles SIGINT and SIGTERM itself: it finishes the requests under way, then returns.
    asyncio.run(server.serve(sockets=[listening]))


def main(argv: list[str] | None = None) -> None:
    from django.core.wsgi import get_wsgi_application
    from opentelemetry import trace
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_mixpanel import MixpanelSpanExporter

    parser = argparse.ArgumentParser(description="Django example for otel-mixpanel")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--asgi", action="store_true", help="serve with uvicorn as an ASGI application")
    args = parser.parse_args(argv)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(MixpanelSpanExporter()))
    trace.set_tracer_provider(provider)
    django.setup()
    DjangoInstrumentor().instrument()
    if args.asgi:
        try:
            serve_asgi(args.host, args.port)
        finally:
            provider.shutdown()
        return
    application = get_wsgi_application()
    server = make_server(args.host, args.port, application, server_class=ThreadingWSGIServer,
                         handler_class=QuietHandler)
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
