"""``python -m otel_mixpanel.demo``: one visit, printed as what Mixpanel would receive."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from otel_mixpanel.demo import demo


def _check(result: dict) -> None:
    events = result["events"]
    assert [e["event"] for e in events] == ["$mp_web_page_view", "Signed Up", "Logged In", "$mp_web_page_view"]
    devices = {e["properties"]["$device_id"] for e in events}
    assert len(devices) == 1
    assert [e["properties"].get("$user_id") for e in events] == [None, None, "user-1001", "user-1001"]
    landing = events[0]["properties"]
    assert landing["utm_source"] == "google" and landing["$referring_domain"] == "www.google.com"
    assert landing["$device"] == "iPhone" and landing["current_url_path"] == "/"
    assert events[3]["properties"]["current_url_path"] == "/account"
    (profile,) = result["profile_updates"]
    assert profile["$distinct_id"] == "user-1001" and profile["$set"]["$email"] == "ada@example.com"


@pytest.mark.parametrize("real_instrumentation", [True, False], ids=["instrumentation-wsgi", "built-in-span"])
def test_demo_prints_the_visit_as_json(real_instrumentation):
    out = io.StringIO()
    result = demo(out, real_instrumentation=real_instrumentation)
    _check(result)
    assert json.loads(out.getvalue()) == result


def test_demo_runs_as_a_module():
    run = subprocess.run([sys.executable, "-m", "otel_mixpanel.demo"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    _check(json.loads(run.stdout))
    assert "4 event(s) and 1 profile update(s)" in run.stderr
