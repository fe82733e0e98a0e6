"""Which requests are page views: a pure decision over the request's ``HttpFacts`` and the settings.

``events.py`` asks ``is_page_view`` once per request; everything that decides it lives here.
"""

from __future__ import annotations

import fnmatch

from otel_mixpanel.config import Settings
from otel_mixpanel.spans import HttpFacts


def is_page_view(http: HttpFacts | None, settings: Settings) -> bool:
    """A successful GET of a page the settings' path rules admit."""
    if not settings.page_views or http is None or http.method != "GET":
        return False
    if http.status_code is None or not 200 <= http.status_code < 300 or http.path is None:
        return False
    return _admitted_path(http.path, settings)


def _admitted_path(path: str, settings: Settings) -> bool:
    if path.lower().endswith(settings.static_extensions):
        return False
    if settings.page_view_include and not any(fnmatch.fnmatchcase(path, p) for p in settings.page_view_include):
        return False
    return not (settings.page_view_exclude
                and any(fnmatch.fnmatchcase(path, p) for p in settings.page_view_exclude))
