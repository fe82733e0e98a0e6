"""Memory while Mixpanel is down and events keep coming, then after it is back.

Each side runs in a fresh process (``python -m benchmarks.outage exporter|helper``,
printing JSON) so that its RSS is not hidden by memory an earlier measurement freed.
The server is stopped for the outage and started again on the same port.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable

from mixpanel import MixpanelException

from benchmarks.baseline_helper import make_mixpanel, track_to_mp
from benchmarks.common import EXPORT_BATCH, ROOT, TOKEN, Spooled
from benchmarks.ingest import ServerProcess
from benchmarks.workload import baseline_calls, baseline_request, make_spans, make_visits

RECOVERY_LIMIT_S = 120.0


@dataclass
class Outage:
    events: int
    # tracemalloc, bytes: the highest heap of the outage's second half over the highest of
    # its first half (zero when flat), the highest during it over before it, and after
    # recovery over before it.
    heap_growth: int
    heap_peak: int
    heap_after: int
    # VmRSS growth over the whole outage, bytes.
    rss_growth: int
    recovery_s: float


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _outage(server: ServerProcess, feed: Callable[[int], None], batches: int, recovered: Callable[[], bool],
            events: Callable[[], int]) -> Outage:
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
        if time.perf_counter() - start > RECOVERY_LIMIT_S:
            raise RuntimeError(f"events were not delivered within {RECOVERY_LIMIT_S:g} s of the server coming back")
        time.sleep(0.02)
    recovery = time.perf_counter() - start
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # Peaks, not end points: the batch the sender holds while retrying comes and goes.
    half = max(1, len(samples) // 2)
    growth = max(samples[half:] or samples[-1:]) - max(samples[:half])
    return Outage(events(), growth, peak, after, rss_growth, recovery)


def with_exporter(requests: int) -> Outage:
    spans = make_spans(make_visits(requests, seed=11))
    batches = [spans[i:i + EXPORT_BATCH] for i in range(0, len(spans), EXPORT_BATCH)]
    server = ServerProcess().start()
    # Backoff capped at 2 s instead of 60 s, so recovery is seen within the run.
    spooled = Spooled(server.url, retry_initial_ms=500, retry_max_ms=2000)
    exporter = spooled.exporter
    try:
        exporter.export(make_spans(make_visits(200, seed=12)))
        exporter.force_flush(30_000)
        sent_before = exporter.sender.stats.sent
        result = _outage(server, lambda batch: exporter.export(batches[batch]), len(batches),
                         # Spool empty, and no delivery thread still holding the batch it just sent.
                         lambda: exporter.sender.spool.pending()[0] == 0 and exporter.force_flush(1000),
                         lambda: exporter.sender.stats.sent - sent_before)
        accepted, _ = server.accepted("/import")
        if accepted != result.events:
            raise RuntimeError(f"after the outage the server accepted {accepted} of {result.events} events")
    finally:
        spooled.close()
        server.stop()
    return result


def with_helper(requests: int) -> Outage:
    prepared = [(baseline_request(visit), visit) for visit in make_visits(requests, seed=11)]
    batches = [prepared[i:i + EXPORT_BATCH] for i in range(0, len(prepared), EXPORT_BATCH)]
    server = ServerProcess().start()
    mp, consumer = make_mixpanel(TOKEN, server.url)
    sent = 0
    for request, visit in prepared[:200]:
        for name, properties in baseline_calls(visit):
            track_to_mp(mp, request, name, properties)
    consumer.flush()
    accepted_before, _ = server.accepted("/track")

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

    try:
        result = _outage(server, feed, len(batches), recovered, lambda: sent)
        # The restarted server counts from zero; the warm-up went to the first one.
        accepted, _ = server.accepted("/track")
        if accepted != sent:
            raise RuntimeError(f"after the outage the server accepted {accepted} of {sent} baseline events "
                               f"(warm-up: {accepted_before})")
    finally:
        server.stop()
    return result


def median(results: list[Outage]) -> Outage:
    """Each figure's median over repeated runs of one side."""
    return Outage(**{field.name: statistics.median(getattr(result, field.name) for result in results)
                     for field in dataclasses.fields(Outage)})


def measure(side: str, requests: int) -> Outage:
    """Run one side in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.outage", side, "--requests", str(requests)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"outage measurement ({side}) failed:\n{completed.stderr}")
    return Outage(**json.loads(completed.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=("exporter", "helper"))
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    # The sender warns about the outage, as it should; that is not benchmark output.
    logging.getLogger("otel_mixpanel").setLevel(logging.CRITICAL)
    result = with_exporter(args.requests) if args.side == "exporter" else with_helper(args.requests)
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main()
