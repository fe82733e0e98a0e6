"""Conversion's cost per stage: ``python -m benchmarks.stages [--workload realistic|shop] [--requests N]``.

The exporting thread's CPU time per request (``time.thread_time``), without a profiler's
overhead, for each step of ``MixpanelSpanExporter.export`` in turn: gathering spans into
requests, reading them, deciding whether they give a message, enriching, building the
messages and serialising them. The caches are warmed by the same stream first, and every
stage sees each request once, in pipeline order, so cache misses are paid where a real
``export()`` pays them. Records go to a sender that drops them: delivery is not measured
here (``benchmarks.steady`` measures ``export()`` with delivery running).
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any, Callable, TypeVar

from benchmarks.common import EXPORT_BATCH, TOKEN
from benchmarks.realistic import PRODUCTION, RealisticStream
from benchmarks.workload import make_spans, make_visits
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.assembly import TraceAssembler
from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.context import enrich_request, read_request
from otel_mixpanel.delivery.local import DiscardingSender

T = TypeVar("T")


def _spans(workload: str, stream: RealisticStream, count: int, seed: int) -> list[Any]:
    visits = stream.take(count) if workload == "realistic" else make_visits(count, seed=seed)
    return make_spans(visits)


def _timed(label: str, requests: int, work: Callable[[], T]) -> T:
    start = time.thread_time_ns()
    result = work()
    print(f"{label:<34} {(time.thread_time_ns() - start) / 1000 / requests:6.2f} us/request")
    return result


def measure(workload: str, requests: int) -> None:
    exporter = MixpanelSpanExporter(token=TOKEN, spool="memory", endpoint="http://127.0.0.1:9")
    exporter.sender.shutdown(timeout_millis=1_000)
    exporter._sender = DiscardingSender()
    stream = RealisticStream(PRODUCTION)
    for seed, batch in ((1, _spans(workload, stream, requests, 1)), (2, _spans(workload, stream, requests, 2))):
        # Warming: the first stream fills the caches; the second is exported whole, as a reference.
        label = "warm-up export()" if seed == 1 else "export(), whole"
        _timed(label, requests, lambda batch=batch: [exporter.export(batch[first:first + EXPORT_BATCH])
                                                     for first in range(0, len(batch), EXPORT_BATCH)])
    spans = _spans(workload, stream, requests, 3)
    settings, builder = exporter.settings, exporter._conversion.builder
    gc.collect()
    gc.freeze()
    assembler = TraceAssembler(60.0)
    traces = _timed("spans -> requests (assembler)", requests, lambda: [
        trace for first in range(0, len(spans), EXPORT_BATCH) for trace in assembler.add(spans[first:first + EXPORT_BATCH])])
    facts = _timed("read_request", requests, lambda: [read_request(trace, settings) for trace in traces])
    page_views = _timed("page-view decision", requests, lambda: [builder.page_view(fact) for fact in facts])
    produce = _timed("may_produce", requests, lambda: [
        builder.may_produce(trace, fact, page_view) for trace, fact, page_view in zip(traces, facts, page_views)])
    kept = [(trace, fact, page_view) for trace, fact, page_view, wanted in zip(traces, facts, page_views, produce)
            if wanted]
    sensitive = frozenset(settings.redact_query_params)  # as the exporter makes it, once
    contexts = _timed("enrich_request", requests, lambda: [
        enrich_request(fact, settings, sensitive) for _, fact, _ in kept])
    messages = _timed("messages", requests, lambda: [
        list(builder.messages(trace, context, page_view)) for (trace, _, page_view), context in zip(kept, contexts)])
    # export() reads the clock once per batch of spans, so once here too.
    _timed("serialise (JSON, time, size)", requests, lambda: [
        exporter._conversion.serialise(batch, now_ms) for now_ms in [exporter.admission.now_ms()] for batch in messages])
    print(f"{requests} requests, {len(kept)} enriched, {sum(map(len, messages))} messages")
    gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("realistic", "shop"), default="realistic")
    parser.add_argument("--requests", type=int, default=20_000)
    arguments = parser.parse_args()
    print(f"Conversion {conversion_build()}.")
    measure(arguments.workload, arguments.requests)


if __name__ == "__main__":
    main()
