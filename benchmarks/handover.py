"""Delivery's cost per request: ``python -m benchmarks.handover [--requests N] [--repeats R]``.

Both sides of delivery in CPU time per request of the production-like stream, without a
profiler (the minimum of ``--repeats`` runs, each on a fresh spool file):

- the hand-over: the records of each ``export()`` batch spooled with ``Spool.put_many``, the
  SQLite insert ``export()`` makes before it returns (``send_many`` adds little to it), with no
  delivery thread running;
- delivery: the delivery threads sending those records (claims, reads, gzip, HTTP to the
  Mixpanel-like server of ``benchmarks/ingest.py`` answering in 30 ms, deletions, checkpoints),
  the process's CPU during ``flush()`` (the flushing thread only waits); and of that, gzip alone,
  the same request bodies compressed again.

``benchmarks.steady`` measures ``export()`` itself while the delivery threads run.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from typing import Iterable

from benchmarks.common import EXPORT_BATCH, TOKEN
from benchmarks.ingest import ServerProcess
from benchmarks.realistic import PRODUCTION, RealisticStream
from benchmarks.workload import make_spans
from otel_mixpanel import MixpanelSpanExporter
from otel_mixpanel.config import Settings
from otel_mixpanel.delivery import MixpanelSender
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.delivery.local import DiscardingSender
from otel_mixpanel.delivery.spool import Spool
from otel_mixpanel.delivery.transport import json_array, split_by_size

LATENCY_MS = 30.0
Batch = list[tuple[str, str]]


class _Keeping(DiscardingSender):
    """Keeps what ``export()`` hands over, batch by batch, as the spool would receive it."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def send_many(self, messages: Iterable[tuple[str, str]], *, prevalidated: bool = False) -> None:
        self.batches.append([(Endpoint.named(endpoint).value, body) for endpoint, body in messages])


def exported_records(requests: int) -> list[Batch]:
    """The records of ``requests`` requests of the stream, per export batch, after as many to warm the caches."""
    exporter = MixpanelSpanExporter(token=TOKEN, spool="memory", endpoint="http://127.0.0.1:9")
    exporter.sender.shutdown(timeout_millis=1_000)
    keeping = exporter._sender = _Keeping()
    stream = RealisticStream(PRODUCTION)
    for _ in range(2):
        keeping.batches.clear()
        spans = make_spans(stream.take(requests))
        for first in range(0, len(spans), EXPORT_BATCH):
            exporter.export(spans[first:first + EXPORT_BATCH])
    return keeping.batches


def _spool(directory: str) -> Spool:
    return Spool(f"{directory}/spool.sqlite3", max_events=10**7, max_bytes=10**11)


def hand_over_us(batches: list[Batch], requests: int) -> float:
    directory = tempfile.mkdtemp(prefix="otel-mixpanel-bench-")
    try:
        spool = _spool(directory)
        start = time.thread_time_ns()
        for batch in batches:
            spool.put_many(batch)
        spent = time.thread_time_ns() - start
        spool.close()
        return spent / 1000 / requests
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def delivery_us(batches: list[Batch], requests: int, url: str) -> float:
    directory = tempfile.mkdtemp(prefix="otel-mixpanel-bench-")
    try:
        spool = _spool(directory)
        for batch in batches:
            spool.put_many(batch)
        sender = MixpanelSender(Settings.load({"token": TOKEN, "endpoint": url, "spool_dir": directory},
                                              environ={}), spool)
        start = time.process_time_ns()
        delivered = sender.flush(timeout_millis=120_000)
        spent = time.process_time_ns() - start
        sender.shutdown(timeout_millis=5_000)
        if not delivered or sender.stats.sent != sum(map(len, batches)):
            raise RuntimeError(f"delivery did not complete: {sender.stats}")
        return spent / 1000 / requests
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def gzip_us(batches: list[Batch], requests: int, settings: Settings) -> float:
    """Compressing the records' request bodies as the transport does, in requests as large as a claimed
    batch makes them (endpoints mixed: the sizes are what matters)."""
    bodies = [body for batch in batches for _, body in batch]
    start = time.thread_time_ns()
    for first in range(0, len(bodies), settings.batch_size):
        claimed = bodies[first:first + settings.batch_size]
        for chunk in split_by_size(claimed, [len(body.encode()) for body in claimed], settings.max_request_bytes):
            gzip.compress(json_array(chunk).encode(), compresslevel=6)
    return (time.thread_time_ns() - start) / 1000 / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    batches = exported_records(args.requests)
    settings = Settings.load({"token": TOKEN}, environ={})
    results: dict[str, list[float]] = {"spool insert (put_many)": [], "delivery threads, whole": [],
                                       "  of which gzip": []}
    with ServerProcess(LATENCY_MS) as server:
        for _ in range(args.repeats):
            results["spool insert (put_many)"].append(hand_over_us(batches, args.requests))
            results["delivery threads, whole"].append(delivery_us(batches, args.requests, server.url))
            results["  of which gzip"].append(gzip_us(batches, args.requests, settings))
    for label, values in results.items():
        print(f"{label:<34} {min(values):6.2f} us/request")
    records = [body for batch in batches for _, body in batch]
    print(f"{args.requests} requests, {len(records)} records, {sum(map(len, records))} characters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
