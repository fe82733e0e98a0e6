"""The SDK-internal fast paths of span_reads agree with the public API, and are taken on the SDKs checked."""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace

from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from opentelemetry.trace import SpanContext, SpanKind

from otel_mixpanel import span_reads
from otel_mixpanel.assembly import TraceAssembler
from otel_mixpanel.span_reads import (
    CHECKED_SDK_VERSIONS,
    context_is_remote,
    context_span_id,
    context_trace_id,
    ended_span_attributes,
    span_context,
    span_events,
    span_kind,
    span_name,
    span_parent,
    span_start_time,
)


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
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT):
            pass
    return list(exporter.get_finished_spans())


def _fields(span):
    """What conversion reads of a span through span_reads, and the same through the public API."""
    contexts = [span_context(span), span_parent(span)]
    direct = (span_name(span), span_kind(span), span_start_time(span), contexts,
              [(context_trace_id(c), context_span_id(c), context_is_remote(c)) for c in contexts if c is not None])
    public = (span.name, span.kind, span.start_time, [span.context, span.parent],
              [(c.trace_id, c.span_id, c.is_remote) for c in (span.context, span.parent) if c is not None])
    return direct, public


def test_fast_paths_read_what_the_public_api_reads():
    for span in _finished_spans():
        assert dict(ended_span_attributes(span)) == dict(span.attributes or {})
        assert [(e.name, dict(e.attributes or {}), e.timestamp) for e in span_events(span)] == \
            [(e.name, dict(e.attributes or {}), e.timestamp) for e in span.events]
        direct, public = _fields(span)
        assert direct == public


def test_the_checked_sdk_releases_take_the_fast_path():
    installed = _release(version("opentelemetry-sdk"))
    low, high = (_release(v) for v in CHECKED_SDK_VERSIONS)
    assert low <= installed, "the installed SDK is older than pyproject.toml allows"
    if installed > high:
        # A newer SDK than was read: the public API is correct either way; re-read its internals and
        # move CHECKED_SDK_VERSIONS when the fast paths still hold.
        return
    with_events, child, quiet = _finished_spans()
    inner = with_events._attributes._dict  # type: ignore[attr-defined]
    assert ended_span_attributes(with_events) is inner, "the attributes were copied: the SDK's internals moved"
    assert span_events(quiet) == ()
    assert span_reads._sdk_fields(child) and span_reads._sdk_fields(ReadableSpan(name="by hand")), \
        "span fields are read through the properties: the SDK's internals moved"
    assert span_reads._is_sdk_bounded_list(quiet._events), "the event list's length is read through its __len__"
    assert span_reads._CONTEXT_IS_ITS_TUPLE, "span contexts are read through their properties"


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


def test_spans_and_contexts_that_read_their_fields_otherwise_are_read_through_their_properties():
    class Renamed(ReadableSpan):
        @property
        def name(self):
            return "renamed"

    class Shifted(SpanContext):
        @property
        def trace_id(self):
            return 42

    context = Shifted(trace_id=1, span_id=2, is_remote=False)
    span = Renamed(name="job", context=context, parent=SpanContext(3, 4, True), kind=SpanKind.CONSUMER, start_time=9)
    direct, public = _fields(span)
    assert direct == public
    assert span_name(span) == "renamed" and context_trace_id(span_context(span)) == 42
    assert context_is_remote(span_parent(span))
    assert not span_reads._sdk_fields(span)

    class Masked(ReadableSpan):
        """Properties unchanged, but every read goes through its own __getattribute__."""

        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            return "masked" if name == "name" else value

    assert span_name(Masked(name="GET /secret")) == "masked" and not span_reads._sdk_fields(Masked(name="x"))

    # A span made by hand whose context is not a SpanContext but has its ids: read through them, as before.
    by_hand = ReadableSpan(name="GET /", context=SimpleNamespace(trace_id=1, span_id=2, is_remote=False),
                           kind=SpanKind.SERVER, start_time=1)
    ids = span_context(by_hand)
    assert (context_trace_id(ids), context_span_id(ids), context_is_remote(ids)) == (1, 2, False)
    [trace] = TraceAssembler(1.0).add([by_hand])
    assert trace.spans == [by_hand]

    # A span without the fields ReadableSpan's properties read (a future SDK keeping them elsewhere).
    moved = ReadableSpan(name="moved")
    del moved._name
    assert not span_reads._reads_as_readable_span(moved)


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
