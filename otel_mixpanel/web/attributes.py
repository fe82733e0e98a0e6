"""What the web middleware writes on the request's span for the exporter to read.

Only what the default instrumentation leaves out: the device id, the Referer and the
proxy headers (the client address, X-Forwarded-Proto and -Host; the exporter believes
them only from trusted proxies), and ``url.path`` /
``url.query`` when the instrumentation did not record them (under wsgiref with stable
semantic conventions there is no RAW_URI, so it records neither). Cookie and
Authorization are never recorded.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote

from opentelemetry.trace import Span

from otel_mixpanel.config import CLIENT_IP_HEADERS
from otel_mixpanel.enrich.client_ip import right_end

ENDUSER_PSEUDO_ID = "enduser.pseudo.id"
URL_PATH = "url.path"
URL_QUERY = "url.query"
# Environ key -> attribute, in the semantic conventions' spelling (lower case, dashes kept).
RECORDED_HEADERS = (
    ("HTTP_REFERER", "http.request.header.referer"),
)
# The headers proxies write: the client address (whichever CLIENT_IP_HEADER names), scheme and host.
# The exporter believes them only from trusted proxies.
PROXY_HEADERS = tuple(
    ("HTTP_" + name.upper().replace("-", "_"), "http.request.header." + name)
    for name in (*CLIENT_IP_HEADERS, "x-forwarded-proto", "x-forwarded-host")
)
# Enough for any real Referer; a forged megabyte header is not copied into the span.
MAX_HEADER_CHARS = 4096
# Characters a browser leaves unescaped in a path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;="


def record_request(span: Span, environ: Mapping[str, Any], device_id: str) -> None:
    span.set_attribute(ENDUSER_PSEUDO_ID, device_id)
    for key, attribute in RECORDED_HEADERS:
        value = environ.get(key)
        if isinstance(value, str) and value.strip():
            span.set_attribute(attribute, (value.strip()[:MAX_HEADER_CHARS],))
    for key, attribute in PROXY_HEADERS:
        value = environ.get(key)
        if isinstance(value, str) and value.strip():
            # The right end: proxies append there, and a client's padding on the left must not push them out.
            span.set_attribute(attribute, (right_end(value.strip()),))
    recorded = getattr(span, "attributes", None) or {}
    if URL_PATH not in recorded:
        span.set_attribute(URL_PATH, request_path(environ))
        query = environ.get("QUERY_STRING")
        if isinstance(query, str) and query:
            span.set_attribute(URL_QUERY, query[:MAX_HEADER_CHARS])


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
