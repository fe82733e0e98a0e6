"""Background jobs: a real Celery worker and a real Redis broker, both started here on loopback.

The web side is a real WSGI site with the middleware and the Celery instrumentation; the
job runs in a separate worker process with its own exporter. What crosses between them
is only what OpenTelemetry propagates: the trace context and the baggage.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor

import otel_mixpanel
from conftest import IPHONE, Site
from otel_mixpanel.baggage_ids import DEVICE_KEY, USER_KEY, request_context
from otel_mixpanel.testing.ingest_server import IngestServer
from otel_mixpanel.web import MixpanelMiddleware

TESTS = Path(__file__).resolve().parent
DEVICE = "3f2c4b1e-8d7a-4c2e-9b1f-0a1b2c3d4e5f"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of its own, on a free loopback port, with its files in a temp dir."""
    tmp_path = tmp_path_factory.mktemp("redis")
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed (.ci/run installs it)"
    port = free_port()
    process = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
                                "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def jobs_ingest() -> Iterator[IngestServer]:
    """One ingestion server for the module's worker; each test looks for its own events."""
    with IngestServer() as server:
        yield server


@pytest.fixture(scope="module", params=["code", "opentelemetry-instrument"])
def worker(request: pytest.FixtureRequest, broker: str, jobs_ingest: IngestServer) -> Iterator[str]:
    """``celery worker`` for tests/celery_jobs.py, exporting to the ingestion server.

    Tracing is set up by the worker's own code, or by ``opentelemetry-instrument`` with
    the exporter chosen by name (otel-mixpanel's post-instrument hook adds the processor).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"CELERY_BROKER_URL": broker, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1",
                "OTEL_EXPORTER_MIXPANEL_TOKEN": "test-token", "OTEL_EXPORTER_MIXPANEL_ENDPOINT": jobs_ingest.url,
                "OTEL_EXPORTER_MIXPANEL_SPOOL": "memory", "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_EXPORTER_MIXPANEL_SCHEDULE_DELAY": "50"})
    command = [sys.executable, "-m", "celery", "-A", "celery_jobs", "worker", "--pool=solo", "--loglevel=INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if request.param == "opentelemetry-instrument":
        env.update({"OTEL_TRACES_EXPORTER": "mixpanel", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
        command = [str(Path(sys.executable).parent / "opentelemetry-instrument"), *command]
    process = subprocess.Popen(command, env=env, cwd=TESTS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while "ready." not in (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))):
            pass
        yield request.param
    except queue.Empty:
        pytest.fail("the celery worker did not start:\n" + "".join(output))
    finally:
        process.terminate()
        process.wait(30)
    assert "Traceback" not in "".join(output), "".join(output)


@pytest.fixture(scope="module")
def producer(broker: str) -> Iterator[Any]:
    """The enqueuing side: celery_jobs' app on this broker, with the Celery instrumentation."""
    import celery_jobs

    celery_jobs.app.conf.broker_url = broker
    yield celery_jobs
    celery_jobs.app.pool.force_close_all()


@pytest.fixture
def instrumentor() -> Iterator[CeleryInstrumentor]:
    instrumentor = CeleryInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def site(jobs_ingest: IngestServer) -> Iterator[Any]:
    sites: list[Site] = []

    def make(app: Any) -> Site:
        sites.append(Site(app, jobs_ingest))
        return sites[-1]

    yield make
    for made in sites:
        made.close()


def enqueue_from_request(site: Any, instrumentor: CeleryInstrumentor, app: Any, path: str, headers: dict[str, str],
                         **middleware_options: Any) -> None:
    """One request to ``app`` behind the web middleware, the Celery producer instrumented with the site's
    tracer provider, as a web process enqueuing jobs is set up."""
    web = site(MixpanelMiddleware(app, **middleware_options))
    instrumentor.instrument(tracer_provider=web.provider)
    status, _, _ = web.request(path, headers=headers)
    assert status == 200


def job_event(ingest: IngestServer, name: str, **properties: Any) -> dict[str, Any]:
    """The one event ``name`` with these properties, once the worker's exporter has sent it."""
    deadline = time.monotonic() + 30
    while True:
        found = [e for e in ingest.events() if e["event"] == name
                 and all(e["properties"].get(k) == v for k, v in properties.items())]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.02)


def test_a_job_enqueued_by_a_request_carries_its_user_and_device(site, jobs_ingest, worker, producer, instrumentor):
    jobs = producer

    def checkout(environ: dict, start_response: Any) -> list[bytes]:
        otel_mixpanel.identify("user-9")
        jobs.send_receipt.delay(f"order-77 {worker}")
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>thanks</html>"]

    enqueue_from_request(site, instrumentor, checkout, "/checkout",
                         {"User-Agent": IPHONE, "Cookie": f"otel_mp_device_id={DEVICE}",
                          # A client cannot choose the user its jobs run for.
                          "baggage": f"{USER_KEY}=admin,{DEVICE_KEY}=forged"})
    properties = job_event(jobs_ingest, "Receipt Sent", order_id=f"order-77 {worker}")["properties"]
    assert (properties["$device_id"], properties["$user_id"], properties["order_id"]) == (DEVICE, "user-9", f"order-77 {worker}")


def test_a_job_of_an_anonymous_visit_carries_the_device_only(site, jobs_ingest, worker, producer, instrumentor):
    jobs = producer

    def newsletter(environ: dict, start_response: Any) -> list[bytes]:
        jobs.send_receipt.delay(f"newsletter {worker}")
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>subscribed</html>"]

    enqueue_from_request(site, instrumentor, newsletter, "/subscribe",
                         {"Cookie": f"otel_mp_device_id={DEVICE}",
                          "baggage": f"{USER_KEY}=admin"})
    receipt = job_event(jobs_ingest, "Receipt Sent", order_id=f"newsletter {worker}")
    assert receipt["properties"]["$device_id"] == DEVICE
    assert "$user_id" not in receipt["properties"]


def test_a_job_not_tied_to_a_request_has_the_identity_its_span_gives(jobs_ingest, worker, producer, instrumentor):
    instrumentor.instrument()
    producer.nightly_report.delay(worker)
    report = job_event(jobs_ingest, "Report Built", run=worker)
    assert report["properties"]["$user_id"] == "reporting-bot" and "$device_id" not in report["properties"]


def test_a_job_enqueued_while_a_streamed_body_is_produced_carries_the_request_ids(site, jobs_ingest, worker,
                                                                                  producer, instrumentor):
    jobs = producer

    def export(environ: dict, start_response: Any) -> Iterator[bytes]:
        otel_mixpanel.identify("user-11")

        def rows() -> Iterator[bytes]:
            yield b"id,total\n"
            # After the application returned: the server is sending the body.
            jobs.send_receipt.delay(f"streamed {worker}")
            yield b"1,49.5\n"

        start_response("200 OK", [("Content-Type", "text/csv")])
        return rows()

    enqueue_from_request(site, instrumentor, export, "/export.csv",
                         {"User-Agent": IPHONE, "Cookie": f"otel_mp_device_id={DEVICE}",
                          "baggage": f"{USER_KEY}=admin"})
    receipt = job_event(jobs_ingest, "Receipt Sent", order_id=f"streamed {worker}")["properties"]
    assert (receipt["$device_id"], receipt["$user_id"]) == (DEVICE, "user-11")


@pytest.mark.parametrize("request_user", ["user-9", None])
def test_a_job_naming_another_user_does_not_link_the_visitors_device_to_it(site, jobs_ingest, worker, producer,
                                                                            instrumentor, request_user):
    jobs = producer
    run = f"{request_user} {worker}"

    def share(environ: dict, start_response: Any) -> list[bytes]:
        if request_user:
            otel_mixpanel.set_user(request_user)
        jobs.notify_account_owner.delay("owner-5", run)
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>shared</html>"]

    enqueue_from_request(site, instrumentor, share, "/share",
                         {"User-Agent": IPHONE, "Cookie": f"otel_mp_device_id={DEVICE}"})
    notified = job_event(jobs_ingest, "Owner Notified", run=run)["properties"]
    # With the visitor's $device_id, Mixpanel would merge the visitor's device into owner-5.
    assert notified["$user_id"] == "owner-5" and notified["distinct_id"] == "owner-5"
    assert "$device_id" not in notified


def test_the_request_context_holds_ids_only_and_drops_what_the_client_sent():
    forged = baggage.set_baggage(USER_KEY, "admin", context=baggage.set_baggage("cart", "3"))
    token = context.attach(forged)
    try:
        ctx = request_context(DEVICE)
    finally:
        context.detach(token)
    assert baggage.get_all(ctx) == {"cart": "3", DEVICE_KEY: DEVICE}
    assert trace.get_current_span(ctx) is trace.get_current_span(forged)


def test_ids_stay_out_of_the_baggage_when_the_option_says_so(site, jobs_ingest, worker, producer, instrumentor):
    jobs = producer

    def checkout(environ: dict, start_response: Any) -> list[bytes]:
        otel_mixpanel.identify("user-4")
        assert baggage.get_all() == {}
        jobs.send_receipt.delay(f"private {worker}")
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>thanks</html>"]

    enqueue_from_request(site, instrumentor, checkout, "/checkout",
                         {"Cookie": f"otel_mp_device_id={DEVICE}",
                          "baggage": f"{USER_KEY}=admin"}, ids_in_baggage=False)
    receipt = job_event(jobs_ingest, "Receipt Sent", order_id=f"private {worker}")
    assert "$device_id" not in receipt["properties"] and "$user_id" not in receipt["properties"]
