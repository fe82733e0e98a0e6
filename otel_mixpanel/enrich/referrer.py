"""``$referrer``, ``$referring_domain``, ``$search_engine`` and ``mp_keyword`` from the Referer header."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from otel_mixpanel.enrich.first_touch import js_referring_domain
from otel_mixpanel.enrich.url import join_url, plain_url, redact_query, redact_url
from otel_mixpanel.limits import safe_text_properties

# The search engines Mixpanel's web SDK recognises, by its own patterns (mixpanel-js 2.83.0,
# _.info.searchEngine: referrer.search(pattern) === 0), loose as they are: an ad server's
# https://googleads.g.doubleclick.net/ is "google" there too.
#   /^https?:\/\/(.*)google.([^/?]*)/   /^https?:\/\/(.*)bing.com/   /^https?:\/\/(.*)yahoo.com/
#   /^https?:\/\/(.*)duckduckgo.com/
# Each says: the scheme, then on the same line the engine's name, one more character, and (but google's) "com".
# search_info checks that by string searches, where a regular expression's (.*) would backtrack through the
# whole line; tests/test_enrich_shortcuts.py compares it with the patterns themselves.
_ENGINES: Final = (("google", ""), ("bing", "com"), ("yahoo", "com"), ("duckduckgo", "com"))


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
    """mixpanel-js 2.83.0's ``_.info.searchInfo``: ``$search_engine``, and ``mp_keyword`` when the search has words:
    the first "p" (Yahoo) or "q" (the others) parameter anywhere in the referrer (``_.getQueryParam``), decoded,
    then "+" read as a space."""
    if referrer.startswith("https://"):
        start = 8
    elif referrer.startswith("http://"):
        start = 7
    else:
        return {}
    # The patterns' "." and (.*) stop at a line feed (a browser's Referer has none).
    line_end = referrer.find("\n", start)
    if line_end < 0:
        line_end = len(referrer)
    for engine, suffix in _ENGINES:
        if _names_engine(referrer, start, line_end, engine, suffix):
            found = {"$search_engine": engine}
            words = _parameter(referrer, "p=" if engine == "yahoo" else "q=")
            if words:
                found["mp_keyword"] = unquote(words).replace("+", " ")
            return found
    return {}


def _names_engine(referrer: str, start: int, line_end: int, engine: str, suffix: str) -> bool:
    """Whether ``engine``, one more character and ``suffix`` follow one another within ``referrer[start:line_end]``."""
    at = referrer.find(engine, start, line_end)
    while at >= 0:
        after = at + len(engine) + 1
        if after + len(suffix) <= line_end and referrer.startswith(suffix, after):
            return True
        at = referrer.find(engine, at + 1, line_end)
    return False


def _parameter(referrer: str, name: str) -> str:
    """The value of the first parameter ``name`` (with its "=") after a "?" or "&": up to the next "&" or "#"."""
    at = -1
    for lead in ("?", "&"):
        found = referrer.find(lead + name)
        if found >= 0 and (at < 0 or found < at):
            at = found
    if at < 0:
        return ""
    value_start = at + 1 + len(name)
    value_end = len(referrer)
    for stop in ("&", "#"):
        found = referrer.find(stop, value_start)
        if 0 <= found < value_end:
            value_end = found
    return referrer[value_start:value_end]
