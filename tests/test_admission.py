"""Events Mixpanel would refuse for their time or size are fixed, trimmed or dropped before spooling,
through the real exporter and the local ingestion server in strict mode."""

from __future__ import annotations

import json
import logging
import time

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from conftest import quick_delivery
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.admission import EARLIEST_MS, MAX_EVENT_BYTES

HOUR_NS = 3_600 * 10**9


def _job_span(events: list[Event], span_id: int = 7) -> ReadableSpan:
    context = SpanContext(trace_id=0xABC, span_id=span_id, is_remote=False, trace_flags=TraceFlags(1))
    now = time.time_ns()
    return ReadableSpan(name="job", context=context, kind=SpanKind.INTERNAL, attributes={"enduser.id": "u-1"},
                        events=events, start_time=now, end_time=now)


def _export(exporter: MixpanelSpanExporter, spans: list[ReadableSpan]) -> None:
    exporter.export(spans)
    assert exporter.force_flush(10_000)


def test_times_mixpanel_refuses_are_fixed_and_good_ones_kept(ingest, caplog):
    exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url))
    now_ns = time.time_ns()
    good = now_ns - 2 * 24 * HOUR_NS
    events = [Event("Zero", timestamp=0), Event("Negative", timestamp=-5), Event("Far Ahead", timestamp=now_ns + 72 * HOUR_NS),
              Event("Before 1971", timestamp=1_000_000), Event("Good", timestamp=good)]
    with caplog.at_level(logging.WARNING, "otel_mixpanel"):
        _export(exporter, [_job_span(events)])
    try:
        received = {e["event"]: e["properties"]["time"] for e in ingest.wait_for(5)}
        assert received["Good"] == good // 1_000_000
        for name in ("Zero", "Negative", "Far Ahead", "Before 1971"):
            assert EARLIEST_MS < received[name] <= time.time() * 1000 + 1, name
        assert exporter.admission.times_fixed == 4
        assert sum("without a time Mixpanel takes" in r.message for r in caplog.records) == 1
    finally:
        exporter.shutdown(2000)


def test_events_too_old_for_track_are_dropped_and_counted_but_kept_for_import(ingest):
    old = time.time_ns() - 6 * 24 * HOUR_NS
    track = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, events_api="track"))
    try:
        _export(track, [_job_span([Event("Too Old", timestamp=old), Event("Fresh")])])
        assert [e["event"] for e in ingest.wait_for(1)] == ["Fresh"]
        assert track.admission.too_old == 1
    finally:
        track.shutdown(2000)
    imported = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url, events_api="import"))
    try:
        _export(imported, [_job_span([Event("Too Old", timestamp=old)], span_id=8)])
        assert "Too Old" in [e["event"] for e in ingest.wait_for(2)]
        assert imported.admission.too_old == 0
    finally:
        imported.shutdown(2000)


def test_an_event_over_one_megabyte_is_trimmed_to_fit_keeping_identity(ingest):
    exporter = MixpanelSpanExporter(**quick_delivery(endpoint=ingest.url))
    # 200 list attributes of 8 KB each: about 1.6 MB, each one within Mixpanel's per-property limit.
    attributes = {f"list_{i:03}": tuple(f"{i:03}-{j:04}" + "x" * 24 for j in range(250)) for i in range(200)}
    attributes["plan"] = "pro"
    try:
        _export(exporter, [_job_span([Event("Huge", attributes=attributes), Event("Small", {"n": 1})])])
        received = {e["event"]: e for e in ingest.wait_for(2)}
        huge = received["Huge"]
        assert len(json.dumps(huge, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_EVENT_BYTES
        properties = huge["properties"]
        assert properties["distinct_id"] == "u-1" and properties["$insert_id"] and properties["plan"] == "pro"
        assert properties["ip"] == "0"
        assert 100 < sum(key.startswith("list_") for key in properties) < 200
        assert received["Small"]["properties"]["n"] == 1
        assert exporter.admission.trimmed == 1
    finally:
        exporter.shutdown(2000)
