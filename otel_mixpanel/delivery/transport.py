"""One HTTP request to Mixpanel: where it goes, how its body is built, what its answer means.

Nothing here retries or sleeps; the sender decides what to do with an ``Outcome``.

A request has one deadline for the whole exchange: connecting, sending the body, and
reading the whole answer. ``requests`` (like urllib3 and ``socket``) only bounds each
connect and each read, so a server that answers a byte at a time could hold a delivery
thread for as long as it liked; here a timer shuts the request's socket down when its
deadline passes, and the request ends as one that got no answer.
"""

from __future__ import annotations

import datetime
import enum
import gzip
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Sequence
from urllib.parse import urlencode

import requests
import requests.adapters
import requests.auth
import urllib3.connection
import urllib3.connectionpool

from otel_mixpanel.config import Settings
from otel_mixpanel.delivery.routes import Route


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # every record taken (some may be named in ``failed``, dropped for good)
    RETRY = "retry"  # transient: the same records later (429, 5xx, connection trouble, time-out)
    TOO_LARGE = "too_large"  # 413: split the batch
    REJECTED = "rejected"  # 400 without per-record detail: the batch as a whole was refused
    CREDENTIALS = "credentials"  # 401/403: keep everything, tell the operator
    MISCONFIGURED = "misconfigured"  # any other answer (e.g. 404 from a wrong endpoint URL): keep, tell


@dataclass(frozen=True)
class FailedRecord:
    index: int
    insert_id: str | None
    field: str
    message: str


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None
    failed: tuple[FailedRecord, ...] = field(default=())


def json_array(bodies: Sequence[str]) -> str:
    return "[" + ",".join(bodies) + "]"


def request_size(sizes: Sequence[int]) -> int:
    """Uncompressed bytes of the JSON array that records of these sizes (UTF-8 bytes) make (an upper
    bound for the form too)."""
    return sum(sizes) + len(sizes) + 1


def split_by_size(items: Sequence[Any], sizes: Sequence[int], max_bytes: int) -> list[list[Any]]:
    """Consecutive groups whose JSON array stays within ``max_bytes``; a lone oversize record goes alone."""
    groups: list[list[Any]] = []
    current: list[Any] = []
    total = 1
    for item, size in zip(items, sizes):
        if current and total + size + 1 > max_bytes:
            groups.append(current)
            current, total = [], 1
        current.append(item)
        total += size + 1
    if current:
        groups.append(current)
    return groups


def import_auth(settings: Settings) -> requests.auth.AuthBase | None:
    """Basic credentials for /import, in Mixpanel's order of preference."""
    if settings.service_account_username and settings.service_account_secret and settings.project_id:
        # The official SDK's service-account credentials: its checks, and a repr that hides the secret.
        # Imported here: the SDK takes a tenth of a second to import (httpx, its feature flags), which
        # every application not using a service account would pay at start.
        from mixpanel import ServiceAccountCredentials

        account = ServiceAccountCredentials(
            settings.service_account_username, settings.service_account_secret, settings.project_id)
        auth: requests.auth.AuthBase = account.to_http_basic_auth()
        return auth
    pair = settings.import_auth
    return requests.auth.HTTPBasicAuth(*pair) if pair else None


class _Exchange:
    """The connections one request uses, so that its deadline can cut them off from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[urllib3.connection.HTTPConnection] = []
        self.cut_off = False

    def attach(self, connection: urllib3.connection.HTTPConnection) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)
            cut_off = self.cut_off
        if cut_off:
            _shut_down(connection)

    def cut(self) -> None:
        with self._lock:
            self.cut_off = True
            connections = list(self._connections)
        for connection in connections:
            _shut_down(connection)


def _shut_down(connection: urllib3.connection.HTTPConnection) -> None:
    sock = connection.sock
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also under TLS: the blocked read then returns at once.
        # (SSLSocket.shutdown would first drop the TLS state the reading thread is using.)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


_current = threading.local()


def _attach_to_current_exchange(connection: urllib3.connection.HTTPConnection) -> None:
    exchange: _Exchange | None = getattr(_current, "exchange", None)
    if exchange is not None:
        exchange.attach(connection)


class _JoinsTheExchange:
    """Makes a urllib3 connection join the request in progress on its thread, when it connects or is reused."""

    def connect(self) -> None:
        _attach_to_current_exchange(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_to_current_exchange(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_JoinsTheExchange, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_JoinsTheExchange, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that join the request in progress on their thread."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager) and set(manager.pool_classes_by_scheme) == {"http", "https"}:
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _Watchdog:
    """A thread that cuts off a transport's request in progress when its deadline passes.

    One per transport (so per delivery thread), started on first use: a timer thread per
    request would cost more than a request to a nearby server.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._exchange: _Exchange | None = None
        self._deadline = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, exchange: _Exchange, timeout_s: float) -> None:
        with self._cond:
            self._exchange, self._deadline = exchange, time.monotonic() + timeout_s
            self._cond.notify()
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="otel-mixpanel-deadline", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                return  # at interpreter exit no thread can start: each connect and read keeps its time-out
            self._thread = thread

    def done(self) -> None:
        with self._cond:
            self._exchange = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                left = self._deadline - time.monotonic()
                if self._exchange is not None and left <= 0:
                    self._exchange.cut()
                    self._exchange = None
                self._cond.wait(left if self._exchange is not None else None)


class Transport:
    """Builds and sends requests for one set of settings. Not shared between threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._auth = import_auth(settings)
        self._session: requests.Session | None = None
        self._watchdog = _Watchdog()

    def __repr__(self) -> str:
        return f"Transport(endpoint={self._settings.endpoint!r})"

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._watchdog.close()
        self._watchdog = _Watchdog()

    def abandon(self) -> None:
        """In a forked child: the parent's pooled sockets are not ours to use or close, nor is its thread."""
        self._session = None
        self._watchdog = _Watchdog()

    def post(self, route: Route, bodies: Sequence[str], timeout_s: float) -> Outcome:
        """Send ``bodies`` as one request; the whole exchange ends within ``timeout_s``."""
        if self._session is None:
            self._session = _new_session()
        data, headers = self._body(route, bodies)
        exchange = _Exchange()
        response: requests.Response | None
        self._watchdog.watch(exchange, timeout_s)
        _current.exchange = exchange
        try:
            response = self._session.post(
                route.url, params=route.params, data=data, headers=headers,
                auth=self._auth if route.authenticated else None,
                timeout=(timeout_s, timeout_s),
                # requests would turn a redirected POST into a GET and lose the body.
                allow_redirects=False,
            )
        except requests.RequestException as error:
            if not exchange.cut_off and not isinstance(error, requests.Timeout):
                return Outcome(Verdict.RETRY, detail=f"cannot reach {self._settings.endpoint}: {type(error).__name__}")
            response = None
        finally:
            _current.exchange = None
            self._watchdog.done()
        if response is None or exchange.cut_off:
            # Cut off, an answer may look complete to http.client without being so: it is not believed.
            # (Had it been complete after all, the retry is deduplicated by the records' $insert_id.)
            return Outcome(Verdict.RETRY, detail=f"no complete answer within {timeout_s:.3g} s")
        return classify(route, response.status_code, response.content, response.headers.get("Retry-After"))

    def _body(self, route: Route, bodies: Sequence[str]) -> tuple[bytes, dict[str, str]]:
        payload = json_array(bodies)
        headers = {"Accept": "application/json"}
        if route.form:
            data = urlencode({"data": payload}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = payload.encode()
            headers["Content-Type"] = "application/json"
        if self._settings.compression == "gzip":
            data = gzip.compress(data, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return data, headers


def classify(route: Route, status: int, content: bytes, retry_after: str | None = None) -> Outcome:
    body = _json_or_none(content)
    error = body.get("error") if isinstance(body, dict) else None
    detail = str(error) if error else content[:200].decode("utf-8", "replace")
    if status == 429 or 500 <= status < 600:
        return Outcome(Verdict.RETRY, status, detail, retry_after_s=_retry_after_seconds(retry_after))
    if status in (401, 403):
        return Outcome(Verdict.CREDENTIALS, status, detail)
    if status == 413:
        return Outcome(Verdict.TOO_LARGE, status, detail)
    if status == 400:
        failed = _failed_records(body)
        if failed:
            return Outcome(Verdict.DELIVERED, status, detail, failed=failed)
        return Outcome(Verdict.REJECTED, status, detail)
    if 200 <= status < 300:
        # /track, /engage and /groups with verbose=1 answer {"status": 0, "error": ...} for a refused batch.
        if route.form and isinstance(body, dict) and body.get("status") == 0:
            return Outcome(Verdict.REJECTED, status, detail)
        return Outcome(Verdict.DELIVERED, status)
    return Outcome(Verdict.MISCONFIGURED, status, detail)


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _failed_records(body: Any) -> tuple[FailedRecord, ...]:
    if not isinstance(body, dict) or not isinstance(body.get("failed_records"), list):
        return ()
    failed = []
    for item in body["failed_records"]:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            failed.append(FailedRecord(item["index"], item.get("$insert_id"),
                                       str(item.get("field", "")), str(item.get("message", ""))))
    return tuple(failed)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
