"""``$referrer``, ``$referring_domain`` and ``$search_engine`` from the Referer header."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

# The search engines Mixpanel's web SDK recognises, matched on the referrer's host.
_SEARCH_ENGINES = (
    (re.compile(r"(^|\.)google\.([a-z]{2,3}|co\.[a-z]{2}|com\.[a-z]{2})$"), "google"),
    (re.compile(r"(^|\.)bing\.com$"), "bing"),
    (re.compile(r"(^|\.)yahoo\.com$"), "yahoo"),
    (re.compile(r"(^|\.)duckduckgo\.com$"), "duckduckgo"),
)


def referring_domain(referrer: str) -> str | None:
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return None
    return host or None


def referrer_properties(referrer: str | None, redacted_referrer: str | None) -> dict[str, Any]:
    """Properties for a request's referrer; ``redacted_referrer`` is the URL as it may be sent."""
    if not referrer or not redacted_referrer:
        return {}
    properties: dict[str, Any] = {"$referrer": redacted_referrer}
    domain = referring_domain(referrer)
    if domain:
        properties["$referring_domain"] = domain
        for pattern, engine in _SEARCH_ENGINES:
            if pattern.search(domain):
                properties["$search_engine"] = engine
                break
    return properties
