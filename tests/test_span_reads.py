"""The SDK-internal fast paths of span_reads agree with the public API, and are taken on the SDKs checked."""

from __future__ import annotations

from importlib.metadata import version

from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_mixpanel.span_reads import CHECKED_SDK_VERSIONS, ended_span_attributes, span_events


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def _finished_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /", attributes={"http.request.method": "GET", "n": 3}) as span:
        span.add_event("Signed Up", {"plan": "pro"})
    with tracer.start_as_current_span("quiet", attributes={"tags": ("a", "b")}):
        pass
    return list(exporter.get_finished_spans())


def test_fast_paths_read_what_the_public_api_reads():
    for span in _finished_spans():
        assert dict(ended_span_attributes(span)) == dict(span.attributes or {})
        assert [(e.name, dict(e.attributes or {}), e.timestamp) for e in span_events(span)] == \
            [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events]


def test_the_checked_sdk_releases_take_the_fast_path():
    installed = _release(version("opentelemetry-sdk"))
    low, high = (_release(v) for v in CHECKED_SDK_VERSIONS)
    assert low <= installed, "the installed SDK is older than pyproject.toml allows"
    if installed > high:
        # A newer SDK than was read: the public API is correct either way; re-read its internals and
        # move CHECKED_SDK_VERSIONS when the fast paths still hold.
        return
    with_events, quiet = _finished_spans()
    inner = with_events._attributes._dict  # type: ignore[attr-defined]
    assert ended_span_attributes(with_events) is inner, "the attributes were copied: the SDK's internals moved"
    assert span_events(quiet) == ()


def test_hand_made_and_odd_spans_fall_back_to_the_public_api():
    event = Event("Ordered", {"total": 5}, timestamp=1_700_000_000_000_000_000)
    by_hand = ReadableSpan(name="job", attributes={"enduser.id": "u1"}, events=[event])
    assert dict(ended_span_attributes(by_hand)) == {"enduser.id": "u1"}
    assert [e.name for e in span_events(by_hand)] == ["Ordered"]

    class Odd(ReadableSpan):
        """A span whose private fields are not what the SDK keeps there."""

    odd = Odd(name="odd", attributes={"a": 1}, events=[event])
    odd._attributes = {"_dict": "not a dict"}  # type: ignore[assignment]
    assert dict(ended_span_attributes(odd)) == {"_dict": "not a dict"}


def test_the_attribute_length_limit_is_read_from_live_and_ended_spans():
    from opentelemetry.sdk.trace import SpanLimits

    from otel_mixpanel.span_reads import attribute_length_limit

    for limits, expected in ((SpanLimits(max_span_attribute_length=50), 50), (SpanLimits(), None)):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(span_limits=limits)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("test").start_as_current_span("GET /") as live:
            assert attribute_length_limit(live) == expected
        [ended] = exporter.get_finished_spans()
        assert attribute_length_limit(ended) == expected
    assert attribute_length_limit(object()) is None
