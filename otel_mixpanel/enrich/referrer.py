"""``$referrer``, ``$referring_domain``, ``$search_engine`` and ``mp_keyword`` from the Referer header."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from otel_mixpanel.enrich.first_touch import js_referring_domain
from otel_mixpanel.enrich.url import join_url, plain_url, redact_query, redact_url
from otel_mixpanel.limits import safe_text_properties

# The search engines Mixpanel's web SDK recognises, with its own patterns (mixpanel-js 2.83.0,
# _.info.searchEngine: referrer.search(pattern) === 0), loose as they are: an ad server's
# https://googleads.g.doubleclick.net/ is "google" there too.
_SEARCH_ENGINES = (
    (re.compile(r"https?://(.*)google.([^/?]*)"), "google"),
    (re.compile(r"https?://(.*)bing.com"), "bing"),
    (re.compile(r"https?://(.*)yahoo.com"), "yahoo"),
    (re.compile(r"https?://(.*)duckduckgo.com"), "duckduckgo"),
)
# The search's words, as mixpanel-js 2.83.0 reads them (_.info.searchInfo, _.getQueryParam): the
# first "p" (Yahoo) or "q" (the others) anywhere in the referrer, decoded, then "+" read as a space.
_SEARCH_QUERY = re.compile(r"[?&]q=([^&#]*)")
_YAHOO_QUERY = re.compile(r"[?&]p=([^&#]*)")
# Each pattern above needs its engine's name: without any, none of them can match.
_ENGINE_NAMES: Final = ("google", "bing", "yahoo", "duckduckgo")


def referring_domain(referrer: str) -> str | None:
    plain = plain_url(referrer)
    if plain is not None:
        return plain[1]
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return None
    return host or None


# $referrer is cut to 255 bytes anyway; reading no further than this keeps every cache key small,
# so the cache's memory is bounded whatever a client sends.
MAX_REFERRER_CHARS = 1024


def referrer_properties(referrer: str, sensitive: frozenset[str]) -> dict[str, Any]:
    """Properties for a request's referrer, its URL redacted; callers must not change the returned dict.

    Its values are already within Mixpanel's limits.
    """
    return _referrer_properties(referrer[:MAX_REFERRER_CHARS], sensitive)


# Cached, as most visits come from a few pages.
@lru_cache(maxsize=1024)
def _referrer_properties(referrer: str, sensitive: frozenset[str]) -> dict[str, Any]:
    plain = plain_url(referrer)
    if plain is None:
        return _any_referrer_properties(referrer, sensitive)
    # Most referrers: read once. With a path, the host (no port, no user) is mixpanel-js's domain too.
    scheme, host, path, query = plain
    redacted_referrer = join_url(scheme, host, path, redact_query(query, sensitive))
    # Without a path, what follows the host is read as mixpanel-js reads it, the host when that is nothing.
    properties = {"$referrer": redacted_referrer,
                  "$referring_domain": host if path else js_referring_domain(redacted_referrer) or host}
    properties.update(search_info(redacted_referrer))
    return safe_text_properties(properties)


def _any_referrer_properties(referrer: str, sensitive: frozenset[str]) -> dict[str, Any]:
    redacted_referrer = redact_url(referrer, sensitive)
    if not redacted_referrer:
        return {}
    properties: dict[str, Any] = {"$referrer": redacted_referrer}
    domain = referring_domain(referrer)
    if domain:
        # As mixpanel-js (2.83.0, _.info.referringDomain) writes it, port included, like
        # $initial_referring_domain.
        properties["$referring_domain"] = js_referring_domain(redacted_referrer) or domain
    properties.update(search_info(redacted_referrer))
    return safe_text_properties(properties)


def search_info(referrer: str) -> dict[str, str]:
    """mixpanel-js 2.83.0's ``_.info.searchInfo``: ``$search_engine``, and ``mp_keyword`` when the search has words."""
    if not any(name in referrer for name in _ENGINE_NAMES):
        # Most referrers are the site's own pages: four substring searches (cheaper than one regular
        # expression's search of the alternatives) rule out all four patterns.
        return {}
    return search_by_patterns(referrer)


def search_by_patterns(referrer: str) -> dict[str, str]:
    """``search_info`` without its pre-check: each of mixpanel-js's patterns tried in turn."""
    for pattern, engine in _SEARCH_ENGINES:
        if pattern.match(referrer):
            found = {"$search_engine": engine}
            keyword = (_YAHOO_QUERY if engine == "yahoo" else _SEARCH_QUERY).search(referrer)
            if keyword and keyword.group(1):
                found["mp_keyword"] = unquote(keyword.group(1)).replace("+", " ")
            return found
    return {}
