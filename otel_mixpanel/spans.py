"""Step 1: read what instrumentation recorded on a span, in either semantic-convention generation.

The result is a plain ``HttpFacts`` (for HTTP server spans) and ``IdentityFacts`` (for
any span). Nothing here interprets the values; later steps do.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Final, Mapping, NamedTuple
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
    user_agent_attributes as user_agent_incubating,
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

from otel_mixpanel.baggage_ids import CARRIED_USER_ATTRIBUTE
from otel_mixpanel.limits import is_ascii, truncate_utf8
from otel_mixpanel.placeholder_ids import is_placeholder_id

# Looked up once: reading an enum member from its class costs more than the comparison.
_SERVER: Final = SpanKind.SERVER

# A captured header's attribute is the template, a dot and the header's name.
REQUEST_HEADER_PREFIX = http.HTTP_REQUEST_HEADER_TEMPLATE + "."
RESPONSE_HEADER_PREFIX = http.HTTP_RESPONSE_HEADER_TEMPLATE + "."


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
    referer: str | None
    # What the client asked for and what it got: the page-view decision (otel_mixpanel.page_views).
    accept: str | None = None
    fetch_dest: str | None = None
    fetch_mode: str | None = None
    content_type: str | None = None


# A named tuple from the tuple of all its fields in order: tuple.__new__, called directly, makes it at about half
# the cost of its generated __new__ (Python code), and with one call fewer than through functools.partial.
# Several are made for every request.
new_named_tuple: Final = tuple.__new__

# Leaves room for the "$device:" prefix within Mixpanel's 255 bytes; real ids are far shorter.
MAX_ID_BYTES = 200


class IdentityFacts(NamedTuple):
    device_id: str | None
    user_id: str | None
    latitude: float | None
    longitude: float | None


def _text(value: Any) -> str | None:
    if type(value) is str and is_ascii(value):
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
    if not is_ascii(text):
        # Lone surrogates cannot be encoded, so would break every later step.
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text or None


def _status(value: Any) -> int | None:
    if type(value) is int:
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        # OverflowError: an infinite float.
        return None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        # OverflowError: an integer too large for a float.
        return None
    return number if number == number and abs(number) != float("inf") else None


@lru_cache(maxsize=None)
def _header_keys(name: str, prefix: str = REQUEST_HEADER_PREFIX) -> tuple[str, str]:
    """Both spellings of a captured header's attribute: ``x-forwarded-for`` as the spec
    writes it, ``x_forwarded_for`` as opentelemetry-util-http does."""
    return prefix + name, prefix + name.replace("-", "_")


_USER_AGENT_HEADER: Final = _header_keys("user-agent")
_REFERER_HEADER: Final = _header_keys("referer")
_ACCEPT_HEADER: Final = _header_keys("accept")
_FETCH_DEST_HEADER: Final = _header_keys("sec-fetch-dest")
_FETCH_MODE_HEADER: Final = _header_keys("sec-fetch-mode")
_CONTENT_TYPE_HEADER: Final = _header_keys("content-type", RESPONSE_HEADER_PREFIX)


def _header(get: Callable[[str], Any], keys: tuple[str, ...]) -> tuple[str, ...]:
    for key in keys:
        value = get(key)
        if value is None:
            continue
        if type(value) is str or (isinstance(value, (list, tuple)) and len(value) == 1):
            # One value, as instrumentation records nearly every header.
            text = _text(value)
            if text:
                return (text,)
            continue
        values = value if isinstance(value, (list, tuple)) else (value,)
        texts = tuple(t for t in (_text(v) for v in values) if t)
        if texts:
            return texts
    return ()


def _first_header(get: Callable[[str], Any], keys: tuple[str, str]) -> str | None:
    """The first value of a captured header, all that most headers are read for: ``_header``'s
    first, without its general case for the usual shape."""
    for key in keys:
        value = get(key)
        if value is None:
            continue
        if type(value) is tuple and len(value) == 1 and type(value[0]) is str:
            # As instrumentation records nearly every header: one value.
            text = _text(value[0])
            if text:
                return text
            continue
        texts = _header(get, (key,))
        if texts:
            return texts[0]
    return None


def _path_and_query(get: Callable[[str], Any], full: str | None, span_name: str
                    ) -> tuple[str | None, str | None]:
    path = _text(get(url.URL_PATH))
    query = _text(get(url.URL_QUERY))
    if path:
        return path, query
    target = _text(get(http_old.HTTP_TARGET))
    if target is not None:
        target_path, _, target_query = target.partition("?")
        return target_path or "/", target_query or query
    if full:
        parts = urlsplit(full)
        return parts.path or "/", parts.query or query
    # wsgiref in the stable mode records no path at all; the span name is "GET /path".
    method, _, name_path = span_name.partition(" ")
    if name_path.startswith("/"):
        return name_path, query
    return None, query


def read_http(span_name: str, kind: SpanKind | None, attributes: Mapping[str, Any]) -> HttpFacts | None:
    """The HTTP request of a server span, or None when the span is not one.

    Each fact is read from the stable attribute first, then the old one; an empty value
    counts as absent.
    """
    if kind != _SERVER:
        return None
    # The SDK's spans give a dict (span_reads.ended_span_attributes): the plain reader takes nothing else.
    plain = _read_plain_http(attributes) if type(attributes) is dict else None
    return plain or _read_http(span_name, attributes)


# The methods instrumentation records, already upper case.
_UPPER_CASE_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def _all_plain(values: tuple[Any, ...]) -> bool:
    """Each value is None or text that ``_text`` returns unchanged: ASCII, not empty, not padded."""
    for value in values:
        if value is not None and not (type(value) is str and value and is_ascii(value) and value.strip() is value):
            return False
    return True


def _header_value(attributes: dict[str, Any], keys: tuple[str, str]) -> Any:
    """A captured header as it was recorded, unwrapped when it is one value (a tuple of one, as
    instrumentation records nearly every header)."""
    value = attributes.get(keys[0])
    if value is None:
        value = attributes.get(keys[1])
    return value[0] if type(value) is tuple and len(value) == 1 else value


# The keys the plain readers look up, as final names. Compiled (otel_mixpanel/compiled.py), each is then read
# from a C variable instead of from its semantic-conventions module, and each look-up in the dict they are typed
# with is a direct call of the dict's C function: these readers run for every request.
_METHOD: Final = http.HTTP_REQUEST_METHOD
_OLD_METHOD: Final = http_old.HTTP_METHOD
_HOST: Final = server.SERVER_ADDRESS
_OLD_HOST: Final = http_old.HTTP_HOST
_OLD_NET_HOST: Final = net_old.NET_HOST_NAME
_PATH: Final = url.URL_PATH
_AGENT: Final = user_agent.USER_AGENT_ORIGINAL
_OLD_AGENT: Final = http_old.HTTP_USER_AGENT
_STATUS: Final = http.HTTP_RESPONSE_STATUS_CODE
_OLD_STATUS: Final = http_old.HTTP_STATUS_CODE
_FULL_URL: Final = url.URL_FULL
_OLD_URL: Final = http_old.HTTP_URL
_SCHEME: Final = url.URL_SCHEME
_OLD_SCHEME: Final = http_old.HTTP_SCHEME
_QUERY: Final = url.URL_QUERY
_ROUTE: Final = http.HTTP_ROUTE
_CLIENT: Final = client.CLIENT_ADDRESS
_OLD_CLIENT: Final = http_old.HTTP_CLIENT_IP
_OLD_PEER: Final = net_old.NET_PEER_IP
_SYNTHETIC: Final = user_agent_incubating.USER_AGENT_SYNTHETIC_TYPE
_PSEUDO_ID: Final = enduser.ENDUSER_PSEUDO_ID
_ENDUSER_ID: Final = enduser.ENDUSER_ID
_USER_ID: Final = user.USER_ID
_LATITUDE: Final = geo.GEO_LOCATION_LAT
_LONGITUDE: Final = geo.GEO_LOCATION_LON


def _read_plain_http(attributes: dict[str, Any]) -> HttpFacts | None:
    """``_read_http``'s answer for the usual span, or None to have ``_read_http`` read it.

    The usual span records each fact as plain text (headers as a tuple of one text), and a
    path, a host and a user agent, but no full URL. Its facts are then the values themselves,
    found by the same look-ups in the same order as ``_read_http``'s, with no ``_text`` to call
    for each. Anything else (odd types, padding, non-ASCII text, facts to be found elsewhere)
    is left to ``_read_http``. tests/test_spans.py compares the two on generated spans.
    """
    method = attributes.get(_METHOD) or attributes.get(_OLD_METHOD)
    host = attributes.get(_HOST) or attributes.get(_OLD_HOST) or attributes.get(_OLD_NET_HOST)
    path = attributes.get(_PATH)
    agent = attributes.get(_AGENT) or attributes.get(_OLD_AGENT)
    status = attributes.get(_STATUS) or attributes.get(_OLD_STATUS)
    if (not method or not host or not path or not agent or (status is not None and type(status) is not int)
            or attributes.get(_FULL_URL) is not None or attributes.get(_OLD_URL) is not None):
        return None
    scheme = attributes.get(_SCHEME) or attributes.get(_OLD_SCHEME)
    query = attributes.get(_QUERY)
    route = attributes.get(_ROUTE)
    peer = attributes.get(_CLIENT) or attributes.get(_OLD_CLIENT) or attributes.get(_OLD_PEER)
    referer = _header_value(attributes, _REFERER_HEADER)
    accept = _header_value(attributes, _ACCEPT_HEADER)
    fetch_dest = _header_value(attributes, _FETCH_DEST_HEADER)
    fetch_mode = _header_value(attributes, _FETCH_MODE_HEADER)
    content_type = _header_value(attributes, _CONTENT_TYPE_HEADER)
    if not _all_plain((method, scheme, host, path, query, route, agent, peer,
                       referer, accept, fetch_dest, fetch_mode, content_type)):
        return None
    # Most methods and schemes come in the case asked for: kept as they are rather than copied.
    if method not in _UPPER_CASE_METHODS:
        method = method.upper()
    if scheme and scheme != "https" and scheme != "http":
        scheme = scheme.lower()
    return new_named_tuple(HttpFacts, (method, scheme or None, host, path, query, route, status,
                            agent, attributes.get(_SYNTHETIC) is not None, peer,
                            referer, accept, fetch_dest, fetch_mode, content_type))


def _read_http(span_name: str, attributes: Mapping[str, Any]) -> HttpFacts | None:
    """``read_http`` for any span: every fact through ``_text``, wherever it was recorded."""
    get = attributes.get
    method = _text(get(http.HTTP_REQUEST_METHOD) or get(http_old.HTTP_METHOD))
    if method is None:
        return None
    full = _text(get(url.URL_FULL) or get(http_old.HTTP_URL))
    path, query = _path_and_query(get, full, span_name)
    scheme = _text(get(url.URL_SCHEME) or get(http_old.HTTP_SCHEME))
    host = _text(get(server.SERVER_ADDRESS) or get(http_old.HTTP_HOST) or get(net_old.NET_HOST_NAME))
    if full and (not scheme or not host):
        parts = urlsplit(full)
        scheme = scheme or parts.scheme or None
        host = host or parts.netloc or None
    return HttpFacts(
        method.upper(),
        scheme.lower() if scheme else None,
        host or _text(get(http_old.HTTP_SERVER_NAME)),
        path,
        query,
        _text(get(http.HTTP_ROUTE)),
        _status(get(http.HTTP_RESPONSE_STATUS_CODE) or get(http_old.HTTP_STATUS_CODE)),
        _text(get(user_agent.USER_AGENT_ORIGINAL) or get(http_old.HTTP_USER_AGENT))
        or _first_header(get, _USER_AGENT_HEADER),
        get(user_agent_incubating.USER_AGENT_SYNTHETIC_TYPE) is not None,
        _text(get(client.CLIENT_ADDRESS) or get(http_old.HTTP_CLIENT_IP) or get(net_old.NET_PEER_IP)),
        _first_header(get, _REFERER_HEADER),
        # Accept may arrive split into several header lines; together they are one list.
        ", ".join(_header(get, _ACCEPT_HEADER)) or None,
        _first_header(get, _FETCH_DEST_HEADER),
        _first_header(get, _FETCH_MODE_HEADER),
        _first_header(get, _CONTENT_TYPE_HEADER),
    )


def request_header(attributes: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """The values of captured request header ``name`` (lower case), in either attribute spelling.

    The proxy headers are read this way, and only those the settings need."""
    return _header(attributes.get, _request_header_keys(name))


def request_header_cut(attributes: Mapping[str, Any], limit: int, name: str) -> bool:
    """Whether a captured value of request header ``name`` is ``limit`` characters long, as the
    SDK leaves a longer one (keeping its start)."""
    for key in _request_header_keys(name):
        value = attributes.get(key)
        values = value if isinstance(value, (list, tuple)) else (value,)
        if any(isinstance(item, str) and len(item) >= limit for item in values):
            return True
    return False


@lru_cache(maxsize=64)
def _request_header_keys(name: str) -> tuple[str, str]:
    # Asked for on every request, always for the few header names the settings name.
    return _header_keys(name)


def identity_text(value: Any) -> str | None:
    """An id Mixpanel can use, or None: placeholders such as "null" or "0" are no id at all."""
    text = _text(value)
    if text is None or is_placeholder_id(text):
        return None
    return truncate_utf8(text, MAX_ID_BYTES)


def read_identity(attributes: Mapping[str, Any]) -> IdentityFacts:
    plain = _read_plain_identity(attributes) if type(attributes) is dict else None
    return plain or _read_identity(attributes)


def _read_identity(attributes: Mapping[str, Any]) -> IdentityFacts:
    """``read_identity`` for any span: each id through ``identity_text``, each coordinate through ``_number``."""
    get = attributes.get
    device_id = identity_text(get(enduser.ENDUSER_PSEUDO_ID))
    user_id = identity_text(get(enduser.ENDUSER_ID) or get(user.USER_ID))
    if device_id is not None and user_id is not None and _names_another_user(get(CARRIED_USER_ATTRIBUTE), user_id):
        device_id = None
    return IdentityFacts(device_id, user_id, _number(get(geo.GEO_LOCATION_LAT)), _number(get(geo.GEO_LOCATION_LON)))


def _read_plain_identity(attributes: dict[str, Any]) -> IdentityFacts | None:
    """``_read_identity``'s answer for the usual span (ids that ``identity_text`` returns as they are,
    no location), or None to have ``_read_identity`` read it. tests/test_spans.py compares the two."""
    device_id = attributes.get(_PSEUDO_ID)
    user_id = attributes.get(_ENDUSER_ID) or attributes.get(_USER_ID)
    if (attributes.get(_LATITUDE) is not None or attributes.get(_LONGITUDE) is not None
            or (device_id is not None and not _plain_id(device_id))
            or (user_id is not None and not _plain_id(user_id))
            or (device_id is not None and user_id is not None and attributes.get(CARRIED_USER_ATTRIBUTE) is not None)):
        return None
    return new_named_tuple(IdentityFacts, (device_id, user_id, None, None))


def _plain_id(value: Any) -> bool:
    """``value`` is an id that ``identity_text`` returns unchanged: short, unpadded ASCII text that is
    no placeholder."""
    return (type(value) is str and 0 < len(value) <= MAX_ID_BYTES and is_ascii(value) and value.strip() is value
            and not is_placeholder_id(value))


def _names_another_user(carried_user: Any, user_id: str) -> bool:
    """A job's span whose device id came from the enqueuing request, now naming a user the request did not."""
    return carried_user is not None and (identity_text(carried_user) or "") != user_id
