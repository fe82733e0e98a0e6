"""The Mixpanel-like ingestion server, in its own process, with wire counters.

``otel_mixpanel.testing.ingest_server.IngestServer`` answers like Mixpanel; this adds
``GET /_stats`` (records accepted and request body bytes as read by the server, per
path) so both sides are measured by the same counter, and ``POST /_forget`` so a long
run does not keep every record in the server's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

from benchmarks.common import ROOT
from otel_mixpanel.testing.ingest_server import IngestServer, _answer


def _stats(server: IngestServer) -> dict[str, Any]:
    with server.lock:
        stats = {path: {"records": 0, "body_bytes": 0, "requests": 0} for path in server.accepted}
        for request in server.requests:
            if request.answered == 200 and request.path in stats:
                entry = stats[request.path]
                entry["records"] += len(request.records)
                entry["body_bytes"] += request.body_bytes
                entry["requests"] += 1
        return stats


def serve(port: int, latency_ms: float) -> None:
    server = IngestServer(port=port, latency=latency_ms / 1000)
    base = server._server.RequestHandlerClass
    totals: dict[str, dict[str, int]] = {}

    def fold_and_forget() -> None:
        # Keep the counters, drop the records: a full run would otherwise hold ~100k events here.
        for path, entry in _stats(server).items():
            total = totals.setdefault(path, dict.fromkeys(entry, 0))
            for key, value in entry.items():
                total[key] += value
        with server.lock:
            server.requests.clear()
            for records in server.accepted.values():
                records.clear()

    class Handler(base):  # type: ignore[valid-type, misc]
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/_stats":
                fold_and_forget()
                _answer(self, 200, totals)
            else:
                super().do_GET()

    server._server.RequestHandlerClass = Handler
    print(f"listening on {server.url}", flush=True)
    server._server.serve_forever()


class ServerProcess:
    """Starts ``python -m benchmarks.ingest`` and reads its counters; restartable on the same port."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self.port = 0
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ingest", "--port", str(self.port), "--latency-ms", str(self.latency_ms)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        line = self._process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"ingest server did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process.stdout.close()
            self._process = None

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used (user + system), or None where /proc cannot tell."""
        if self._process is None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/stat") as stat:
                # Fields after the command name (which may hold spaces); utime and stime are 14th and 15th.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(self.url + "/_stats", timeout=30) as response:
            return json.load(response)

    def accepted(self, path: str) -> tuple[int, int]:
        """(records, body bytes) accepted on ``path`` since the server started."""
        entry = self.stats().get(path, {})
        return entry.get("records", 0), entry.get("body_bytes", 0)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    serve(args.port, args.latency_ms)


if __name__ == "__main__":
    main()
