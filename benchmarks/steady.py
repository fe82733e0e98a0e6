"""Conversion cost per request in steady state: ``python -m benchmarks.steady [--sweep] [--smoke]``.

What an application pays on its exporting thread: ``export()`` timed batch by batch (512
spans, as ``BatchSpanProcessor`` hands them over) while the delivery threads run (default
settings: SQLite spool, 1 s schedule delay, batches of 2,000, gzip) against the Mixpanel-like
server of ``benchmarks/ingest.py`` in its own process, answering in 30 ms. Caches are warmed
by the same request stream first, so what is measured is their steady hit rate, not a cold
start nor a stream that a few hundred requests exhaust.

Inside ``export()``, the spool hand-over (the sender's ``send_many``: SQLite's insert, and waiting for the
spool's write lock while a delivery thread holds it) is timed apart: what remains is conversion, from spans
to serialised records, in steady state.

Each measurement runs in a fresh process (the exporter's caches are per process), prints one
JSON line, and the parent prints the table. ``--sweep`` varies the stream's cardinality one
dimension at a time, from the benchmark shop's (everything cached) to production-like.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

from benchmarks.common import EXPORT_BATCH, ROOT, Spooled
from benchmarks.ingest import ServerProcess
from benchmarks.realistic import PRODUCTION, SMALL, Cardinality, RealisticStream, with_cardinality
from benchmarks.workload import Visit, make_spans, make_visits
from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.config import SETTINGS_BY_NAME
from otel_mixpanel.delivery.local import DiscardingSender

LATENCY_MS = 30.0


class TimedHandOver:
    """The exporter's sender, with the time its ``send_many`` takes (the spool hand-over) added up."""

    def __init__(self, sender: Any) -> None:
        self.sender = sender
        self.cpu_ns = self.wall_ns = 0

    def send_many(self, messages: Any, *, prevalidated: bool = False) -> None:
        start_cpu, start = time.thread_time_ns(), time.perf_counter_ns()
        self.sender.send_many(messages, prevalidated=prevalidated)
        self.wall_ns += time.perf_counter_ns() - start
        self.cpu_ns += time.thread_time_ns() - start_cpu

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sender, name)


@dataclass(frozen=True)
class Plan:
    warm_requests: int
    chunk: int
    chunks: int


FULL = Plan(warm_requests=20_000, chunk=10_000, chunks=4)
SMOKE = Plan(warm_requests=300, chunk=300, chunks=1)

# (label, module, attribute): the exporter's caches, read for their hit rates; a renamed one is left out.
CACHES = (
    ("user agents", "otel_mixpanel.enrich.user_agent", "_CACHED_PARSERS.mixpanel"),
    ("pages", "otel_mixpanel.context", "_cached_page"),
    ("referrers", "otel_mixpanel.enrich.referrer", "_referrer_properties"),
    ("first touches", "otel_mixpanel.enrich.first_touch", "_first_touch"),
    ("campaign first touches", "otel_mixpanel.enrich.first_touch", "_campaign_touch"),
)


def _cache_counts() -> dict[str, tuple[int, int]]:
    counts = {}
    for label, module_name, path in CACHES:
        target: Any = sys.modules.get(module_name)
        for part in path.split("."):
            target = target.get(part) if isinstance(target, dict) else getattr(target, part, None)
        info = getattr(target, "cache_info", None)
        if info is not None:
            hits, misses = info()[:2]
            counts[label] = (hits, misses)
    return counts


def _requests(workload: str, cardinality: Cardinality) -> Iterator[Callable[[int], list[Visit]]]:
    if workload == "shop":
        seed = 1
        while True:
            seed += 1
            yield lambda count, seed=seed: make_visits(count, seed=seed)
    stream = RealisticStream(cardinality)
    while True:
        yield stream.take


def measure_one(workload: str, cardinality: Cardinality, plan: Plan, delivery: bool) -> dict[str, Any]:
    """One steady-state measurement in this process: µs per request on the exporting thread."""
    chunks = _requests(workload, cardinality)
    with ServerProcess(LATENCY_MS) as server:
        spooled = Spooled(server.url, schedule_delay_ms=SETTINGS_BY_NAME["schedule_delay_ms"].default)
        exporter = spooled.exporter
        if not delivery:
            # Conversion alone: the same export(), records handed to a sender that drops them.
            exporter.sender.shutdown(timeout_millis=1_000)
            exporter._sender = DiscardingSender()
        hand_over = exporter._sender = TimedHandOver(exporter._sender)
        try:
            warm = make_spans(next(chunks)(plan.warm_requests))
            for first in range(0, len(warm), EXPORT_BATCH):
                exporter.export(warm[first:first + EXPORT_BATCH])
            del warm
            return _timed_chunks(exporter, hand_over, chunks, plan) | {"delivery": delivery}
        finally:
            spooled.close()


def _timed_chunks(exporter: Any, hand_over: TimedHandOver, chunks: Iterator[Callable[[int], list[Visit]]],
                  plan: Plan) -> dict[str, Any]:
    wall_us: list[float] = []
    cpu_us: list[float] = []
    hand_over_cpu_us: list[float] = []
    hand_over_wall_us: list[float] = []
    before = _cache_counts()
    for _ in range(plan.chunks):
        spans = make_spans(next(chunks)(plan.chunk))
        # The prepared spans are a fixture no application holds at once: out of the collector's way.
        gc.collect()
        gc.freeze()
        wall = cpu = 0
        hand_over.cpu_ns = hand_over.wall_ns = 0
        try:
            for first in range(0, len(spans), EXPORT_BATCH):
                batch = spans[first:first + EXPORT_BATCH]
                start_cpu, start = time.thread_time_ns(), time.perf_counter_ns()
                exporter.export(batch)
                wall += time.perf_counter_ns() - start
                cpu += time.thread_time_ns() - start_cpu
        finally:
            gc.unfreeze()
        wall_us.append(wall / 1000 / len(spans))
        cpu_us.append(cpu / 1000 / len(spans))
        hand_over_cpu_us.append(hand_over.cpu_ns / 1000 / len(spans))
        hand_over_wall_us.append(hand_over.wall_ns / 1000 / len(spans))
    after = _cache_counts()
    hit_rates = {}
    for label, (hits, misses) in after.items():
        hits -= before.get(label, (0, 0))[0]
        misses -= before.get(label, (0, 0))[1]
        hit_rates[label] = hits / (hits + misses) if hits + misses else None
    conversion_cpu_us = [total - spooling for total, spooling in zip(cpu_us, hand_over_cpu_us)]
    return {"wall_us": statistics.median(wall_us), "cpu_us": statistics.median(cpu_us),
            "hand_over_cpu_us": statistics.median(hand_over_cpu_us),
            "hand_over_wall_us": statistics.median(hand_over_wall_us),
            "conversion_cpu_us": statistics.median(conversion_cpu_us), "chunks_wall_us": wall_us, "hit_rates": hit_rates, "load": os.getloadavg()[0]}


def run_child(workload: str, cardinality: Cardinality, plan: Plan, delivery: bool = True) -> dict[str, Any]:
    """``measure_one`` in a fresh process, so no cache holds an earlier measurement's values."""
    arguments = json.dumps({"workload": workload, "cardinality": asdict(cardinality), "plan": asdict(plan),
                            "delivery": delivery})
    completed = subprocess.run([sys.executable, "-m", "benchmarks.steady", "--child", arguments],
                               cwd=ROOT, capture_output=True, text=True, timeout=1_800)
    if completed.returncode != 0:
        raise RuntimeError(f"steady-state measurement failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


SWEEP: tuple[tuple[str, str, Cardinality], ...] = (
    ("benchmark shop (workload.py)", "shop", SMALL),
    ("realistic stream, the shop's cardinality", "realistic", SMALL),
    ("+ 3,000 user agents", "realistic", with_cardinality(SMALL, user_agents=3_000)),
    ("+ 5,000 products, 2,000 searches", "realistic", with_cardinality(SMALL, products=5_000, search_terms=2_000)),
    ("+ click ids on campaign links", "realistic", with_cardinality(SMALL, click_ids=True)),
    ("+ a quarter of visitors on IPv6", "realistic", with_cardinality(SMALL, ipv6=0.25)),
    ("production-like (all of the above)", "realistic", PRODUCTION),
)


def _hit_text(rates: dict[str, float | None]) -> str:
    return ", ".join(f"{label} {rate:.0%}" for label, rate in rates.items() if rate is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts (for CI)")
    parser.add_argument("--sweep", action="store_true", help="vary the stream's cardinality, one dimension at a time")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per point; the median is printed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        result = measure_one(spec["workload"], Cardinality(**spec["cardinality"]), Plan(**spec["plan"]),
                             spec["delivery"])
        print(json.dumps(result))
        return 0
    plan = SMOKE if args.smoke else FULL
    repeats = 1 if args.smoke else args.repeats
    points = SWEEP if args.sweep else (SWEEP[0], SWEEP[-1])
    print(f"Conversion {conversion_build()}.")
    print("| Stream | export() us/request, delivery running (wall) | its CPU | of which the spool hand-over: CPU "
          "(wall) | conversion: the rest of the CPU | conversion alone (wall) | cache hit rates | load average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, workload, cardinality in points:
        running = [run_child(workload, cardinality, plan) for _ in range(repeats)]
        alone = [run_child(workload, cardinality, plan, delivery=False) for _ in range(repeats)]
        print(f"| {label} | {statistics.median(r['wall_us'] for r in running):.1f} "
              f"({', '.join(format(r['wall_us'], '.1f') for r in running)}) "
              f"| {statistics.median(r['cpu_us'] for r in running):.1f} "
              f"| {statistics.median(r['hand_over_cpu_us'] for r in running):.1f} "
              f"({statistics.median(r['hand_over_wall_us'] for r in running):.1f}) "
              f"| {statistics.median(r['conversion_cpu_us'] for r in running):.1f} "
              f"| {statistics.median(r['wall_us'] for r in alone):.1f} "
              f"| {_hit_text(running[-1]['hit_rates'])} "
              f"| {statistics.median(r['load'] for r in running + alone):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
