"""Sampled tracing: every request reaches Mixpanel, other exporters keep their sampling.

Real WSGI instrumentation on a real server; the other exporter is an in-memory one
behind the SDK's own BatchSpanProcessor, as an OTLP exporter would be.
"""

from __future__ import annotations

import http.client
import logging
import subprocess
import sys
import textwrap
import threading
from typing import Any, Iterator

import pytest
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from werkzeug.serving import make_server

from conftest import IPHONE, NAVIGATION, quick_delivery, text_app
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.sampling import (
    MixpanelSpanProcessor,
    parentbased_traceidratio,
    record_all,
    traceidratio,
)
from otel_mixpanel.web import MixpanelMiddleware

PAGE_VIEW = "$mp_web_page_view"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class SampledSite:
    """A WSGI site whose tracer provider samples; Mixpanel behind MixpanelSpanProcessor, OTLP-like behind BSP."""

    def __init__(self, ingest: Any, sampler: Any) -> None:
        self.exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url))
        self.tracing = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler)
        self.provider.add_span_processor(MixpanelSpanProcessor(self.exporter, schedule_delay_millis=20))
        self.provider.add_span_processor(BatchSpanProcessor(self.tracing, schedule_delay_millis=20))
        app = OpenTelemetryMiddleware(MixpanelMiddleware(text_app), tracer_provider=self.provider)
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.server_port, timeout=10)
        try:
            connection.request("GET", path, headers={"User-Agent": IPHONE, **NAVIGATION, **(headers or {})})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def flush(self) -> None:
        self.provider.force_flush()
        assert self.exporter.force_flush(5000)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.provider.shutdown()


@pytest.fixture
def sampled_site(ingest) -> Iterator[Any]:
    sites: list[SampledSite] = []

    def make(sampler: Any) -> SampledSite:
        sites.append(SampledSite(ingest, sampler))
        return sites[-1]

    yield make
    for site in sites:
        site.close()


def test_every_request_reaches_mixpanel_while_tracing_keeps_its_ratio(sampled_site, ingest):
    ratio = TraceIdRatioBased(0.3)
    site = sampled_site(record_all(ratio))
    for index in range(40):
        assert site.get(f"/page/{index}") == 200
    site.flush()

    views = [e for e in ingest.events() if e["event"] == PAGE_VIEW]
    assert sorted(e["properties"]["current_url_path"] for e in views) == sorted(f"/page/{i}" for i in range(40))
    traced = [s for s in site.tracing.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert all(s.context.trace_flags.sampled for s in traced)
    # Exactly the requests the wrapped sampler chose, as if it were used alone.
    chosen = {s.attributes.get("url.path") or s.attributes.get("http.target") for s in traced}
    assert len(chosen) < 40
    limit = ratio.bound
    assert {s.context.trace_id & 0xFFFFFFFFFFFFFFFF < limit for s in traced} == {True}


def test_a_caller_that_said_not_sampled_still_counts_in_mixpanel(sampled_site, ingest):
    site = sampled_site(record_all(DEFAULT_ON))
    assert site.get("/from-a-sampling-proxy", {"traceparent": NOT_SAMPLED}) == 200
    site.flush()
    [view] = [e for e in ingest.events() if e["event"] == PAGE_VIEW]
    assert view["properties"]["current_url_path"] == "/from-a-sampling-proxy"
    assert site.tracing.get_finished_spans() == ()


def test_sampler_factories_read_the_ratio_and_refuse_nonsense(caplog):
    assert "TraceIdRatioBased{0.25}" in parentbased_traceidratio("0.25").get_description()
    assert traceidratio("1").get_description().startswith("RecordAll{TraceIdRatioBased{1.0}")
    with caplog.at_level(logging.WARNING, logger="otel_mixpanel"):
        assert "TraceIdRatioBased{1.0}" in parentbased_traceidratio("ten percent").get_description()
        assert "TraceIdRatioBased{1.0}" in parentbased_traceidratio(None).get_description()
    assert "ten percent" in caplog.text


def run_python(code: str, ingest: Any, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a new interpreter: the global tracer provider can be set once per process."""
    environment = {"OTEL_EXPORTER_MIXPANEL_TOKEN": "t", "OTEL_EXPORTER_MIXPANEL_ENDPOINT": ingest.url,
                   "OTEL_EXPORTER_MIXPANEL_SPOOL": "memory", "PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, env=environment)


SET_UP = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
    from otel_mixpanel import MixpanelSpanExporter
    from otel_mixpanel.sampling import MixpanelSpanProcessor, record_all

    exporter = MixpanelSpanExporter(schedule_delay_ms=20)
    provider = TracerProvider(sampler={sampler})
    provider.add_span_processor({processor}(exporter))
    trace.set_tracer_provider(provider)
    # A request whose caller sampled it, so that something reaches the exporter.
    parent = set_span_in_context(NonRecordingSpan(SpanContext(1, 2, True, TraceFlags(1))))
    for _ in range(3):
        with trace.get_tracer("t").start_as_current_span("work", context=parent) as span:
            span.add_event("Job Done")
    provider.shutdown()
"""


@pytest.mark.parametrize("sampler, processor, expected", [
    ("ParentBased(TraceIdRatioBased(0.1))", "BatchSpanProcessor", "drops spans before any exporter"),
    ("record_all(ParentBased(TraceIdRatioBased(0.1)))", "BatchSpanProcessor", "exports sampled spans only"),
    ("record_all(ParentBased(TraceIdRatioBased(0.1)))", "MixpanelSpanProcessor", None),
    ("ParentBased(TraceIdRatioBased(1.0))", "BatchSpanProcessor", None),
    ("TraceIdRatioBased(0.5)", "BatchSpanProcessor", "drops spans before any exporter"),
])
def test_spans_lost_before_the_exporter_are_reported_once_with_the_fix(ingest, sampler, processor, expected):
    run = run_python(SET_UP.format(sampler=sampler, processor=processor), ingest)
    assert run.returncode == 0, run.stderr
    assert len(ingest.wait_for(3)) == 3
    if expected is None:
        assert "docs/sampling.md" not in run.stderr, run.stderr
    else:
        assert run.stderr.count(expected) == 1, run.stderr
        assert "docs/sampling.md" in run.stderr


def test_a_full_queue_before_the_exporter_is_reported_once(ingest):
    code = """
        import logging
        from opentelemetry.sdk.trace import TracerProvider
        from otel_mixpanel import MixpanelSpanExporter
        from otel_mixpanel.sampling import MixpanelSpanProcessor

        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        exporter = MixpanelSpanExporter()
        provider = TracerProvider()
        # A queue of 4 and a long delay: the fifth span of a burst has no room.
        provider.add_span_processor(MixpanelSpanProcessor(exporter, max_queue_size=4, max_export_batch_size=4,
                                                          schedule_delay_millis=60_000))
        tracer = provider.get_tracer("t")
        for _ in range(50):
            tracer.start_span("burst").end()
        provider.shutdown()
    """
    run = run_python(code, ingest)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("queue before the Mixpanel exporter is full") == 1, run.stderr
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in run.stderr
