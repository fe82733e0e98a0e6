"""A FastAPI shop, served by uvicorn, whose visits and business events reach Mixpanel.

Run it (settings come from the environment; see docs/web.md):

    OTEL_EXPORTER_MIXPANEL_TOKEN=<project token> python examples/fastapi_app.py --port 8000

or with zero code for tracing, the exporter chosen by name:

    OTEL_TRACES_EXPORTER=mixpanel OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
        opentelemetry-instrument python examples/fastapi_app.py

``--port 0`` (or ``PORT=0``) picks a free port; the first line printed says which.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import socket
from urllib.parse import parse_qs

import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.web import identify, reset_device_id, set_profile, set_user, track
from otel_mixpanel.web.asgi import MixpanelMiddleware

# Demo sessions: a random id in a cookie, the user id in memory. A real app uses its own.
SESSIONS: dict[str, str] = {}
ACCOUNTS: dict[str, dict[str, str]] = {}
_user_numbers = itertools.count(1)
SESSION_COOKIE = "session"


async def known_user(request: Request) -> str | None:
    """Runs before every handler: the logged-in user, told to the exporter on every request."""
    user_id = SESSIONS.get(request.cookies.get(SESSION_COOKIE, ""))
    if user_id:
        set_user(user_id)
    return user_id


app = FastAPI(dependencies=[Depends(known_user)])
app.add_middleware(MixpanelMiddleware)
# Under opentelemetry-instrument FastAPI is already instrumented, and this does nothing.
FastAPIInstrumentor.instrument_app(app)


def page(title: str, body: str = "", status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>{title}</title><h1>{title}</h1>{body}", status_code)


async def form(request: Request) -> dict[str, str]:
    # parse_qs rather than FastAPI's Form(), which needs python-multipart.
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


@app.get("/")
async def home() -> HTMLResponse:
    return page("Shop")


@app.get("/pricing")
async def pricing() -> HTMLResponse:
    return page("Pricing")


@app.post("/signup")
async def signup(request: Request) -> HTMLResponse:
    fields = await form(request)
    plan = fields.get("plan", "free")
    ACCOUNTS[fields["email"]] = {"user_id": f"u-{next(_user_numbers)}", "plan": plan}
    track("Signed Up", {"plan": plan})
    return page("Account created", "<p>Please log in.</p>")


@app.post("/login")
async def login(request: Request) -> Response:
    fields = await form(request)
    account = ACCOUNTS.get(fields.get("email", ""))
    if account is None:
        return page("Unknown account", status_code=401)
    identify(account["user_id"])
    track("Logged In", {"method": "password"})
    set_profile({"$email": fields["email"], "plan": account["plan"]})
    response = page("Welcome back")
    session = secrets.token_urlsafe(16)
    SESSIONS[session] = account["user_id"]
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax")
    return response


@app.get("/account")
async def account(user_id: str | None = Depends(known_user)) -> HTMLResponse:
    if user_id is None:
        return page("Please log in", status_code=401)
    return page("Your account")


@app.post("/checkout")
async def checkout(request: Request) -> HTMLResponse:
    fields = await form(request)
    track("Purchased", {"amount": float(fields["amount"]), "currency": "EUR"})
    return page("Thank you")


@app.get("/logout")
async def logout(request: Request) -> HTMLResponse:
    track("Logged Out")
    SESSIONS.pop(request.cookies.get(SESSION_COOKIE, ""), None)
    # The next visits are a new anonymous visitor, not the user who just left.
    reset_device_id()
    response = page("Logged out")
    response.delete_cookie(SESSION_COOKIE)
    return response


def configure_tracing() -> None:
    """Send spans to Mixpanel, unless opentelemetry-instrument has already set tracing up."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(MixpanelSpanExporter()))
    trace.set_tracer_provider(provider)


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for listening in sockets or ():
            host, port = listening.getsockname()[:2]
            print(f"listening on http://{host}:{port}", flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Sends what is still queued. Here, not after serve() returns: uvicorn raises the SIGTERM it caught
        # again once serving ends, and the default handler ends the process before any later line runs.
        trace.get_tracer_provider().shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FastAPI example for otel-mixpanel")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    configure_tracing()
    # A socket of our own, so that --port 0 can say which port it got.
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((args.host, args.port))
    server = _Server(uvicorn.Config(app, log_level="warning"))
    # uvicorn handles SIGINT and SIGTERM itself: it finishes the requests under way, then shuts down.
    asyncio.run(server.serve(sockets=[listening]))


if __name__ == "__main__":
    main()
