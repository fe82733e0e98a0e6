"""Which requests are page views: a pure decision over the request's ``HttpFacts`` and the settings.

Mixpanel's web SDK records ``$mp_web_page_view`` when it starts in a person's browser, that
is, once per HTML document a browser loads (mixpanel-js 2.83.0, ``initPageviewTracking`` in
src/autocapture/index.js). The server's equivalent is a successful GET that a browser made
to display a document, answered with HTML. The request says which it is: browsers send
``Sec-Fetch-Dest: document`` (and ``Sec-Fetch-Mode: navigate``) for a navigation and
``empty`` / ``cors`` for ``fetch()`` and XHR; older browsers, which send no ``Sec-Fetch-*``,
ask for ``text/html`` first in ``Accept``. Health checkers, scripts and HTTP libraries are
never page views, whatever they ask for. ``events.py`` asks ``is_page_view`` once per request.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache

from otel_mixpanel.config import ENV_PREFIX, Settings
from otel_mixpanel.spans import HttpFacts

ANY_GET = "any-get"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MAX_ACCEPT_CHARS = 1024
UNRECORDED_HEADERS_ADVICE = (
    "Page views: a browser's GET reached the exporter with none of Accept, Sec-Fetch-Dest or "
    "Sec-Fetch-Mode on its server span, so it cannot be told from an API call and no page view is sent. "
    "Add otel_mixpanel.web's middleware, which records them, or capture them with "
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=accept,sec-fetch-dest,sec-fetch-mode; "
    f"{ENV_PREFIX}PAGE_VIEW_DETECTION=any-get counts every successful GET instead."
)


def is_page_view(http: HttpFacts | None, is_automated: bool, settings: Settings) -> bool:
    """A successful GET of a page the path rules admit, by a person's browser loading a document.

    ``is_automated`` is the User-Agent's verdict (``ParsedUserAgent.is_automated``): a health
    checker, script or HTTP library, or no User-Agent at all.
    """
    if not settings.page_views or http is None or is_automated or http.method != "GET":
        return False
    if http.status_code is None or http.path is None or not _admitted_path(http.path, settings):
        return False
    if settings.page_view_detection == ANY_GET:
        return 200 <= http.status_code < 300
    # 304: the browser shows the copy it has cached, and the page's scripts run as on any load.
    return (200 <= http.status_code < 300 or http.status_code == 304) and is_document_load(http)


def headers_unrecorded(http: HttpFacts | None, is_automated: bool, settings: Settings) -> bool:
    """A person's GET whose span carries none of the headers the decision reads.

    Every browser sends ``Accept`` with each request, so its absence means that nothing
    recorded it (no web middleware, no header capture): the set-up, not the request, is at fault.
    """
    # Asked for every request: the header checks first, as nearly every browser request records Accept.
    return (http is not None and http.accept is None and http.fetch_dest is None and http.fetch_mode is None
            and settings.page_views and settings.page_view_detection != ANY_GET
            and not is_automated and http.method == "GET")


def is_document_load(http: HttpFacts) -> bool:
    """The request is a browser's document load, and the response (where known) is HTML.

    ``Sec-Fetch-Dest`` is the browser's own statement and wins where sent; without it,
    ``Sec-Fetch-Mode``; without either, the ``Accept`` header. A request that says none of
    these (``curl``, most libraries, or a span on which nothing recorded them) is no document load.
    """
    content_type = http.content_type
    # Browsers and frameworks spell these as compared here; other spellings take the general path.
    if content_type is not None and content_type not in HTML_TYPES and media_type(content_type) not in HTML_TYPES:
        return False
    if http.fetch_dest is not None:
        return http.fetch_dest == "document" or http.fetch_dest.lower() == "document"
    if http.fetch_mode is not None:
        return http.fetch_mode == "navigate" or http.fetch_mode.lower() == "navigate"
    return http.accept is not None and prefers_html(http.accept)


def media_type(content_type: str) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``."""
    return content_type.partition(";")[0].strip().lower()


def prefers_html(accept: str) -> bool:
    """HTML is named in ``Accept`` and nothing is preferred to it.

    A browser navigating asks for ``text/html,application/xhtml+xml,...,*/*;q=0.8``;
    ``fetch()`` asks for ``*/*`` unless told otherwise, API clients for ``application/json``.
    Ties count for HTML: Firefox lists ``image/avif`` beside ``text/html`` at the same weight.
    """
    # Browsers send a handful of distinct Accept values, all short: cached, and cut so that a
    # hostile header can neither cost a long parse nor pin its size in the cache.
    return _prefers_html(accept[:MAX_ACCEPT_CHARS])


@lru_cache(maxsize=256)
def _prefers_html(accept: str) -> bool:
    html_weight = 0.0
    best_other = 0.0
    for media_range in accept.split(","):
        kind, _, parameters = media_range.partition(";")
        if not kind.strip():
            # HTTP lists may hold empty elements; they say nothing.
            continue
        weight = _quality(parameters)
        if media_type(kind) in HTML_TYPES:
            html_weight = max(html_weight, weight)
        else:
            best_other = max(best_other, weight)
    return html_weight > 0 and html_weight >= best_other


def _quality(parameters: str) -> float:
    """The ``q`` parameter of one media range: 1 when absent, 0 when malformed (RFC 9110 12.4.2)."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return 0.0
            return weight if 0.0 <= weight <= 1.0 else 0.0
    return 1.0


def _admitted_path(path: str, settings: Settings) -> bool:
    if _is_static(path, settings.static_extensions):
        return False
    if settings.page_view_include and not any(fnmatch.fnmatchcase(path, p) for p in settings.page_view_include):
        return False
    return not (settings.page_view_exclude
                and any(fnmatch.fnmatchcase(path, p) for p in settings.page_view_exclude))


# The last extensions asked about, and whether each of them has a dot: settings keep one tuple.
_last_extensions: tuple[tuple[str, ...], bool] = ((), True)


def _is_static(path: str, extensions: tuple[str, ...]) -> bool:
    """The path ends in one of the extensions, in any letter case.

    Most paths have no dot at all (``/products/1234``), and so end in no extension that has one,
    as every extension read from the settings does: those are told without a lower-cased copy and
    a comparison with each extension.
    """
    global _last_extensions
    known, dotted = _last_extensions
    if known is not extensions:
        dotted = all("." in extension for extension in extensions)
        _last_extensions = (extensions, dotted)
    if dotted and "." not in path:
        return False
    return path.lower().endswith(extensions)
