"""The examples, run as their users run them, driven over loopback HTTP like a browser.

Each app runs in its own process, exporting to an IngestServer; the test checks what
Mixpanel would have received: page views and business events with one ``$device_id``
throughout, and ``$user_id`` from the login on.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from otel_mixpanel.testing.ingest_server import IngestServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PAGE_VIEW = "$mp_web_page_view"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(EXAMPLES))

from browser import Browser, visit  # noqa: E402  (examples/ is not a package)


def example_env(ingest: IngestServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "PYTHONPATH", "DJANGO_SETTINGS_MODULE"))}
    env.update({
        "OTEL_EXPORTER_MIXPANEL_TOKEN": "example-token",
        "OTEL_EXPORTER_MIXPANEL_ENDPOINT": ingest.url,
        "OTEL_EXPORTER_MIXPANEL_SPOOL": "memory",
        "OTEL_EXPORTER_MIXPANEL_SCHEDULE_DELAY": "50",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@contextmanager
def running(command: list[str], env: dict[str, str], ready: str, output: list[str] | None = None) -> Iterator[str]:
    """Start ``command``; yield the base URL once a line of its output matches ``ready``.

    ``output`` receives the process's output lines as they come.
    """
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: queue.Queue[str] = queue.Queue()
    output = [] if output is None else output

    def pump() -> None:
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 30
    url = None
    try:
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{command} did not start:\n{''.join(output)}")
            found = re.search(ready, line)
            url = found and found.group(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    errors = [line for line in output if "Traceback" in line or "Exception" in line]
    assert not errors, "".join(output)


EXPECTED = [  # (event, path of its request, identified)
    (PAGE_VIEW, "/", False),
    (PAGE_VIEW, "/pricing", False),
    ("Signed Up", None, False),
    ("Logged In", None, True),
    (PAGE_VIEW, "/account", True),
    ("Purchased", None, True),
]


def check_journey(ingest: IngestServer, device: str) -> None:
    """Called once the app has stopped: it sends what it holds on its way out, so every event it would
    ever send is in, and an unexpected extra one would show."""
    ingest.wait_for(len(EXPECTED), timeout=15)
    events = sorted(ingest.events(), key=lambda e: e["properties"]["time"])
    check_events(events, ingest.wait_for(2, timeout=5, what="profiles"), device)


def check_events(events: list[dict], profiles: list[dict], device: str) -> None:
    assert [e["event"] for e in events] == [name for name, _, _ in EXPECTED], events
    user_id = events[3]["properties"].get("$user_id")
    assert user_id and user_id.startswith("u-")
    for event, (name, path, identified) in zip(events, EXPECTED):
        properties = event["properties"]
        assert properties["$device_id"] == device, event
        assert properties.get("$user_id") == (user_id if identified else None), event
        if path is not None:
            assert properties["current_url_path"] == path, event
    landing = events[0]["properties"]
    assert landing["utm_source"] == "google" and landing["utm_campaign"] == "spring", landing
    assert landing["$referring_domain"] == "www.google.com", landing
    assert landing["$device"] == "iPhone" and landing["$os"] == "iOS", landing
    assert events[5]["properties"]["amount"] == 49.5
    assert any(p.get("$distinct_id") == user_id and p.get("$set", {}).get("$email") == "ada@example.com"
               for p in profiles), profiles
    # The first touch (a Google ad) on every event, and on the profile once the user logged in.
    for event in events:
        assert event["properties"]["$initial_referrer"] == "https://www.google.com/", event
        assert event["properties"]["$initial_referring_domain"] == "www.google.com", event
        # And the ad's campaign, as mixpanel-js keeps its utm_* super properties.
        assert (event["properties"]["utm_source"], event["properties"]["utm_campaign"]) == ("google", "spring"), event
    first_touch = [p["$set_once"] for p in profiles if p.get("$distinct_id") == user_id and "$set_once" in p]
    assert first_touch and first_touch[0]["initial_utm_campaign"] == "spring", profiles


LISTENING = r"listening on (http://\S+)"


def test_readme_demo_prints_what_a_visit_sends():
    run = subprocess.run([sys.executable, str(EXAMPLES / "demo.py")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
    assert run.returncode == 0, run.stderr
    received = json.loads(run.stdout)
    device = received["events"][0]["properties"]["$device_id"]
    check_events(received["events"], received["profile_updates"], device)
    assert "6 events and 2 profile update(s)" in run.stderr


@pytest.mark.parametrize("example, extra_env", [
    # wsgiref with the stable conventions: the instrumentation records no url.path there.
    ("wsgi_app.py", {"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}),
    ("flask_app.py", {}),
    ("django_app.py", {"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup"}),
    ("django_app.py --asgi", {}),
    ("fastapi_app.py", {}),
    ("fastapi_app.py", {"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}),
])
def test_example_app(example, extra_env):
    with IngestServer() as ingest:
        env = example_env(ingest, **extra_env)
        script, *options = example.split()
        with running([sys.executable, str(EXAMPLES / script), "--port", "0", *options], env, LISTENING) as base:
            device = visit(base)
        check_journey(ingest, device)


@pytest.mark.parametrize("example, sampling", [
    ("flask_app.py", {}),
    ("fastapi_app.py", {}),
    # Tracing samples nothing, yet every request reaches Mixpanel (docs/sampling.md).
    ("flask_app.py", {"OTEL_TRACES_SAMPLER": "mixpanel_parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}),
])
def test_example_with_zero_code_instrumentation(example, sampling):
    with IngestServer() as ingest:
        env = example_env(ingest, OTEL_TRACES_EXPORTER="mixpanel", OTEL_METRICS_EXPORTER="none",
                          OTEL_LOGS_EXPORTER="none", PORT="0", **sampling)
        command = [str(BIN / "opentelemetry-instrument"), sys.executable, str(EXAMPLES / example)]
        with running(command, env, LISTENING) as base:
            device = visit(base)
        check_journey(ingest, device)


def test_gunicorn_example_with_preload_and_several_workers(tmp_path):
    gunicorn = shutil.which("gunicorn", path=str(BIN))
    assert gunicorn, "gunicorn is not installed next to the test interpreter"
    with IngestServer() as ingest:
        command = [gunicorn, "-c", str(EXAMPLES / "gunicorn.conf.py"), "--chdir", str(EXAMPLES),
                   "--bind", "127.0.0.1:0", "flask_app:app"]
        output: list[str] = []
        # The workers share one on-disk spool, as they would in production.
        env = example_env(ingest, OTEL_EXPORTER_MIXPANEL_SPOOL="sqlite", OTEL_EXPORTER_MIXPANEL_SPOOL_DIR=str(tmp_path))
        with running(command, env, r"Listening at: (http://\S+)", output) as base:
            device = visit(base)
        # A stopping worker makes one bounded delivery attempt and leaves what is still spooled to the next
        # process (docs/delivery.md); here the next process is the documented `otel-mixpanel drain`.
        drain = subprocess.run([str(BIN / "otel-mixpanel"), "drain", "--timeout-ms", "20000"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert drain.returncode == 0, drain.stdout + drain.stderr
        check_journey(ingest, device)
        sent = ingest.accepted_insert_ids()
    assert len(sent) == len(set(sent)), "an event was sent twice"
    assert sum("Booting worker" in line for line in output) >= 2, "".join(output)


def _js_sdk_cookie(browser: Browser, token: str, device_id: str) -> None:
    """What Mixpanel's JavaScript SDK leaves in the browser: mp_<token>_mixpanel, URL-encoded JSON."""
    value = urllib.parse.quote(f'{{"distinct_id":"$device:{device_id}","$device_id":"{device_id}"}}')
    host = urllib.parse.urlsplit(browser.base).hostname
    browser.jar.set_cookie(http.cookiejar.Cookie(
        0, f"mp_{token}_mixpanel", value, None, False, host, False, False, "/", True, False, None, True,
        None, None, {}))


def test_hybrid_js_sdk_device_id_and_logout_reset():
    """The JS SDK's device id is reused; after logout (no JS SDK) a new anonymous device starts."""
    with IngestServer() as ingest:
        with running([sys.executable, str(EXAMPLES / "wsgi_app.py"), "--port", "0"], example_env(ingest),
                     LISTENING) as base:
            hybrid = Browser(base)
            _js_sdk_cookie(hybrid, "example-token", "18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2")
            assert hybrid.open("/pricing") == 200
            assert hybrid.cookie() == "18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2"

            server_only = Browser(base)
            assert server_only.open("/signup", {"email": "bob@example.com"}) == 200
            assert server_only.open("/login", {"email": "bob@example.com"}) == 200
            before = server_only.cookie()
            assert server_only.open("/logout") == 200
            after = server_only.cookie()
            assert after and after != before
            assert server_only.open("/") == 200

            events = ingest.wait_for(6, timeout=15)
    by_name = {}
    for event in sorted(events, key=lambda e: e["properties"]["time"]):
        by_name.setdefault(event["event"], []).append(event["properties"])
    assert by_name[PAGE_VIEW][0]["$device_id"] == "18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2"
    logged_out = by_name["Logged Out"][0]
    assert logged_out["$device_id"] == before and logged_out["$user_id"].startswith("u-")
    logout_page, fresh_visit = by_name[PAGE_VIEW][1:]
    assert logout_page["$device_id"] == before
    assert fresh_visit["$device_id"] == after and "$user_id" not in fresh_visit
