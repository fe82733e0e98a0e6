"""What the web middleware writes on the request's span for the exporter to read.

Only what the default instrumentation leaves out: the device id; the Referer; the proxy
headers (the client address, X-Forwarded-Proto and -Host; the exporter believes them only
from trusted proxies); ``Accept``, ``Sec-Fetch-Dest``, ``Sec-Fetch-Mode`` and the response's
``Content-Type``, from which the exporter tells a browser's page load from an API call
(otel_mixpanel.page_views); and ``url.path`` / ``url.query`` when the instrumentation did not
record them (under wsgiref with stable semantic conventions there is no RAW_URI, so it
records neither). Cookie and Authorization are never recorded.

Headers are read through a ``HeaderGetter`` so that every server interface (WSGI environ,
Django's ``META``, an ASGI scope's header list) records the same attributes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_PSEUDO_ID
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY
from opentelemetry.trace import Span

from otel_mixpanel.config import CLIENT_IP_HEADERS
from otel_mixpanel.enrich.client_ip import MAX_FORWARDING_CHARS, right_end
from otel_mixpanel.span_reads import attribute_length_limit
from otel_mixpanel.spans import REQUEST_HEADER_PREFIX, RESPONSE_HEADER_PREFIX

RESPONSE_CONTENT_TYPE = RESPONSE_HEADER_PREFIX + "content-type"
# Request headers recorded as sent, by their lower-case names; the attribute is the prefix plus
# the name, as the semantic conventions spell it (dashes kept).
RECORDED_HEADERS = ("referer", "accept", "sec-fetch-dest", "sec-fetch-mode")
# The headers proxies write: the client address (whichever CLIENT_IP_HEADER names), scheme and host.
# The exporter believes them only from trusted proxies.
PROXY_HEADERS = (*CLIENT_IP_HEADERS, "x-forwarded-proto", "x-forwarded-host")
# Enough for any real Referer or Accept; a forged megabyte header is not copied into the span.
MAX_HEADER_CHARS = 4096
# Characters a browser leaves unescaped in a path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;="

# A request header's value by its lower-case name ("sec-fetch-dest"), or None when absent.
HeaderGetter = Callable[[str], object]


def environ_header(environ: Mapping[str, Any]) -> HeaderGetter:
    """Headers of a WSGI environ or a Django ``request.META`` (``HTTP_SEC_FETCH_DEST``)."""
    def get(name: str) -> object:
        return environ.get("HTTP_" + name.upper().replace("-", "_"))

    return get


def record_request(span: Span, environ: Mapping[str, Any], device_id: str | None) -> None:
    """Everything a WSGI or Django request tells the exporter: device, headers, path.

    Written in one ``set_attributes`` call: the SDK takes its lock and checks its limits once per
    call, which made a dozen ``set_attribute`` calls most of the middleware's cost."""
    attributes = request_header_attributes(environ_header(environ), attribute_length_limit(span))
    if device_id:
        attributes[ENDUSER_PSEUDO_ID] = device_id
    recorded = getattr(span, "attributes", None) or {}
    if URL_PATH not in recorded:
        attributes[URL_PATH] = request_path(environ)
        query = environ.get("QUERY_STRING")
        if isinstance(query, str) and query:
            attributes[URL_QUERY] = query[:MAX_HEADER_CHARS]
    span.set_attributes(attributes)


def request_header_attributes(header: HeaderGetter, length_limit: int | None) -> dict[str, Any]:
    """The ``RECORDED_HEADERS`` and ``PROXY_HEADERS`` the request carries, each as a one-value list,
    as captured headers are."""
    attributes: dict[str, Any] = {}
    for name in RECORDED_HEADERS:
        value = _header_text(header(name))
        if value:
            attributes[REQUEST_HEADER_PREFIX + name] = (value[:MAX_HEADER_CHARS],)
    # The right end: proxies append there, and a client's padding on the left must not push them out. Kept
    # shorter than the span's attribute length limit, which would keep the left end, and a value at the
    # limit is not believed (see client_ip).
    proxy_chars = MAX_FORWARDING_CHARS if length_limit is None else min(MAX_FORWARDING_CHARS, length_limit - 1)
    for name in PROXY_HEADERS:
        value = _header_text(header(name))
        kept = right_end(value, proxy_chars) if value else None
        if kept:
            attributes[REQUEST_HEADER_PREFIX + name] = (kept,)
    return attributes


def record_response_content_type(span: Span, content_type: object) -> None:
    """The response's ``Content-Type``, once the application has answered."""
    value = _header_text(content_type)
    if value and span.is_recording():
        span.set_attribute(RESPONSE_CONTENT_TYPE, (value[:MAX_HEADER_CHARS],))


def content_type_of(headers: Iterable[tuple[str | bytes, str | bytes]]) -> str | bytes | None:
    """The ``Content-Type`` of a response's header list: WSGI's text pairs or ASGI's byte pairs."""
    for name, value in headers:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(name, str) and name.lower() == "content-type":
            return value
    return None


def _header_text(value: object) -> str | None:
    if isinstance(value, bytes):
        # ASGI servers hand over raw bytes; HTTP header values are latin-1 text.
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    return value.strip() or None


def request_path(environ: Mapping[str, Any]) -> str:
    """The path as the browser sent it: SCRIPT_NAME + PATH_INFO, percent-encoded again.

    WSGI servers hand over the decoded path as latin-1 text; encoding it back gives the
    original bytes, which are then escaped the way they appear in the address bar.
    """
    raw = f"{environ.get('SCRIPT_NAME') or ''}{environ.get('PATH_INFO') or ''}" or "/"
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        data = raw.encode("utf-8")
    return quote(data, safe=_PATH_SAFE)
