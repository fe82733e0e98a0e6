"""The benchmarks still run: ``python -m benchmarks --smoke`` (tiny counts, no targets) prints every row.

Numbers are not checked here; a loaded CI machine says nothing about speed. See docs/performance.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = (
    "Throughput, instant server",
    "CPU per request, instant server: this process, every thread",
    "CPU per request, instant server: the Mixpanel-like server",
    "Throughput, server answering in 30 ms",
    "Throughput, half the user agents new, instant server",
    "Throughput, realistic stream, server answering in 30 ms",
    "Conversion, steady state, realistic stream: export() per request, delivery running",
    "Conversion, steady state, realistic stream: export()'s CPU per request",
    "Request body bytes per event",
    "Request latency at 2,000 req/s, median",
    "Request latency at 2,000 req/s, p99",
    "Request latency, median, vs helper in the handler (30 ms server)",
    "Request latency, p99, vs helper in the handler (30 ms server)",
    "Heap growth, 2nd half of outage",
    "Heap peak while down, over before",
    "RSS growth while down",
    "Heap after recovery, over before",
    "All events delivered after the server is back",
)
NUMBER = re.compile(r"^-?[\d,]+\.\d (req/s|B|us|KiB|s)$")


def test_smoke_mode_prints_the_whole_table() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("Smoke run on ")
    table = [line for line in lines if line.startswith("| ") and not line.startswith(("| Measure", "| ---"))]
    assert len(table) == len(ROWS)
    for line, name in zip(table, ROWS):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0].startswith(name)
        assert len(cells) == 7, line
        assert NUMBER.match(cells[1]) and NUMBER.match(cells[2]), line


def test_stage_timings_cover_every_step_of_export() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", "--requests", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr
    timed = re.findall(r"^(.+?)\s+(\d+\.\d\d) us/request$", completed.stdout, re.MULTILINE)
    assert [label.strip() for label, _ in timed] == [
        "warm-up export()", "export(), whole", "spans -> requests (assembler)", "read_request",
        "page-view decision", "may_produce", "enrich_request", "messages", "serialise (JSON, time, size)"]
    assert all(float(value) > 0 for _, value in timed)
    assert re.search(r"^300 requests, \d+ enriched, \d+ messages$", completed.stdout, re.MULTILINE)


def test_hand_over_and_delivery_timings_are_printed() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.handover", "--requests", "300", "--repeats", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr
    timed = re.findall(r"^(.+?)\s+(\d+\.\d\d) us/request$", completed.stdout, re.MULTILINE)
    assert [label.strip() for label, _ in timed] == [
        "spool insert (put_many)", "delivery threads, whole", "of which gzip"]
    assert all(float(value) > 0 for _, value in timed)
    assert re.search(r"^300 requests, \d+ records, \d+ characters$", completed.stdout, re.MULTILINE)
