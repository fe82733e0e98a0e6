"""otel-mixpanel against the seeds' ``track_to_mp`` helper, side by side, in one run.

``python -m benchmarks`` prints one table; ``--smoke`` runs every measurement with tiny
counts and enforces nothing (what CI runs). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks import outage, steady
from benchmarks.baseline_helper import make_mixpanel, track_to_mp
from benchmarks.common import EXPORT_BATCH, TOKEN, Spooled
from benchmarks.ingest import ServerProcess
from benchmarks.realistic import PRODUCTION, RealisticStream
from benchmarks.workload import (
    Visit,
    baseline_calls,
    baseline_request,
    call,
    environ_for,
    helper_app,
    instrumented,
    make_spans,
    make_visits,
    shop_app,
)
from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.config import SETTINGS_BY_NAME

REALISTIC_LATENCY_MS = 30.0
# Requests a second offered to the app on the request path: a busy Python worker. Back to back
# (~14k/s for this trivial app) would measure a saturated process, where the BatchSpanProcessor's
# queue overflows and drops spans whatever the exporter.
PATH_RATE = 2_000.0


@dataclass(frozen=True)
class Sizes:
    requests: int
    repeats: int
    path_requests: int
    path_rounds: int
    outage_requests: int
    outage_repeats: int


FULL = Sizes(requests=30_000, repeats=5, path_requests=6_000, path_rounds=5, outage_requests=6_000,
             outage_repeats=3)
SMOKE = Sizes(requests=300, repeats=1, path_requests=300, path_rounds=1, outage_requests=600,
              outage_repeats=1)


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
        return self.ours / self.reference if self.reference else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio != self.ratio:
            return None
        return self.ratio >= self.target if self.better == "higher" else self.ratio <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f">= {self.target:g}x" if self.better == "higher" else f"<= {self.target:g}x"


@dataclass
class Delivery:
    seconds: float
    requests: int
    events: int
    body_bytes: int
    # CPU time of this process (every thread) and of the server, while the side was timed.
    cpu_s: float
    server_cpu_s: float | None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@contextmanager
def fixtures_frozen() -> Iterator[None]:
    """Keep the prepared requests (tens of thousands of spans or request objects, which no real
    process holds at once) out of the garbage collector's full passes while a side is timed:
    otherwise each pass walks them, and the timing depends on the fixture's size."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class CpuClock:
    """CPU time used meanwhile by this process (all its threads) and by the server process."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self.own_s = 0.0
        self.server_s: float | None = None

    def __enter__(self) -> CpuClock:
        self._own_start = time.process_time()
        self._server_start = self._server.cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.own_s = time.process_time() - self._own_start
        server_end = self._server.cpu_seconds()
        if self._server_start is not None and server_end is not None:
            self.server_s = server_end - self._server_start


def deliver_with_exporter(server: ServerProcess, spans: Sequence[ReadableSpan], requests: int) -> Delivery:
    spooled = Spooled(server.url)
    exporter = spooled.exporter
    try:
        events_before, bytes_before = server.accepted("/import")
        with fixtures_frozen(), CpuClock(server) as cpu:
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
    return Delivery(seconds, requests, events, bytes_after - bytes_before, cpu.own_s, cpu.server_s)


def deliver_with_baseline(server: ServerProcess, visits: Sequence[Visit]) -> Delivery:
    mp, consumer = make_mixpanel(TOKEN, server.url)
    prepared = [(baseline_request(visit), visit) for visit in visits]
    sent = 0
    events_before, bytes_before = server.accepted("/track")
    with fixtures_frozen(), CpuClock(server) as cpu:
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
    return Delivery(seconds, len(visits), sent, bytes_after - bytes_before, cpu.own_s, cpu.server_s)


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


def throughput_realistic(sizes: Sizes, log: Callable[[str], None]) -> tuple[list[Delivery], list[Delivery]]:
    """Both sides on the production-like stream (benchmarks/realistic.py), the server 30 ms away.
    The stream goes on from repeat to repeat, so each meets new visitors, pages and click ids."""
    ours, theirs = [], []
    stream = RealisticStream(PRODUCTION, seed=3)
    with ServerProcess(REALISTIC_LATENCY_MS) as server:
        warm = stream.take(max(200, sizes.requests // 3))
        deliver_with_exporter(server, make_spans(warm), len(warm))
        deliver_with_baseline(server, warm)
        for repeat in range(sizes.repeats):
            visits = stream.take(sizes.requests)
            ours.append(deliver_with_exporter(server, make_spans(visits), len(visits)))
            theirs.append(deliver_with_baseline(server, visits))
            log(f"  realistic stream, latency {REALISTIC_LATENCY_MS:g} ms, repeat {repeat + 1}: "
                f"otel-mixpanel {ours[-1].per_second:,.0f} req/s ({ours[-1].events} events), "
                f"helper {theirs[-1].per_second:,.0f} req/s ({theirs[-1].events} events)")
    return ours, theirs


def steady_rows(sizes: Sizes, log: Callable[[str], None]) -> list[Row]:
    """export() per request in steady state (benchmarks/steady.py), realistic stream against the shop's."""
    plan = steady.SMOKE if sizes is SMOKE else steady.FULL
    results: dict[str, list[dict[str, Any]]] = {"realistic": [], "shop": []}
    for repeat in range(sizes.path_rounds if sizes is SMOKE else 3):
        for workload in results:
            results[workload].append(steady.run_child(workload, PRODUCTION, plan))
        log(f"  steady state, repeat {repeat + 1}: " + ", ".join(
            f"{workload} {runs[-1]['wall_us']:.1f} us ({runs[-1]['cpu_us']:.1f} us CPU)"
            for workload, runs in results.items()))
    reference = "shop workload (workload.py)"
    return [
        Row("Conversion, steady state, realistic stream: export() per request, delivery running",
            statistics.median(r["wall_us"] for r in results["realistic"]),
            statistics.median(r["wall_us"] for r in results["shop"]), "us", reference, "lower"),
        Row("Conversion, steady state, realistic stream: export()'s CPU per request",
            statistics.median(r["cpu_us"] for r in results["realistic"]),
            statistics.median(r["cpu_us"] for r in results["shop"]), "us", reference, "lower"),
    ]


class NoOpExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Counting(SpanExporter):
    """Counts what the BatchSpanProcessor hands over, so a full queue (dropped spans) is noticed."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return self.inner.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


def _percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed_requests(app: Callable, environs: list[dict[str, Any]], rate: float) -> tuple[float, float]:
    """(median, p99) latency in microseconds of ``app``, offered ``rate`` requests a second."""
    latencies = []
    clock = time.perf_counter_ns
    slot = 1e9 / rate
    due = clock()
    for environ in environs:
        fresh = dict(environ)
        due += slot
        start = clock()
        call(app, fresh)
        end = clock()
        latencies.append(end - start)
        if due > end:
            time.sleep((due - end) / 1e9)
    return statistics.median(latencies) / 1000, _percentile(latencies, 0.99) / 1000


def instrumented_round(exporter: SpanExporter, environs: list[dict[str, Any]],
                       app: Callable = shop_app) -> tuple[float, float]:
    """``app`` under the OpenTelemetry WSGI middleware, with this exporter behind a BatchSpanProcessor."""
    counting = Counting(exporter)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(counting))
    result = timed_requests(instrumented(app, provider), environs, PATH_RATE)
    provider.shutdown()
    if counting.spans != len(environs):
        raise RuntimeError(f"the BatchSpanProcessor dropped {len(environs) - counting.spans} spans")
    return result


def helper_round(server: ServerProcess, environs: list[dict[str, Any]]) -> tuple[float, float]:
    """The same traced app (no-op exporter) calling the seeds' helper in its handlers instead."""
    mp, consumer = make_mixpanel(TOKEN, server.url)
    result = instrumented_round(NoOpExporter(), environs, helper_app(mp))
    consumer.flush()
    return result


PATH_VARIANTS = ("noop", "mixpanel", "helper")


def request_path(sizes: Sizes, log: Callable[[str], None]) -> dict[str, tuple[float, float]]:
    environs = [environ_for(visit) for visit in make_visits(sizes.path_requests, seed=7)]
    results: dict[str, list[tuple[float, float]]] = {variant: [] for variant in PATH_VARIANTS}
    # Mixpanel at a realistic distance: the exporter never waits for it, the helper does.
    with ServerProcess(REALISTIC_LATENCY_MS) as server:
        def one(variant: str, requests: list[dict[str, Any]]) -> tuple[float, float]:
            gc.collect()
            if variant == "noop":
                return instrumented_round(NoOpExporter(), requests)
            if variant == "helper":
                return helper_round(server, requests)
            # Default settings throughout, as an application runs it (the throughput runs shorten the
            # schedule delay, which would wake the sender a hundred times a second here).
            spooled = Spooled(server.url, schedule_delay_ms=SETTINGS_BY_NAME["schedule_delay_ms"].default)
            try:
                return instrumented_round(spooled.exporter, requests)
            finally:
                spooled.close()

        for variant in PATH_VARIANTS:
            one(variant, environs[:500])
        for round_number in range(sizes.path_rounds):
            # Rotate the order so drift (thermal, other tenants) hits every variant alike.
            shift = round_number % len(PATH_VARIANTS)
            for variant in PATH_VARIANTS[shift:] + PATH_VARIANTS[:shift]:
                results[variant].append(one(variant, environs))
            log(f"  request path round {round_number + 1} (median / p99 us): "
                + ", ".join(f"{variant} {results[variant][-1][0]:.1f} / {results[variant][-1][1]:.1f}"
                            for variant in PATH_VARIANTS))
    return {variant: (statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds))
            for variant, rounds in results.items()}


def cpu_rows(ours: list[Delivery], theirs: list[Delivery], helper: str) -> list[Row]:
    """Where the instant-server throughput is bounded: CPU per request on each side of the wire."""
    def per_request(deliveries: list[Delivery], seconds: Callable[[Delivery], float | None]) -> float | None:
        values = [seconds(d) for d in deliveries]
        if any(value is None for value in values):
            return None
        return statistics.median([1e6 * value / d.requests for value, d in zip(values, deliveries)])

    rows = [Row("CPU per request, instant server: this process, every thread",
                per_request(ours, lambda d: d.cpu_s), per_request(theirs, lambda d: d.cpu_s), "us", helper, "lower")]
    server_ours = per_request(ours, lambda d: d.server_cpu_s)
    server_theirs = per_request(theirs, lambda d: d.server_cpu_s)
    if server_ours is not None and server_theirs is not None:
        rows.append(Row("CPU per request, instant server: the Mixpanel-like server", server_ours, server_theirs,
                        "us", helper, "lower"))
    return rows


def measure(sizes: Sizes, log: Callable[[str], None]) -> list[Row]:
    helper = "seeds' helper"
    rows = []
    log("throughput, instant server")
    ours, theirs = throughput(sizes, 0.0, 0.0, log)
    rows.append(Row("Throughput, instant server", statistics.median([d.per_second for d in ours]),
                    statistics.median([d.per_second for d in theirs]), "req/s", helper, "higher", 5))
    rows.extend(cpu_rows(ours, theirs, helper))
    log(f"throughput, {REALISTIC_LATENCY_MS:g} ms server")
    ours_slow, theirs_slow = throughput(sizes, REALISTIC_LATENCY_MS, 0.0, log)
    rows.append(Row(f"Throughput, server answering in {REALISTIC_LATENCY_MS:g} ms",
                    statistics.median([d.per_second for d in ours_slow]), statistics.median([d.per_second for d in theirs_slow]),
                    "req/s", helper, "higher", 20))
    log("throughput, half the user agents never seen before")
    ours_new, theirs_new = throughput(sizes, 0.0, 0.5, log)
    rows.append(Row("Throughput, half the user agents new, instant server",
                    statistics.median([d.per_second for d in ours_new]), statistics.median([d.per_second for d in theirs_new]),
                    "req/s", helper, "higher"))
    log(f"throughput, realistic stream, {REALISTIC_LATENCY_MS:g} ms server")
    ours_real, theirs_real = throughput_realistic(sizes, log)
    rows.append(Row(f"Throughput, realistic stream, server answering in {REALISTIC_LATENCY_MS:g} ms",
                    statistics.median([d.per_second for d in ours_real]),
                    statistics.median([d.per_second for d in theirs_real]), "req/s", helper, "higher", 20))
    log("conversion in steady state")
    rows.extend(steady_rows(sizes, log))
    everything_ours, everything_theirs = ours + ours_slow, theirs + theirs_slow
    rows.append(Row("Request body bytes per event",
                    statistics.median(d.body_bytes / d.events for d in everything_ours),
                    statistics.median(d.body_bytes / d.events for d in everything_theirs),
                    "B", helper, "lower", 0.1))
    log("request path")
    path = request_path(sizes, log)
    rows.append(Row(f"Request latency at {PATH_RATE:,.0f} req/s, median", path["mixpanel"][0], path["noop"][0],
                    "us", "no-op exporter", "lower", 1.05))
    rows.append(Row(f"Request latency at {PATH_RATE:,.0f} req/s, p99", path["mixpanel"][1], path["noop"][1],
                    "us", "no-op exporter", "lower"))
    rows.append(Row(f"Request latency, median, vs helper in the handler ({REALISTIC_LATENCY_MS:g} ms server)",
                    path["mixpanel"][0], path["helper"][0], "us", "no-op exporter + " + helper, "lower"))
    rows.append(Row(f"Request latency, p99, vs helper in the handler ({REALISTIC_LATENCY_MS:g} ms server)",
                    path["mixpanel"][1], path["helper"][1], "us", "no-op exporter + " + helper, "lower"))
    log("Mixpanel down, then back")
    runs: dict[str, list[outage.Outage]] = {"exporter": [], "helper": []}
    for repeat in range(sizes.outage_repeats):
        for side, results in runs.items():
            results.append(outage.measure(side, sizes.outage_requests))
            log(f"  {side}, repeat {repeat + 1}: {results[-1]}")
    mine, helper_outage = outage.median(runs["exporter"]), outage.median(runs["helper"])
    kib = 1024
    rows.append(Row(f"Heap growth, 2nd half of outage ({mine.events} / {helper_outage.events} events in all)",
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
        ratio = f"{row.ratio:.3g}x" if row.ratio == row.ratio else "n/a"
        lines.append((row.measure, f"{row.ours:,.1f} {row.unit}", f"{row.reference:,.1f} {row.unit}",
                      row.reference_name, ratio, row.target_text(), met))
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
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}, "
            f"conversion {conversion_build()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, no targets enforced (for CI)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows = measure(sizes, log)
    print(f"{'Smoke run' if args.smoke else 'Run'} on {machine()}, {time.perf_counter() - started:.0f} s")
    print()
    print(format_table(rows))
    return 0 if args.smoke or all(row.met is not False for row in rows) else 1
