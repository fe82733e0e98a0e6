"""Step 2a: gather the spans of one request before turning them into events.

Child spans end, and are exported, before the request's server span; yet their events
need the request's context (user agent, URL, user). Spans are therefore held until
their local root (a span without a parent in this process) ends, then handed on as one
``LocalTrace``. Spans whose root does not come in time are handed on alone.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from otel_mixpanel.span_reads import (
    context_is_remote,
    context_trace_id,
    ended_span_attributes,
    span_context,
    span_events,
    span_parent,
)

# Beyond this many waiting spans, or this many bytes of their attributes and events (as
# estimated by span_bytes), the oldest traces are let go, so memory stays bounded whatever the
# application puts on its spans.
MAX_WAITING_SPANS = 100_000
MAX_WAITING_BYTES = 64 * 1024 * 1024
# What a span costs beyond its text: the SDK's objects, and each attribute's slot.
_SPAN_OVERHEAD_BYTES = 1024
_ATTRIBUTE_OVERHEAD_BYTES = 64


class LocalTrace:
    """The spans of one request (or job) in this process; ``root`` is None when it never came.

    A plain class, not a dataclass: one is made for every request, and compiled (otel_mixpanel/compiled.py) a
    plain class is a native one, made and read without Python code.
    """

    __slots__ = ("root", "spans")

    def __init__(self, root: ReadableSpan | None, spans: list[ReadableSpan]) -> None:
        self.root = root
        self.spans = spans


@dataclass
class _Waiting:
    since: float
    spans: list[ReadableSpan] = field(default_factory=list)
    size: int = 0


def _attributes_bytes(attributes: Mapping[str, Any] | None) -> int:
    if not attributes:
        return 0
    size = _ATTRIBUTE_OVERHEAD_BYTES * len(attributes)
    for value in attributes.values():
        if type(value) is str:
            size += len(value)
        elif isinstance(value, (tuple, list)):
            size += sum(len(item) if type(item) is str else 8 for item in value)
    return size


def span_bytes(span: ReadableSpan) -> int:
    """About what a finished span keeps in memory: its text, and a fixed cost per span and attribute."""
    size = _SPAN_OVERHEAD_BYTES + _attributes_bytes(ended_span_attributes(span))
    for event in span_events(span):
        size += _SPAN_OVERHEAD_BYTES // 4 + len(event.name) + _attributes_bytes(event.attributes)
    return size


def is_local_root(span: ReadableSpan) -> bool:
    parent = span_parent(span)
    return parent is None or context_is_remote(parent)


class TraceAssembler:
    def __init__(self, wait_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._wait = wait_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: OrderedDict[int, _Waiting] = OrderedDict()
        self._waiting_count = 0
        self._waiting_bytes = 0

    def add(self, spans: Sequence[ReadableSpan]) -> list[LocalTrace]:
        """Take finished spans; return the traces completed by them and those that waited too long."""
        complete: list[LocalTrace] = []
        now = self._clock()
        with self._lock:
            for span in spans:
                context = span_context(span)
                if context is None:
                    continue
                if is_local_root(span):
                    # Most requests are one server span, with nothing waiting: no descendants to look for.
                    mine = self._claim_descendants(span) if self._waiting else []
                    mine.append(span)
                    complete.append(LocalTrace(span, mine))
                else:
                    self._hold(span, context_trace_id(context), now)
            if self._waiting:
                complete.extend(self._release(lambda w: now - w.since >= self._wait
                                              or self._waiting_count > MAX_WAITING_SPANS
                                              or self._waiting_bytes > MAX_WAITING_BYTES))
        return complete

    def _hold(self, span: ReadableSpan, trace_id: int, now: float) -> None:
        waiting = self._waiting.get(trace_id)
        if waiting is None:
            waiting = self._waiting[trace_id] = _Waiting(now)
        size = span_bytes(span)
        waiting.spans.append(span)
        waiting.size += size
        self._waiting_count += 1
        self._waiting_bytes += size

    def drain(self) -> list[LocalTrace]:
        """Everything still waiting, for shutdown."""
        with self._lock:
            return self._release(lambda waiting: True)

    @property
    def waiting_spans(self) -> int:
        return self._waiting_count

    @property
    def waiting_bytes(self) -> int:
        return self._waiting_bytes

    def _claim_descendants(self, root: ReadableSpan) -> list[ReadableSpan]:
        waiting = self._waiting.get(root.context.trace_id)
        if waiting is None:
            return []
        parent_of = {s.context.span_id: s.parent.span_id for s in waiting.spans if s.parent is not None}
        root_id = root.context.span_id

        def descends(span_id: int) -> bool:
            seen = set()
            while span_id in parent_of and span_id not in seen:
                seen.add(span_id)
                span_id = parent_of[span_id]
                if span_id == root_id:
                    return True
            return False

        mine = [s for s in waiting.spans if descends(s.context.span_id)]
        if len(mine) == len(waiting.spans):
            del self._waiting[root.context.trace_id]
            size = waiting.size
        else:
            waiting.spans = [s for s in waiting.spans if not descends(s.context.span_id)]
            size = sum(map(span_bytes, mine))
            waiting.size -= size
        self._waiting_count -= len(mine)
        self._waiting_bytes -= size
        return mine

    def _release(self, should_release: Callable[[_Waiting], bool]) -> list[LocalTrace]:
        released: list[LocalTrace] = []
        while self._waiting:
            trace_id, waiting = next(iter(self._waiting.items()))
            if not should_release(waiting):
                break
            del self._waiting[trace_id]
            self._waiting_count -= len(waiting.spans)
            self._waiting_bytes -= waiting.size
            released.append(LocalTrace(None, waiting.spans))
        return released

