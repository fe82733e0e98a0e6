"""Step 1: read what instrumentation recorded on a span, in either semantic-convention generation.

The result is a plain ``HttpFacts`` (for HTTP server spans) and ``IdentityFacts`` (for
any span). Nothing here interprets the values; later steps do.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import (
    enduser_attributes as enduser,
)
from opentelemetry.semconv._incubating.attributes import (
    geo_attributes as geo,
)
from opentelemetry.semconv._incubating.attributes import (
    http_attributes as http_old,
)
from opentelemetry.semconv._incubating.attributes import (
    net_attributes as net_old,
)
from opentelemetry.semconv._incubating.attributes import (
    user_attributes as user,
)
from opentelemetry.semconv.attributes import (
    client_attributes as client,
)
from opentelemetry.semconv.attributes import (
    http_attributes as http,
)
from opentelemetry.semconv.attributes import (
    server_attributes as server,
)
from opentelemetry.semconv.attributes import (
    url_attributes as url,
)
from opentelemetry.semconv.attributes import (
    user_agent_attributes as user_agent,
)
from opentelemetry.trace import SpanKind

from otel_mixpanel.limits import truncate_utf8

USER_AGENT_SYNTHETIC_TYPE = "user_agent.synthetic.type"
REQUEST_HEADER_PREFIX = "http.request.header."


class HttpFacts(NamedTuple):
    """An HTTP server request as the span describes it; None where nothing recorded it.

    A named tuple rather than a frozen dataclass: it is made for every request, and
    building a frozen dataclass costs several times more.
    """

    method: str | None
    scheme: str | None
    host: str | None
    path: str | None
    query: str | None
    route: str | None
    status_code: int | None
    user_agent: str | None
    synthetic: bool
    peer_address: str | None
    forwarded_for: tuple[str, ...]
    forwarded: tuple[str, ...]
    referer: str | None


# Values that Mixpanel refuses as ids, or that mean "nobody" when an application writes them.
NOT_AN_ID = frozenset({"anon", "anonymous", "null", "nil", "none", "undefined", "unknown", "0", "-1", "[]", "{}",
                       "<nil>", "lmy47d", "true", "false", "00000000-0000-0000-0000-000000000000"})


# Leaves room for the "$device:" prefix within Mixpanel's 255 bytes; real ids are far shorter.
MAX_ID_BYTES = 200


class IdentityFacts(NamedTuple):
    device_id: str | None
    user_id: str | None
    latitude: float | None
    longitude: float | None


def _first(attributes: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = attributes.get(name)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    if type(value) is str and value.isascii():
        # Nearly every attribute: plain ASCII text, needing no more than a strip.
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip()
    if not text.isascii():
        # Lone surrogates cannot be encoded, so would break every later step.
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text or None


def _status(value: Any) -> int | None:
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _header_keys(name: str) -> tuple[str, str]:
    """Both spellings of a captured request header's attribute: ``x-forwarded-for`` as the spec
    writes it, ``x_forwarded_for`` as opentelemetry-util-http does."""
    return REQUEST_HEADER_PREFIX + name, REQUEST_HEADER_PREFIX + name.replace("-", "_")


_USER_AGENT_HEADER = _header_keys("user-agent")
_FORWARDED_FOR_HEADER = _header_keys("x-forwarded-for")
_FORWARDED_HEADER = _header_keys("forwarded")
_REFERER_HEADER = _header_keys("referer")

_METHOD = (http.HTTP_REQUEST_METHOD, http_old.HTTP_METHOD)
_FULL_URL = (url.URL_FULL, http_old.HTTP_URL)
_HOST = (server.SERVER_ADDRESS, http_old.HTTP_HOST, net_old.NET_HOST_NAME)
_SCHEME = (url.URL_SCHEME, http_old.HTTP_SCHEME)
_STATUS = (http.HTTP_RESPONSE_STATUS_CODE, http_old.HTTP_STATUS_CODE)
_USER_AGENT = (user_agent.USER_AGENT_ORIGINAL, http_old.HTTP_USER_AGENT)
_PEER = (client.CLIENT_ADDRESS, http_old.HTTP_CLIENT_IP, net_old.NET_PEER_IP)
_USER_ID = (enduser.ENDUSER_ID, user.USER_ID)


def _header(attributes: Mapping[str, Any], keys: tuple[str, str]) -> tuple[str, ...]:
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else (value,)
        texts = tuple(t for t in (_text(v) for v in values) if t)
        if texts:
            return texts
    return ()


def _path_and_query(attributes: Mapping[str, Any], span_name: str) -> tuple[str | None, str | None]:
    path = _text(attributes.get(url.URL_PATH))
    query = _text(attributes.get(url.URL_QUERY))
    if path:
        return path, query
    target = _text(attributes.get(http_old.HTTP_TARGET))
    if target is None:
        full = _text(_first(attributes, _FULL_URL))
        if full:
            parts = urlsplit(full)
            return parts.path or "/", parts.query or query
    if target is not None:
        target_path, _, target_query = target.partition("?")
        return target_path or "/", target_query or query
    # wsgiref in the stable mode records no path at all; the span name is "GET /path".
    method, _, name_path = span_name.partition(" ")
    if name_path.startswith("/"):
        return name_path, query
    return None, query


def _host(attributes: Mapping[str, Any]) -> str | None:
    host = _text(_first(attributes, _HOST))
    if host:
        return host
    full = _text(_first(attributes, _FULL_URL))
    if full:
        return urlsplit(full).netloc or None
    return _text(attributes.get(http_old.HTTP_SERVER_NAME))


def _scheme(attributes: Mapping[str, Any]) -> str | None:
    scheme = _text(_first(attributes, _SCHEME))
    if scheme:
        return scheme.lower()
    full = _text(_first(attributes, _FULL_URL))
    return urlsplit(full).scheme.lower() or None if full else None


def read_http(span_name: str, kind: SpanKind | None, attributes: Mapping[str, Any]) -> HttpFacts | None:
    """The HTTP request of a server span, or None when the span is not one."""
    if kind != SpanKind.SERVER:
        return None
    method = _text(_first(attributes, _METHOD))
    if method is None:
        return None
    path, query = _path_and_query(attributes, span_name)
    return HttpFacts(
        method.upper(),
        _scheme(attributes),
        _host(attributes),
        path,
        query,
        _text(attributes.get(http.HTTP_ROUTE)),
        _status(_first(attributes, _STATUS)),
        _text(_first(attributes, _USER_AGENT)) or (_header(attributes, _USER_AGENT_HEADER) or (None,))[0],
        attributes.get(USER_AGENT_SYNTHETIC_TYPE) is not None,
        _text(_first(attributes, _PEER)),
        _header(attributes, _FORWARDED_FOR_HEADER),
        _header(attributes, _FORWARDED_HEADER),
        (_header(attributes, _REFERER_HEADER) or (None,))[0],
    )


def identity_text(value: Any) -> str | None:
    """An id Mixpanel can use, or None: placeholders such as "null" or "0" are no id at all."""
    text = _text(value)
    if text is None or text.lower() in NOT_AN_ID:
        return None
    return truncate_utf8(text, MAX_ID_BYTES)


def read_identity(attributes: Mapping[str, Any]) -> IdentityFacts:
    return IdentityFacts(
        identity_text(attributes.get(enduser.ENDUSER_PSEUDO_ID)),
        identity_text(_first(attributes, _USER_ID)),
        _number(attributes.get(geo.GEO_LOCATION_LAT)),
        _number(attributes.get(geo.GEO_LOCATION_LON)),
    )
