"""Where the exporter's time goes: ``python -m benchmarks.profile [--latency-ms 30]``.

Runs the throughput measurement's exporter side once under cProfile, on both threads
that do the work: the caller's (``export()``: spans to events, into the spool) and the
sender's (spool to Mixpanel). Prints each thread's busiest functions with their share
of that thread's profiled time, and the wall-clock split between handing spans over and
waiting for delivery.

cProfile sees a compiled module's functions as single built-ins, not what they call: to see
inside conversion, profile a pure-Python install (``OTEL_MIXPANEL_COMPILE=0 pip install -e .``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import time

from benchmarks.common import EXPORT_BATCH, Spooled
from benchmarks.ingest import ServerProcess
from benchmarks.realistic import PRODUCTION, RealisticStream
from benchmarks.workload import make_spans, make_visits
from otel_mixpanel.compiled import conversion_build


# (what, file, function): cumulative shares worth naming; a function not called (or renamed) is left out.
CALLER_STAGES = (
    ("spans -> request facts (attributes, identity, user agent)", "context.py", "read_request"),
    ("facts -> request context (IP, referrer, campaign, page, first touch)", "context.py", "enrich_request"),
    ("context -> Mixpanel events", "events.py", "messages"),
    ("events -> JSON, checked for time and size", "conversion.py", "serialise"),
    ("SQLite spool insert", "spool.py", "put_many"),
)
SENDER_STAGES = (
    ("claim from the spool", "spool.py", "claim"),
    ("remove delivered records", "spool.py", "remove"),
    ("HTTP request (gzip, send, wait for the answer)", "transport.py", "post"),
    ("gzip", "~", "<built-in method zlib.compress>"),
)


def _stages(stats: pstats.Stats, stages: tuple[tuple[str, str, str], ...], total: float) -> list[str]:
    lines = ["  stage shares (cumulative, of the thread's profiled time):"]
    for what, filename, name in stages:
        cumulative = sum(entry[3] for (path, _, function), entry in stats.stats.items()
                         if function == name and path.endswith(filename))
        if cumulative:
            lines.append(f"  {100 * cumulative / total:5.1f}%  {what}")
    return lines


def _top(profiles: list[cProfile.Profile], title: str, limit: int,
         stages: tuple[tuple[str, str, str], ...]) -> str:
    stats = pstats.Stats(*profiles, stream=io.StringIO())
    total = stats.total_tt or 1.0
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:limit]
    lines = [f"{title}: {total:.3f} s profiled", *_stages(stats, stages, total), "  own%   cum%  calls  function"]
    for (filename, line, name), (_, calls, own, cumulative, _) in rows:
        where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        lines.append(f"  {100 * own / total:4.1f}  {100 * cumulative / total:5.1f}  {calls:6d}  {name} ({where}:{line})")
    return "\n".join(lines)


def _workload(name: str, requests: int) -> tuple[list, list]:
    """(warm-up spans, profiled spans): the shop's, or the production-like stream's (warmed by as many
    requests of the same stream, so its caches are at their steady hit rates)."""
    if name == "realistic":
        stream = RealisticStream(PRODUCTION)
        warm = make_spans(stream.take(max(requests, 20_000)))
        return warm, make_spans(stream.take(requests))
    return make_spans(make_visits(200, seed=999)), make_spans(make_visits(requests, seed=1))


def profile(requests: int, latency_ms: float, limit: int, workload: str = "shop") -> str:
    warm_spans, spans = _workload(workload, requests)
    with ServerProcess(latency_ms) as server:
        warm = Spooled(server.url)
        for first in range(0, len(warm_spans), EXPORT_BATCH):
            warm.exporter.export(warm_spans[first:first + EXPORT_BATCH])
        warm.exporter.force_flush(60_000)
        warm.close()

        spooled = Spooled(server.url)
        sender = spooled.exporter.sender
        # A profile follows only the thread that enabled it: one per delivery thread, merged after.
        sender_profiles: list[cProfile.Profile] = []
        pool = sender._pool
        run = pool._run

        def profiled_run(*args: object) -> None:
            thread_profile = cProfile.Profile()
            sender_profiles.append(thread_profile)
            thread_profile.enable()
            try:
                run(*args)
            finally:
                thread_profile.disable()

        # The delivery threads start on the first export and look their target up then.
        pool._run = profiled_run
        caller_profile = cProfile.Profile()
        # The prepared spans are a fixture no application holds at once: out of the collector's way, or its
        # full passes over them are charged to whichever function allocated last (the assembler's add).
        gc.collect()
        gc.freeze()
        start = time.perf_counter()
        caller_profile.enable()
        for first in range(0, len(spans), EXPORT_BATCH):
            spooled.exporter.export(spans[first:first + EXPORT_BATCH])
        handed_over = time.perf_counter()
        spooled.exporter.force_flush(300_000)
        caller_profile.disable()
        delivered = time.perf_counter()
        gc.unfreeze()
        spooled.close()
    return "\n\n".join([
        f"{requests} requests, server latency {latency_ms:g} ms (times under cProfile, so slower than the benchmark): "
        f"export() calls {handed_over - start:.3f} s, then waiting for delivery {delivered - handed_over:.3f} s",
        _top([caller_profile], "Caller's thread (export, then force_flush waiting)", limit, CALLER_STAGES),
        _top(sender_profiles, f"Sender's {len(sender_profiles)} threads", limit, SENDER_STAGES),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=25)
    parser.add_argument("--workload", choices=("shop", "realistic"), default="shop",
                        help="the benchmark shop's requests, or the production-like stream of benchmarks/realistic.py")
    args = parser.parse_args()
    if conversion_build() != "pure Python":
        print("Conversion is compiled: cProfile sees each compiled function as one built-in (see the module's doc)")
    print(profile(args.requests, args.latency_ms, args.limit, args.workload))


if __name__ == "__main__":
    main()
