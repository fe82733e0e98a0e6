"""The mixpanel_capture fixture, used as an application's own test suite uses it: a pytest run of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

APP_TESTS = '''
import flask
import pytest
from opentelemetry.instrumentation.flask import FlaskInstrumentor

import otel_mixpanel
from otel_mixpanel.web.flask import MixpanelFlask

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
# What a browser sends when it loads a page.
PAGE_LOAD = {"User-Agent": IPHONE, "Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Dest": "document"}
app = flask.Flask(__name__)
FlaskInstrumentor().instrument_app(app)
MixpanelFlask(app)


@app.get("/pricing")
def pricing():
    return "prices"


@app.post("/signup")
def signup():
    otel_mixpanel.identify("u-1")
    otel_mixpanel.track("Signed Up", {"plan": flask.request.form["plan"]})
    otel_mixpanel.set_profile({"plan": flask.request.form["plan"]})
    return "welcome"


def test_a_visit_and_a_sign_up_are_captured(mixpanel_capture):
    client = app.test_client()
    client.get("/pricing?utm_source=newsletter", headers=PAGE_LOAD)
    client.post("/signup", data={"plan": "pro"})
    assert mixpanel_capture.event_names() == ["$mp_web_page_view", "Signed Up"]
    [view] = mixpanel_capture.events_named("$mp_web_page_view")
    assert view["current_url_path"] == "/pricing" and view["utm_source"] == "newsletter"
    assert view["$os"] == "iOS" and view["$device_id"]
    [signup] = mixpanel_capture.events_named("Signed Up")
    assert signup["plan"] == "pro" and signup["$user_id"] == "u-1"
    assert signup["$device_id"] == view["$device_id"]
    [update] = [u for u in mixpanel_capture.profile_updates if "plan" in u.get("$set", {})]
    assert update["$distinct_id"] == "u-1" and update["$set"]["plan"] == "pro"


def test_each_test_starts_empty(mixpanel_capture):
    assert mixpanel_capture.records == []
    app.test_client().get("/pricing", headers=PAGE_LOAD)
    assert mixpanel_capture.event_names() == ["$mp_web_page_view"]


def test_spans_outside_a_request_convert_too(mixpanel_capture):
    from opentelemetry import trace

    with trace.get_tracer("jobs").start_as_current_span("nightly-import") as span:
        span.set_attribute("enduser.id", "ops-7")
        otel_mixpanel.track("Orders Imported", {"count": 12})
    [job] = mixpanel_capture.events_named("Orders Imported")
    assert job["count"] == 12 and job["distinct_id"] == "ops-7"
'''

APP_WITH_ITS_OWN_PROVIDER = '''
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_mixpanel

already_there = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(already_there))
trace.set_tracer_provider(provider)


def test_the_application_provider_keeps_its_processors(mixpanel_capture):
    with trace.get_tracer("app").start_as_current_span("work") as span:
        span.set_attribute("enduser.id", "u-9")
        otel_mixpanel.track("Worked")
    assert mixpanel_capture.event_names() == ["Worked"]
    assert [s.name for s in already_there.get_finished_spans()] == ["work"]
'''


def run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_app.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTEST_"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_the_fixture_captures_what_an_app_would_send_without_a_server_or_token(tmp_path):
    result = run_pytest(tmp_path, APP_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_fixture_joins_a_tracer_provider_the_application_has_set(tmp_path):
    result = run_pytest(tmp_path, APP_WITH_ITS_OWN_PROVIDER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_failing_assertion_on_the_capture_fails_the_users_test(tmp_path):
    result = run_pytest(tmp_path, '''
        def test_expects_an_event_that_never_happens(mixpanel_capture):
            assert mixpanel_capture.event_names() == ["Signed Up"]
    ''')
    assert result.returncode == 1 and "1 failed" in result.stdout
