"""A Flask shop whose visits and business events reach Mixpanel through OpenTelemetry.

Run it (settings come from the environment; see docs/web.md):

    OTEL_EXPORTER_MIXPANEL_TOKEN=<project token> python examples/flask_app.py --port 8000

or with zero code for tracing, the exporter chosen by name:

    OTEL_TRACES_EXPORTER=mixpanel OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
        opentelemetry-instrument python examples/flask_app.py

or under gunicorn: ``gunicorn -c examples/gunicorn.conf.py --chdir examples flask_app:app``.
``--port 0`` (or ``PORT=0``) picks a free port; the first line printed says which.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import flask
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.web import identify, reset_device_id, set_profile, set_user, track
from otel_mixpanel.web.flask import MixpanelFlask

app = flask.Flask(__name__)
# Demo value; a real app reads its secret from its configuration.
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "example-only-secret")
# Under opentelemetry-instrument Flask is already instrumented, and this does nothing.
FlaskInstrumentor().instrument_app(app)
MixpanelFlask(app)



def user_id_for(email: str) -> str:
    """The same id in every worker process: a real shop would read it from its user database."""
    return "u-" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:12]


def page(title: str, body: str = "") -> str:
    return f"<!doctype html><title>{title}</title><h1>{title}</h1>{body}"


@app.before_request
def known_user():
    if "user_id" in flask.session:
        set_user(flask.session["user_id"])


@app.get("/")
def home():
    return page("Shop")


@app.get("/pricing")
def pricing():
    return page("Pricing")


@app.post("/signup")
def signup():
    email = flask.request.form["email"]
    plan = flask.request.form.get("plan", "free")
    # Kept in the signed session cookie rather than in this process's memory: under gunicorn the login
    # may reach another worker than the sign-up did.
    flask.session["account"] = {"email": email, "user_id": user_id_for(email), "plan": plan}
    track("Signed Up", {"plan": plan})
    return page("Account created", "<p>Please log in.</p>")


@app.post("/login")
def login():
    account = flask.session.get("account")
    if account is None or account["email"] != flask.request.form["email"]:
        return page("Unknown account"), 401
    flask.session["user_id"] = account["user_id"]
    identify(account["user_id"])
    track("Logged In", {"method": "password"})
    set_profile({"$email": flask.request.form["email"], "plan": account["plan"]})
    return page("Welcome back")


@app.get("/account")
def account():
    if "user_id" not in flask.session:
        return page("Please log in"), 401
    return page("Your account")


@app.post("/checkout")
def checkout():
    track("Purchased", {"amount": float(flask.request.form["amount"]), "currency": "EUR"})
    return page("Thank you")


@app.get("/logout")
def logout():
    track("Logged Out")
    flask.session.clear()
    # The next visits are a new anonymous visitor, not the user who just left.
    reset_device_id()
    return page("Logged out")


def configure_tracing() -> None:
    """Send spans to Mixpanel, unless opentelemetry-instrument has already set tracing up."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(MixpanelSpanExporter()))
    trace.set_tracer_provider(provider)


def main(argv: list[str] | None = None) -> None:
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="Flask example for otel-mixpanel")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    configure_tracing()
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        # Sends what is still queued before the process ends.
        trace.get_tracer_provider().shutdown()


if __name__ == "__main__":
    # SIGTERM ends the server like Ctrl-C, so queued events are still sent.
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
