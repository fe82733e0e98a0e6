"""A local HTTP server that answers like Mixpanel's ingestion API, for tests, demos and benchmarks.

It accepts ``/import`` (JSON array or NDJSON, optional gzip, Basic auth, ``strict=1``),
``/track`` and ``/engage`` (form ``data=`` or JSON), validates records the way strict
mode does and answers with Mixpanel's bodies. ``geolocation_ip(record)`` tells which
address Mixpanel would locate an accepted record by (its ``ip``/``$ip``, else the
sender's unless the request says ``ip=0``). Faults can be queued to answer the next
requests: an HTTP status with an optional ``Retry-After``, a reset connection, a
request that is never answered, a slow answer, or an answer dripped a byte at a time.
``max_event_bytes`` refuses with 413 a request holding any event larger than that, as
Mixpanel does past its 1 MB event limit. ``max_concurrent`` tells how many
requests it was handling at once at most, and each ``Request`` when it arrived and was
answered, to check what a client sends concurrently.

Run it on its own: ``python -m otel_mixpanel.testing.ingest_server --port 8090``;
``GET /_received`` then returns what it accepted.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from otel_mixpanel.placeholder_ids import is_placeholder_id

INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
EARLIEST_MS = 31_536_000_000  # 1971-01-01


@dataclass
class Fault:
    """How to answer one request instead of accepting it.

    ``kind``: "status" (answer ``status`` with Mixpanel's body for it, ``retry_after`` seconds
    if given), "reset" (close the connection without answering), "hang" (read the request and
    say nothing for ``seconds``), "slow" (wait ``seconds``, then handle normally), or "drip"
    (answer ``status`` one byte every ``seconds``, status line and headers included).
    """

    kind: str = "status"
    status: int = 503
    retry_after: float | None = None
    seconds: float = 0.0


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body_bytes: int
    records: list[dict[str, Any]]
    answered: int
    # time.monotonic() when the request was read and when its answer was decided.
    arrived_at: float = 0.0
    answered_at: float = field(default_factory=time.monotonic)


class IngestServer:
    """Loopback Mixpanel look-alike. Use as a context manager or call ``start()``/``stop()``."""

    def __init__(self, *, credentials: tuple[str, str] | None = None, token: str | None = None,
                 latency: float = 0.0, max_request_bytes: int = 10 * 1024 * 1024,
                 max_records: int = 2000, max_event_bytes: int | None = None, port: int = 0) -> None:
        self.credentials = credentials
        self.token = token
        self.latency = latency
        self.max_request_bytes = max_request_bytes
        self.max_records = max_records
        self.max_event_bytes = max_event_bytes
        self.lock = threading.RLock()
        # Notified whenever records are accepted, so waiting for them costs no polling.
        self._arrived = threading.Condition(self.lock)
        self.faults: deque[Fault] = deque()
        self.requests: list[Request] = []
        self.accepted: dict[str, list[dict[str, Any]]] = {"/import": [], "/track": [], "/engage": [], "/groups": []}
        self.rejected: list[dict[str, Any]] = []
        # id() of each accepted record (kept alive in ``accepted``) -> the address it is geolocated by.
        self._geolocation: dict[int, str | None] = {}
        self.in_flight = 0
        self.max_concurrent = 0
        self._release_hangs = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = cast("tuple[str, int]", self._server.server_address)[:2]
        return f"http://{host}:{port}"

    def start(self) -> IngestServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingest-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release_hangs.set()
        stop_serving(self._server)

    def __enter__(self) -> IngestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def events(self) -> list[dict[str, Any]]:
        """Events accepted on /import and /track, each once per ``$insert_id`` as Mixpanel dedups them."""
        seen: dict[str, dict[str, Any]] = {}
        with self.lock:
            records = self.accepted["/import"] + self.accepted["/track"]
        for record in records:
            insert_id = record.get("properties", {}).get("$insert_id") or id(record)
            seen.setdefault(str(insert_id), record)
        return list(seen.values())

    def accepted_insert_ids(self) -> list[str]:
        """Every ``$insert_id`` accepted, with repeats: a list longer than its set means a duplicate send."""
        with self.lock:
            records = self.accepted["/import"] + self.accepted["/track"]
        return [r.get("properties", {}).get("$insert_id") for r in records]

    def profile_updates(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.accepted["/engage"])

    def group_updates(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.accepted["/groups"])

    def wait_for(self, count: int, timeout: float = 10.0, what: str = "events") -> list[dict[str, Any]]:
        """Wait until at least ``count`` distinct events (or ``what="profiles"``: profile updates) have
        arrived, and return them all; raise ``TimeoutError``, saying what did arrive, at the deadline."""
        received = self.events if what == "events" else self.profile_updates
        with self._arrived:
            if self._arrived.wait_for(lambda: len(received()) >= count, timeout):
                return received()
            got = received()
        shown = [record.get("event", record) for record in got[:10]]
        raise TimeoutError(f"waited {timeout} s for {count} {what}, {len(got)} arrived: {shown}")

    # The request handling, called from the handler thread.

    def _next_fault(self) -> Fault | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def _record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived_at = time.monotonic()
        with self.lock:
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)
        try:
            self._handle(handler, arrived_at)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _handle(self, handler: BaseHTTPRequestHandler, arrived_at: float) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        fault = self._next_fault()
        if fault is not None and fault.kind == "reset":
            _reset(handler)
            return
        if fault is not None and fault.kind == "hang":
            self._release_hangs.wait(fault.seconds)
            _reset(handler)
            return
        if fault is not None and fault.kind == "drip":
            self._record(Request(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in handler.headers.items()},
                                 len(raw), [], fault.status, arrived_at))
            self._drip(handler, fault)
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
            fault = None
        if self.latency:
            time.sleep(self.latency)
        query = parse_qs(parts.query)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if fault is not None:
            self._record(Request(parts.path, query, headers, len(raw), [], fault.status, arrived_at))
            extra = {"Retry-After": _retry_after(fault.retry_after)} if fault.retry_after is not None else {}
            _answer(handler, fault.status, _error_body(fault.status, "injected fault"), extra)
            return
        status, body = self._ingest(parts.path, query, headers, raw, arrived_at, handler.client_address[0])
        _answer(handler, status, body)

    def _drip(self, handler: BaseHTTPRequestHandler, fault: Fault) -> None:
        payload = json.dumps(_error_body(fault.status, "injected fault")).encode()
        answer = (f"HTTP/1.1 {fault.status} Dripped\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        handler.close_connection = True
        for index in range(len(answer)):
            if self._release_hangs.wait(fault.seconds):
                return
            try:
                handler.wfile.write(answer[index:index + 1])
                handler.wfile.flush()
            except OSError:  # the client gave up
                return

    def _ingest(self, path: str, query: dict[str, list[str]], headers: dict[str, str], raw: bytes,
                arrived_at: float, sender: str = "") -> tuple[int, Any]:
        if path not in self.accepted:
            self._record(Request(path, query, headers, len(raw), [], 404, arrived_at))
            return 404, _error_body(404, "not found")
        if len(raw) > self.max_request_bytes:
            self._record(Request(path, query, headers, len(raw), [], 413, arrived_at))
            return 413, _error_body(413, "request body too large")
        try:
            body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
            if len(body) > self.max_request_bytes:
                self._record(Request(path, query, headers, len(raw), [], 413, arrived_at))
                return 413, _error_body(413, "request body too large")
            records, form = _parse_records(body, headers.get("content-type", ""))
        except (ValueError, OSError, EOFError) as error:
            self._record(Request(path, query, headers, len(raw), [], 400, arrived_at))
            return 400, _error_body(400, f"unable to parse request: {error}")
        if self.max_event_bytes is not None and any(
                len(json.dumps(record, separators=(",", ":")).encode()) > self.max_event_bytes for record in records):
            self._record(Request(path, query, headers, len(raw), records, 413, arrived_at))
            return 413, _error_body(413, "event too large")
        if len(records) > self.max_records:
            self._record(Request(path, query, headers, len(raw), records, 400, arrived_at))
            return 400, _error_body(400, f"too many records: {len(records)} > {self.max_records}")
        if path == "/import" and not self._authorised(headers):
            self._record(Request(path, query, headers, len(raw), records, 401, arrived_at))
            return 401, _error_body(401, "Invalid credentials")
        if path in _SIMPLE_PROBLEMS:
            # The official SDK's Consumer sends verbose=1 in the form body, the exporter in the URL.
            verbose = "1" in query.get("verbose", []) + form.get("verbose", [])
            return self._accept_simple(path, query, headers, raw, arrived_at, records, verbose,
                                       (query.get("ip", []) + form.get("ip", []), sender))
        failed, good = [], []
        for index, record in enumerate(records):
            problem = _import_problem(record)
            if problem:
                failed.append({"index": index, "$insert_id": record.get("properties", {}).get("$insert_id"),
                               "field": problem[0], "message": problem[1]})
            else:
                good.append(record)
        strict = query.get("strict", ["0"])[0] == "1"
        with self.lock:
            self.requests.append(
                Request(path, query, headers, len(raw), records, 400 if failed and strict else 200, arrived_at)
            )
            self.accepted[path].extend(good)
            # /import documents no request-wide ip switch: only each event's own ip property counts.
            self._locate(path, good, [], sender)
            self.rejected.extend(records[f["index"]] for f in failed)
            self._arrived.notify_all()
        if failed and strict:
            return 400, {"code": 400, "error": "some data points in the request failed validation",
                         "failed_records": failed, "num_records_imported": len(good), "status": "Bad Request"}
        return 200, {"code": 200, "num_records_imported": len(good), "status": "OK"}

    def _accept_simple(self, path: str, query: dict[str, list[str]], headers: dict[str, str], raw: bytes,
                       arrived_at: float, records: list[dict[str, Any]], verbose: bool,
                       origin: tuple[list[str], str]) -> tuple[int, Any]:
        problems = [p for p in map(_SIMPLE_PROBLEMS[path], records) if p]
        status = 400 if problems else 200
        with self.lock:
            self.requests.append(Request(path, query, headers, len(raw), records, status, arrived_at))
            if not problems:
                self.accepted[path].extend(records)
                self._locate(path, records, *origin)
                self._arrived.notify_all()
        if verbose:
            return status, ({"status": 1, "error": None} if not problems else {"status": 0, "error": problems[0]})
        return status, 1 if not problems else 0

    def _locate(self, path: str, records: list[dict[str, Any]], ip_params: list[str], sender: str) -> None:
        """Note what Mixpanel would geolocate each accepted record by (called under the lock)."""
        for record in records:
            self._geolocation[id(record)] = _geolocation_address(path, record, ip_params, sender)

    def geolocation_ip(self, record: dict[str, Any]) -> str | None:
        """The address Mixpanel would geolocate an accepted event or profile update by; None: not geolocated.

        Mixpanel's rule: an event's ``ip`` property, a profile update's top-level ``$ip``, where
        ``"0"`` means "do not geolocate"; without one, ``ip=0`` on a /track or /engage request
        means the same; otherwise the address that sent the request, a server's when a server sends.
        """
        with self.lock:
            return self._geolocation[id(record)]

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return headers.get("authorization", "").startswith("Basic ")
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("authorization") == f"Basic {expected}"


def stop_serving(server: socketserver.BaseServer) -> None:
    """Stop ``server.serve_forever()`` now and close the server.

    ``shutdown()`` alone returns only once the serving loop next wakes, up to its poll interval later
    (half a second by default, on every test's teardown); a connection wakes the loop at once.
    """
    stopper = threading.Thread(target=server.shutdown, name="server-stop", daemon=True)
    stopper.start()
    host, port = cast("tuple[str, int]", server.server_address)[:2]
    while stopper.is_alive():
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            pass
        stopper.join(0.005)
    server.server_close()


def _parse_records(body: bytes, content_type: str) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The records, and the form's fields when the body is a form."""
    text = body.decode("utf-8")
    form: dict[str, list[str]] = {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(text)
        parsed = json.loads(form.get("data", ["[]"])[0])
    elif content_type.startswith("application/x-ndjson"):
        parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        parsed = json.loads(text)
    records = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(r, dict) for r in records):
        raise ValueError("every record must be a JSON object")
    return records, form


def _import_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    if not isinstance(record.get("event"), str) or not record["event"]:
        return ("event", "'event' must be a non-empty string")
    properties = record.get("properties")
    if not isinstance(properties, dict):
        return ("properties", "'properties' must be an object")
    insert_id = properties.get("$insert_id")
    if not isinstance(insert_id, str) or not INSERT_ID.match(insert_id):
        return ("properties.$insert_id", "'$insert_id' must be 1-36 characters of [A-Za-z0-9-]")
    moment = properties.get("time")
    if not isinstance(moment, (int, float)) or isinstance(moment, bool):
        return ("properties.time", "'properties.time' must be a number")
    millis = moment if moment > 1e11 else moment * 1000
    if millis < EARLIEST_MS or millis > time.time() * 1000 + 3_600_000:
        return ("properties.time", "'properties.time' must be after 1971 and at most 1 hour in the future")
    if "distinct_id" not in properties:
        return ("properties.distinct_id", "'properties.distinct_id' is required")
    distinct_id = str(properties["distinct_id"])
    if is_placeholder_id(distinct_id):
        return ("properties.distinct_id", f"'{distinct_id}' is not a valid distinct_id")
    if len(properties) >= 255:
        return ("properties", "events must have fewer than 255 properties")
    for key, value in properties.items():
        if isinstance(value, str) and len(value.encode("utf-8")) > 255:
            return (f"properties.{key}", "string properties must be at most 255 bytes")
    return None


def _geolocation_address(path: str, record: dict[str, Any], ip_params: list[str], sender: str) -> str | None:
    properties = record.get("properties")
    own = record.get("$ip") if path in ("/engage", "/groups") else (
        properties.get("ip") if isinstance(properties, dict) else None)
    if own is not None:
        return None if str(own) == "0" else str(own)
    return None if "0" in ip_params else sender


def _track_problem(record: dict[str, Any]) -> str | None:
    properties = record.get("properties")
    if not isinstance(record.get("event"), str) or not isinstance(properties, dict):
        return "data, missing or empty 'event' or 'properties'"
    if not properties.get("token"):
        return "token, missing or empty"
    return None


def _profile_problem(record: dict[str, Any]) -> str | None:
    if not record.get("$token"):
        return "$token, missing or empty"
    if "$distinct_id" not in record:
        return "$distinct_id, missing"
    return None


def _group_problem(record: dict[str, Any]) -> str | None:
    if not record.get("$token"):
        return "$token, missing or empty"
    if "$group_key" not in record or "$group_id" not in record:
        return "$group_key or $group_id, missing"
    return None


_SIMPLE_PROBLEMS = {"/engage": _profile_problem, "/track": _track_problem, "/groups": _group_problem}


def _error_body(status: int, message: str) -> dict[str, Any]:
    reasons = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               413: "Request Entity Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
    if status == 429:
        message = "Project exceeded rate limits. Please retry the request with exponential backoff."
    if status == 401:
        message = "Invalid credentials"
    return {"code": status, "error": message, "status": reasons.get(status, "Error")}


def _retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _answer(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    connection: socket.socket = handler.connection
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    connection.close()


def _handler_for(server: IngestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # http.server writes an answer's headers and body separately; with Nagle's algorithm on,
        # the body waits for the client's delayed ACK (40 ms on Linux), a stall Mixpanel does not have.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            server.handle(self)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/_received"):
                _answer(self, 200, {"events": server.events(), "profiles": server.profile_updates(),
                                    "insert_ids": server.accepted_insert_ids()})
            else:
                _answer(self, 404, _error_body(404, "not found"))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    args = parser.parse_args()
    server = IngestServer(port=args.port, latency=args.latency_ms / 1000)
    print(f"listening on {server.url}", flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
