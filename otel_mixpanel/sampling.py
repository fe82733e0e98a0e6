"""Every request reaches Mixpanel while tracing stays sampled.

A sampler that drops a span drops it for every exporter, and ``BatchSpanProcessor``
exports only sampled spans. Analytics needs every request, so:

- ``record_all(sampler)`` wraps the tracing sampler: every span is recorded, and the
  sampled flag (what other exporters and downstream services see) stays the wrapped
  sampler's decision.
- ``MixpanelSpanProcessor(exporter)`` batches like ``BatchSpanProcessor`` but also
  exports the recorded spans that are not sampled.
- With ``opentelemetry-instrument``: ``OTEL_TRACES_SAMPLER=mixpanel_parentbased_traceidratio``
  (or ``mixpanel_traceidratio``, ``mixpanel_parentbased_always_on``), with
  ``OTEL_TRACES_SAMPLER_ARG`` the ratio; after set-up, ``after_instrumentation`` (an
  ``opentelemetry_post_instrument`` entry point) gives each Mixpanel exporter the
  unsampled spans that the distro's ``BatchSpanProcessor`` skips.

See docs/sampling.md for the cost.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from otel_mixpanel.jobs import BaggageIdentityProcessor, copy_identity

logger = logging.getLogger("otel_mixpanel")

SAMPLING_DOC = "See docs/sampling.md."


class _RecordAll(Sampler):
    """Records what ``root`` drops, keeping the span's attributes.

    The SDK's own ``AlwaysRecordSampler`` (1.39) is not used: it keeps the dropping
    sampler's result attributes, and the SDK's samplers give none with a drop, so the
    span would lose the attributes the instrumentation passed at its start (the HTTP
    method, the URL...), which are the page view.
    """

    def __init__(self, root: Sampler) -> None:
        self._root = root

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None) -> SamplingResult:
        result = self._root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP:
            kept = {**(attributes or {}), **(result.attributes or {})}
            return SamplingResult(Decision.RECORD_ONLY, kept, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordAll{{{self._root.get_description()}}}"


def record_all(sampler: Sampler) -> Sampler:
    """``sampler``'s sampling decisions, with every span it drops recorded (not sampled) instead."""
    return _RecordAll(sampler)


def _ratio(argument: object) -> float:
    try:
        rate = float(argument)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        logger.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio between 0 and 1; tracing samples 1.0 "
                       "(every request is recorded for Mixpanel either way)", argument)
        return 1.0
    return rate


def parentbased_traceidratio(argument: object = None) -> Sampler:
    """Entry point ``mixpanel_parentbased_traceidratio``: the default tracing sampler, recording everything."""
    return record_all(ParentBased(TraceIdRatioBased(_ratio(argument))))


def traceidratio(argument: object = None) -> Sampler:
    """Entry point ``mixpanel_traceidratio``."""
    return record_all(TraceIdRatioBased(_ratio(argument)))


def parentbased_always_on(argument: object = None) -> Sampler:
    """Entry point ``mixpanel_parentbased_always_on``: records requests whose caller said "not sampled"."""
    return record_all(ParentBased(ALWAYS_ON))


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    """The same finished span with the sampled flag set, for ``BatchSpanProcessor``'s queue.

    Only the Mixpanel exporter sees it; nothing else reads the flag.
    """
    context = span.context
    sampled = SpanContext(context.trace_id, context.span_id, context.is_remote,
                          TraceFlags(context.trace_flags | TraceFlags.SAMPLED), context.trace_state)
    return ReadableSpan(
        name=span.name, context=sampled, parent=span.parent, resource=span.resource,
        attributes=span.attributes, events=span.events, links=span.links, kind=span.kind,
        status=span.status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class MixpanelSpanProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` for the Mixpanel exporter: exports recorded spans whether sampled or not.

    Keyword arguments are ``BatchSpanProcessor``'s. ``unsampled_only=True`` leaves sampled
    spans to another processor of the same exporter (what ``after_instrumentation`` sets up).
    Like ``BaggageIdentityProcessor``, it gives jobs' spans the enqueuing request's ids.
    """

    def __init__(self, span_exporter: SpanExporter, *, unsampled_only: bool = False, **options: Any) -> None:
        super().__init__(span_exporter, **options)
        self._unsampled_only = unsampled_only
        self._queue_warned = False
        _fed_exporters.add(span_exporter)
        if unsampled_only:
            _feeders.setdefault(span_exporter, []).append(self)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # A job's span takes the ids of the request that enqueued it (otel_mixpanel.jobs).
        copy_identity(span, parent_context)
        super().on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        if context.trace_flags.sampled:
            if not self._unsampled_only:
                self._warn_if_full()
                super().on_end(span)
            return
        self._warn_if_full()
        super().on_end(_as_sampled(span))

    def _warn_if_full(self) -> None:
        # BatchSpanProcessor's queue is internal to the SDK; where it cannot be read, nothing is said.
        batch = getattr(self, "_batch_processor", None)
        queue, limit = getattr(batch, "_queue", None), getattr(batch, "_max_queue_size", None)
        if self._queue_warned or queue is None or not isinstance(limit, int) or len(queue) < limit:
            return
        self._queue_warned = True
        logger.warning(
            "The span queue before the Mixpanel exporter is full (%d spans): spans, and the events they carry, "
            "are being dropped. Raise OTEL_BSP_MAX_QUEUE_SIZE (or max_queue_size=), or lower "
            "OTEL_BSP_SCHEDULE_DELAY so that batches leave sooner. %s", limit, SAMPLING_DOC)


# Exporters fed every recorded span, and the unsampled-only processors feeding each.
_fed_exporters: weakref.WeakSet[SpanExporter] = weakref.WeakSet()
_feeders: weakref.WeakKeyDictionary[SpanExporter, list[MixpanelSpanProcessor]] = weakref.WeakKeyDictionary()
_exporters: weakref.WeakSet[SpanExporter] = weakref.WeakSet()
_feed_lock = threading.Lock()


def register_exporter(exporter: SpanExporter) -> None:
    """Called by each Mixpanel exporter, so that ``after_instrumentation`` can find it."""
    _exporters.add(exporter)


def flush_feeders(exporter: SpanExporter, timeout_millis: int) -> None:
    """Before ``exporter`` shuts down: hand it the unsampled spans its extra processors still hold."""
    for feeder in _feeders.get(exporter, ()):
        feeder.force_flush(timeout_millis)


def after_instrumentation() -> None:
    """Entry point ``opentelemetry_post_instrument``, run after ``opentelemetry-instrument``'s set-up.

    When a Mixpanel exporter was set up: jobs' spans get the enqueuing request's ids
    (``BaggageIdentityProcessor``), and, when the sampler records unsampled spans, each
    Mixpanel exporter gets those too.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return
    with _feed_lock:
        exporters = [exporter for exporter in list(_exporters) if exporter not in _fed_exporters]
        if not exporters:
            return
        if not isinstance(provider.sampler, _RecordAll):
            provider.add_span_processor(BaggageIdentityProcessor())
            return
        for exporter in exporters:
            provider.add_span_processor(MixpanelSpanProcessor(exporter, unsampled_only=True))


# ParentBased.get_description has no annotation in the SDK.
_KEEPS_EVERY_ROOT = (ALWAYS_ON.get_description(), str(DEFAULT_ON.get_description()))  # type: ignore[no-untyped-call]


def sampling_problem(exporter: SpanExporter) -> str | None:
    """Why the global tracer provider keeps spans from ``exporter``, or None when it does not."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return None
    sampler = provider.sampler
    if isinstance(sampler, _RecordAll):
        if exporter in _fed_exporters:
            return None
        return ("The tracer provider records unsampled spans for Mixpanel, but the Mixpanel exporter is "
                "behind a processor that exports sampled spans only (BatchSpanProcessor): use "
                "otel_mixpanel.sampling.MixpanelSpanProcessor(exporter). " + SAMPLING_DOC)
    # The default, parentbased_always_on, drops only requests whose caller said "not sampled" (docs/sampling.md).
    description = sampler.get_description().replace("TraceIdRatioBased{1.0}", ALWAYS_ON.get_description())
    if description in _KEEPS_EVERY_ROOT:
        return None
    return (f"The tracer provider's sampler ({sampler.get_description()}) drops spans before any exporter: "
            "Mixpanel receives only the sampled requests. Keep tracing sampled and every request in Mixpanel "
            "with TracerProvider(sampler=otel_mixpanel.sampling.record_all(sampler)) and "
            "MixpanelSpanProcessor(exporter), or OTEL_TRACES_SAMPLER=mixpanel_parentbased_traceidratio "
            "under opentelemetry-instrument. " + SAMPLING_DOC)
