"""The trace assembler holds child spans until their request's root span ends, within bounds."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_mixpanel.assembly import MAX_WAITING_BYTES, TraceAssembler, span_bytes


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def test_children_wait_for_their_root_and_come_out_together():
    provider, memory = _provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /", kind=trace.SpanKind.SERVER):
        with tracer.start_as_current_span("db"):
            with tracer.start_as_current_span("query") as query:
                query.add_event("Row Read")
    query_span, db_span, root_span = memory.get_finished_spans()
    assembler = TraceAssembler(wait_seconds=60)
    assert assembler.add([query_span, db_span]) == []
    assert assembler.waiting_spans == 2 and assembler.waiting_bytes == span_bytes(query_span) + span_bytes(db_span)
    [local] = assembler.add([root_span])
    assert local.root is root_span and set(local.spans) == {query_span, db_span, root_span}
    assert assembler.waiting_spans == 0 and assembler.waiting_bytes == 0


def test_children_whose_root_never_comes_are_let_go_after_the_wait():
    provider, memory = _provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /"):
        with tracer.start_as_current_span("child"):
            pass
    child, _ = memory.get_finished_spans()
    now = [100.0]
    assembler = TraceAssembler(wait_seconds=5, clock=lambda: now[0])
    assert assembler.add([child]) == []
    now[0] += 5
    [alone] = assembler.add([])
    assert alone.root is None and alone.spans == [child]


def _orphans(count: int, text_bytes: int) -> list[ReadableSpan]:
    """Child spans whose root span is still open, each with ``text_bytes`` of attribute text."""
    provider, memory = _provider()
    tracer = provider.get_tracer("test")
    for number in range(count):
        root = tracer.start_span("GET /slow", kind=trace.SpanKind.SERVER)
        with trace.use_span(root, end_on_exit=False):
            with tracer.start_as_current_span("query") as child:
                child.set_attribute("db.statement", f"{number:06}" + "x" * (text_bytes - 6))
    return list(memory.get_finished_spans())


def test_memory_held_by_waiting_spans_is_bounded_by_bytes_not_only_by_count():
    orphans = _orphans(8_000, 10 * 1024)  # 80 MB of attribute text, far fewer spans than the count limit
    assembler = TraceAssembler(wait_seconds=3600)
    released = []
    for start in range(0, len(orphans), 100):
        released.extend(assembler.add(orphans[start:start + 100]))
    held = len(orphans) - sum(len(t.spans) for t in released)
    assert assembler.waiting_bytes <= MAX_WAITING_BYTES
    assert held == assembler.waiting_spans and 0 < held < 8_000
    # The oldest traces went first, each handed on without its (unfinished) root.
    assert all(t.root is None for t in released)
    first_released = released[0].spans[0].attributes["db.statement"][:6]
    assert first_released == "000000"



def test_a_root_comes_out_at_once_beside_another_requests_waiting_children():
    provider, memory = _provider()
    tracer = provider.get_tracer("test")
    slow_root = tracer.start_span("GET /slow", kind=trace.SpanKind.SERVER)
    with trace.use_span(slow_root, end_on_exit=False):
        with tracer.start_as_current_span("query"):
            pass
    with tracer.start_as_current_span("GET /fast", kind=trace.SpanKind.SERVER):
        pass
    slow_root.end()
    query, fast, slow = memory.get_finished_spans()
    assembler = TraceAssembler(wait_seconds=60)
    [alone] = assembler.add([query, fast])
    assert alone.root is fast and alone.spans == [fast] and assembler.waiting_spans == 1
    [together] = assembler.add([slow])
    assert together.root is slow and together.spans == [query, slow] and assembler.waiting_spans == 0
