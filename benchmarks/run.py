"""otel-mixpanel against the seeds' ``track_to_mp`` helper, side by side, in one run.

``python -m benchmarks`` prints one table; ``--smoke`` runs every measurement with tiny
counts and enforces nothing (what CI runs). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mixpanel import MixpanelException
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.baseline_helper import make_mixpanel, track_to_mp
from benchmarks.ingest import ServerProcess
from benchmarks.workload import (
    Visit,
    baseline_calls,
    baseline_request,
    call,
    environ_for,
    instrumented,
    make_spans,
    make_visits,
    shop_app,
)
from otel_mixpanel import MixpanelSpanExporter

TOKEN = "bench-token"
# What BatchSpanProcessor hands an exporter at most (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
EXPORT_BATCH = 512
REALISTIC_LATENCY_MS = 30.0


@dataclass(frozen=True)
class Sizes:
    requests: int
    repeats: int
    path_requests: int
    path_rounds: int
    outage_requests: int


FULL = Sizes(requests=10_000, repeats=3, path_requests=10_000, path_rounds=5, outage_requests=6_000)
SMOKE = Sizes(requests=300, repeats=1, path_requests=300, path_rounds=1, outage_requests=600)


@dataclass
class Row:
    measure: str
    ours: float
    reference: float
    unit: str
    reference_name: str
    # "higher" or "lower" is better, with the ratio that meets the target (None: no target).
    better: str
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.better == "higher" else self.ratio <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f">= {self.target:g}x" if self.better == "higher" else f"<= {self.target:g}x"


def exporter_settings(url: str, spool_dir: str, **overrides: Any) -> dict[str, Any]:
    settings = {"token": TOKEN, "endpoint": url, "spool_dir": spool_dir, "schedule_delay_ms": 10}
    settings.update(overrides)
    return settings


class Spooled:
    """A MixpanelSpanExporter on a throw-away spool directory."""

    def __init__(self, url: str, **overrides: Any) -> None:
        self.directory = tempfile.mkdtemp(prefix="otel-mixpanel-bench-")
        self.exporter = MixpanelSpanExporter(**exporter_settings(url, self.directory, **overrides))

    def close(self) -> None:
        self.exporter.shutdown(timeout_millis=5_000)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Delivery:
    seconds: float
    requests: int
    events: int
    body_bytes: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def bytes_per_event(self) -> float:
        return self.body_bytes / self.events if self.events else float("nan")


def deliver_with_exporter(server: ServerProcess, spans: Sequence[ReadableSpan], requests: int) -> Delivery:
    spooled = Spooled(server.url)
    exporter = spooled.exporter
    try:
        events_before, bytes_before = server.accepted("/import")
        start = time.perf_counter()
        for first in range(0, len(spans), EXPORT_BATCH):
            exporter.export(spans[first:first + EXPORT_BATCH])
        if not exporter.force_flush(300_000):
            raise RuntimeError("the exporter did not deliver everything")
        seconds = time.perf_counter() - start
        events_after, bytes_after = server.accepted("/import")
        stats = exporter.sender.stats
    finally:
        spooled.close()
    events = events_after - events_before
    if events != stats.sent or stats.rejected or stats.dropped:
        raise RuntimeError(f"server accepted {events} events, exporter says {stats}")
    return Delivery(seconds, requests, events, bytes_after - bytes_before)


def deliver_with_baseline(server: ServerProcess, visits: Sequence[Visit]) -> Delivery:
    mp, consumer = make_mixpanel(TOKEN, server.url)
    prepared = [(baseline_request(visit), visit) for visit in visits]
    sent = 0
    events_before, bytes_before = server.accepted("/track")
    start = time.perf_counter()
    for request, visit in prepared:
        for name, properties in baseline_calls(visit):
            track_to_mp(mp, request, name, properties)
            sent += 1
    consumer.flush()
    seconds = time.perf_counter() - start
    events_after, bytes_after = server.accepted("/track")
    if events_after - events_before != sent:
        raise RuntimeError(f"server accepted {events_after - events_before} of {sent} baseline events")
    return Delivery(seconds, len(visits), sent, bytes_after - bytes_before)


def throughput(sizes: Sizes, latency_ms: float, novel_user_agents: float, log: Callable[[str], None]
               ) -> tuple[list[Delivery], list[Delivery]]:
    ours, theirs = [], []
    with ServerProcess(latency_ms) as server:
        warm = make_visits(200, seed=999)
        deliver_with_exporter(server, make_spans(warm), len(warm))
        deliver_with_baseline(server, warm)
        visits = make_visits(sizes.requests, seed=1)
        spans = make_spans(visits)
        for repeat in range(sizes.repeats):
            if novel_user_agents:
                # Fresh never-seen user agents every time: a repeat must not find them in a cache.
                visits = make_visits(sizes.requests, seed=100 + repeat, novel_user_agents=novel_user_agents)
                spans = make_spans(visits)
            ours.append(deliver_with_exporter(server, spans, len(visits)))
            if novel_user_agents:
                visits = make_visits(sizes.requests, seed=200 + repeat, novel_user_agents=novel_user_agents)
            theirs.append(deliver_with_baseline(server, visits))
            log(f"  latency {latency_ms:g} ms, novel UAs {novel_user_agents:.0%}, repeat {repeat + 1}: "
                f"otel-mixpanel {ours[-1].per_second:,.0f} req/s ({ours[-1].events} events), "
                f"helper {theirs[-1].per_second:,.0f} req/s ({theirs[-1].events} events)")
    return ours, theirs


class NoOpExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def request_path_round(exporter: SpanExporter, environs: list[dict[str, Any]]) -> tuple[float, float]:
    """(median, p99) latency in microseconds of the instrumented app with this exporter behind a BatchSpanProcessor."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    app = instrumented(shop_app, provider)
    latencies = []
    clock = time.perf_counter_ns
    for environ in environs:
        fresh = dict(environ)
        start = clock()
        call(app, fresh)
        latencies.append(clock() - start)
    provider.shutdown()
    return statistics.median(latencies) / 1000, _percentile(latencies, 0.99) / 1000


def request_path(sizes: Sizes, log: Callable[[str], None]) -> dict[str, tuple[float, float]]:
    environs = [environ_for(visit) for visit in make_visits(sizes.path_requests, seed=7)]
    results: dict[str, list[tuple[float, float]]] = {"noop": [], "mixpanel": []}
    with ServerProcess() as server:
        for warm in ("noop", "mixpanel"):
            spooled = Spooled(server.url) if warm == "mixpanel" else None
            request_path_round(spooled.exporter if spooled else NoOpExporter(), environs[:500])
            if spooled:
                spooled.close()
        for round_number in range(sizes.path_rounds):
            # Alternate the order so drift (thermal, other tenants) hits both sides alike.
            order = ("noop", "mixpanel") if round_number % 2 == 0 else ("mixpanel", "noop")
            for variant in order:
                gc.collect()
                if variant == "mixpanel":
                    spooled = Spooled(server.url)
                    results[variant].append(request_path_round(spooled.exporter, environs))
                    spooled.close()
                else:
                    results[variant].append(request_path_round(NoOpExporter(), environs))
            log(f"  request path round {round_number + 1}: no-op {results['noop'][-1][0]:.1f} us median, "
                f"otel-mixpanel {results['mixpanel'][-1][0]:.1f} us median")
    return {variant: (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))
            for variant, rounds in results.items()}


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Outage:
    heap_growth: int  # tracemalloc, from the first sample of the outage to the last
    heap_peak: int  # tracemalloc, highest during the outage over before it
    heap_after: int  # tracemalloc, after recovery over before the outage
    rss_growth: int
    recovery_s: float
    events: int


def _outage(server: ServerProcess, feed: Callable[[int], None], batches: int,
            recovered: Callable[[], bool]) -> tuple[int, int, int, int, float]:
    gc.collect()
    tracemalloc.start()
    before, rss_before = tracemalloc.get_traced_memory()[0], _rss_bytes()
    server.stop()
    samples = []
    for batch in range(batches):
        feed(batch)
        samples.append(tracemalloc.get_traced_memory()[0])
    rss_growth = _rss_bytes() - rss_before
    peak = tracemalloc.get_traced_memory()[1] - before
    server.start()
    start = time.perf_counter()
    while not recovered():
        if time.perf_counter() - start > 120:
            raise RuntimeError("events were not delivered within 120 s of the server coming back")
        time.sleep(0.02)
    recovery = time.perf_counter() - start
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return samples[-1] - samples[0], peak, after, rss_growth, recovery


def outage_exporter(sizes: Sizes) -> Outage:
    visits = make_visits(sizes.outage_requests, seed=11)
    spans = make_spans(visits)
    batches = [spans[i:i + EXPORT_BATCH] for i in range(0, len(spans), EXPORT_BATCH)]
    server = ServerProcess().start()
    # Backoff capped at 2 s instead of 60 s, so recovery is seen within the run.
    spooled = Spooled(server.url, retry_initial_ms=500, retry_max_ms=2000)
    exporter = spooled.exporter
    try:
        exporter.export(make_spans(make_visits(200, seed=12)))
        exporter.force_flush(30_000)
        sent_before = exporter.sender.stats.sent

        def feed(batch: int) -> None:
            exporter.export(batches[batch])

        growth, peak, after, rss, recovery = _outage(
            server, feed, len(batches), lambda: exporter.sender.spool.pending()[0] == 0)
        events = exporter.sender.stats.sent - sent_before
        accepted, _ = server.accepted("/import")
        if accepted != events:
            raise RuntimeError(f"after the outage the server accepted {accepted} of {events} events")
    finally:
        spooled.close()
        server.stop()
    return Outage(growth, peak, after, rss, recovery, events)


def outage_baseline(sizes: Sizes) -> Outage:
    visits = make_visits(sizes.outage_requests, seed=11)
    prepared = [(baseline_request(visit), visit) for visit in visits]
    per_batch = max(1, len(prepared) // max(1, len(prepared) // EXPORT_BATCH))
    batches = [prepared[i:i + per_batch] for i in range(0, len(prepared), per_batch)]
    server = ServerProcess().start()
    mp, consumer = make_mixpanel(TOKEN, server.url)
    sent = 0
    try:
        def feed(batch: int) -> None:
            nonlocal sent
            for request, visit in batches[batch]:
                for name, properties in baseline_calls(visit):
                    sent += 1
                    try:
                        track_to_mp(mp, request, name, properties)
                    except MixpanelException:
                        # What an application must do, or every request fails while Mixpanel is down.
                        pass

        def recovered() -> bool:
            try:
                consumer.flush()
            except MixpanelException:
                return False
            return True

        growth, peak, after, rss, recovery = _outage(server, feed, len(batches), recovered)
        accepted, _ = server.accepted("/track")
        if accepted != sent:
            raise RuntimeError(f"after the outage the server accepted {accepted} of {sent} baseline events")
    finally:
        server.stop()
    return Outage(growth, peak, after, rss, recovery, sent)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def measure(sizes: Sizes, log: Callable[[str], None]) -> list[Row]:
    helper = "seeds' helper"
    rows = []
    log("throughput, instant server")
    ours, theirs = throughput(sizes, 0.0, 0.0, log)
    rows.append(Row("Throughput, instant server", _median([d.per_second for d in ours]),
                    _median([d.per_second for d in theirs]), "req/s", helper, "higher", 5))
    log(f"throughput, {REALISTIC_LATENCY_MS:g} ms server")
    ours_slow, theirs_slow = throughput(sizes, REALISTIC_LATENCY_MS, 0.0, log)
    rows.append(Row(f"Throughput, server answering in {REALISTIC_LATENCY_MS:g} ms",
                    _median([d.per_second for d in ours_slow]), _median([d.per_second for d in theirs_slow]),
                    "req/s", helper, "higher", 20))
    log("throughput, half the user agents never seen before")
    ours_new, theirs_new = throughput(sizes, 0.0, 0.5, log)
    rows.append(Row("Throughput, half the user agents new, instant server",
                    _median([d.per_second for d in ours_new]), _median([d.per_second for d in theirs_new]),
                    "req/s", helper, "higher"))
    everything_ours, everything_theirs = ours + ours_slow, theirs + theirs_slow
    rows.append(Row("Request body bytes per event",
                    sum(d.body_bytes for d in everything_ours) / sum(d.events for d in everything_ours),
                    sum(d.body_bytes for d in everything_theirs) / sum(d.events for d in everything_theirs),
                    "B", helper, "lower", 0.1))
    log("request path")
    path = request_path(sizes, log)
    rows.append(Row("Request latency, median (BatchSpanProcessor)", path["mixpanel"][0], path["noop"][0],
                    "us", "no-op exporter", "lower", 1.05))
    rows.append(Row("Request latency, p99 (BatchSpanProcessor)", path["mixpanel"][1], path["noop"][1],
                    "us", "no-op exporter", "lower"))
    log("Mixpanel down, then back")
    mine, helper_outage = outage_exporter(sizes), outage_baseline(sizes)
    log(f"  otel-mixpanel {mine}")
    log(f"  helper {helper_outage}")
    kib = 1024
    rows.append(Row(f"Heap growth while down ({mine.events} / {helper_outage.events} events)",
                    mine.heap_growth / kib, helper_outage.heap_growth / kib, "KiB", helper, "lower", 0.05))
    rows.append(Row("Heap peak while down, over before", mine.heap_peak / kib, helper_outage.heap_peak / kib,
                    "KiB", helper, "lower"))
    rows.append(Row("RSS growth while down", mine.rss_growth / kib, helper_outage.rss_growth / kib,
                    "KiB", helper, "lower"))
    rows.append(Row("Heap after recovery, over before", mine.heap_after / kib, helper_outage.heap_after / kib,
                    "KiB", helper, "lower"))
    rows.append(Row("All events delivered after the server is back", mine.recovery_s, helper_outage.recovery_s,
                    "s", helper, "lower"))
    return rows


def format_table(rows: list[Row]) -> str:
    header = ("Measure", "otel-mixpanel", "Reference", "Reference is", "Ratio", "Target", "Met")
    lines = []
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        lines.append((row.measure, f"{row.ours:,.1f} {row.unit}", f"{row.reference:,.1f} {row.unit}",
                      row.reference_name, f"{row.ratio:.3g}x", row.target_text(), met))
    table = [header, tuple("---" for _ in header), *lines]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in table)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os

    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, no targets enforced (for CI)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    # The outage makes the sender warn, as it should; that is not benchmark output.
    logging.getLogger("otel_mixpanel").setLevel(logging.CRITICAL)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows = measure(sizes, log)
    print(f"{'Smoke run' if args.smoke else 'Run'} on {machine()}, {time.perf_counter() - started:.0f} s")
    print()
    print(format_table(rows))
    return 0 if args.smoke or all(row.met is not False for row in rows) else 1
