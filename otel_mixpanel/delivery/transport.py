"""One HTTP request to Mixpanel: where it goes, how its body is built, what its answer means.

Nothing here retries or sleeps; the sender decides what to do with an ``Outcome``.
"""

from __future__ import annotations

import datetime
import enum
import gzip
import json
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Sequence
from urllib.parse import urlencode

import requests
import requests.auth
from mixpanel import ServiceAccountCredentials

from otel_mixpanel.config import Settings

CONSUMER_ENDPOINTS = ("events", "imports", "people", "groups")


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


@dataclass(frozen=True)
class Route:
    """Where the records of one consumer endpoint go and how they are wrapped."""

    url: str
    params: dict[str, str]
    form: bool
    authenticated: bool

    @property
    def path(self) -> str:
        return "/" + self.url.rsplit("/", 1)[-1]


def route_for(settings: Settings, endpoint: str) -> Route:
    base = settings.endpoint.rstrip("/")
    if endpoint == "imports" or (endpoint == "events" and settings.uses_import):
        params = {"strict": "1"}
        if settings.service_account_username and settings.project_id:
            params["project_id"] = settings.project_id
        return Route(f"{base}/import", params, form=False, authenticated=True)
    # ip=0: without it Mixpanel would geolocate every event to this server's address.
    form_params = {"verbose": "1", "ip": "0"}
    if endpoint == "events":
        return Route(f"{base}/track", form_params, form=True, authenticated=False)
    if endpoint == "people":
        return Route(f"{base}/engage", form_params, form=True, authenticated=False)
    if endpoint == "groups":
        return Route(f"{base}/groups", form_params, form=True, authenticated=False)
    raise ValueError(f"unknown Mixpanel endpoint {endpoint!r}; expected one of {', '.join(CONSUMER_ENDPOINTS)}")


def json_array(bodies: Sequence[str]) -> str:
    return "[" + ",".join(bodies) + "]"


def request_size(bodies: Sequence[str]) -> int:
    """Uncompressed bytes of the JSON array these records make (an upper bound for the form too)."""
    return sum(len(body.encode()) for body in bodies) + len(bodies) + 1


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
        account = ServiceAccountCredentials(
            settings.service_account_username, settings.service_account_secret, settings.project_id)
        return account.to_http_basic_auth()
    pair = settings.import_auth
    return requests.auth.HTTPBasicAuth(*pair) if pair else None


class Transport:
    """Builds and sends requests for one set of settings. Not shared between threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._auth = import_auth(settings)
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"Transport(endpoint={self._settings.endpoint!r})"

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None

    def abandon(self) -> None:
        """In a forked child: the parent's pooled sockets are not ours to use or close."""
        self._session = None

    def post(self, route: Route, bodies: Sequence[str], timeout_s: float) -> Outcome:
        if self._session is None:
            self._session = requests.Session()
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
        auth = self._auth if route.authenticated else None
        try:
            response = self._session.post(
                route.url, params=route.params, data=data, headers=headers, auth=auth,
                timeout=(timeout_s, timeout_s),
                # requests would turn a redirected POST into a GET and lose the body.
                allow_redirects=False,
            )
        except requests.Timeout:
            return Outcome(Verdict.RETRY, detail=f"no answer within {timeout_s:.3g} s")
        except requests.RequestException as error:
            return Outcome(Verdict.RETRY, detail=f"cannot reach {self._settings.endpoint}: {type(error).__name__}")
        return classify(route, response.status_code, response.content, response.headers.get("Retry-After"))


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
