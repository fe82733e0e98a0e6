"""The page's URL properties, with sensitive query parameters redacted."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "redacted"
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
# A path made only of characters quote() keeps as they are (its always-safe ones and _PATH_SAFE).
_QUOTED_PATH = re.compile(r"[A-Za-z0-9_.\-~/%:@!$&'()*+,;=]*")


def query_pairs(query: str | None) -> list[tuple[str, str]]:
    if not query:
        return []
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    # Nothing to decode: parse_qsl's split, at a fraction of its cost (a campaign link's query is
    # parsed for every click, its click id unique to each).
    return [(name, value) for name, _, value in (pair.partition("=") for pair in query.split("&") if pair)]


def redact_query(query: str | None, sensitive: frozenset[str]) -> str:
    """The query with every sensitive parameter's value replaced, order and the rest kept."""
    if not query:
        return ""
    if not sensitive or not _may_name_any(query, sensitive):
        # No parameter is named so: nothing to redact, and no parsing to pay for.
        return query
    pairs = query_pairs(query)
    if not any(name.lower() in sensitive for name, _ in pairs):
        return query
    # errors="replace": a lone surrogate (no UTF-8 for it) is written as "?" (escaped, %3F), as text read is.
    return urlencode([(name, REDACTED if name.lower() in sensitive else value) for name, value in pairs],
                     errors="replace")


def _may_name_any(query: str, sensitive: frozenset[str]) -> bool:
    """False only when no parameter of ``query`` is named one of ``sensitive`` (lower-case, without "&" or "=").

    Each name is compared as parsing reads it ("%74oken" is "token", "+" a space): decoding the whole text
    first leaves every name at the start of its "&"-separated piece, followed by "=" or nothing; a decoded
    "&" or "=" inside a value can only add pieces, never hide a name. A query is checked for every page and
    referrer that is not cached: one pass of splitting, where a regular expression of the names took several
    times as long on long queries (click ids).
    """
    text = unquote(query.replace("+", " ")) if "%" in query or "+" in query else query
    for piece in text.lower().split("&"):
        if piece.partition("=")[0] in sensitive:
            return True
    return False


def join_url(scheme: str, netloc: str, path: str, query: str) -> str:
    """``urlunsplit((scheme, netloc, path, query, ""))``, without its cost in the usual shape."""
    if scheme and netloc and (not path or path[0] == "/"):
        return f"{scheme}://{netloc}{path}?{query}" if query else f"{scheme}://{netloc}{path}"
    return urlunsplit((scheme, netloc, path, query, ""))


# A URL whose parts ``urlsplit`` reads without any of its special cases: scheme http(s), a lower-case
# host name without port or user, then printable ASCII with no fragment. Most referrers look so.
_PLAIN_URL = re.compile(r"(https?)://([a-z0-9.-]+)(/[!\"$->@-~]*)?(?:\?([!\"$-~]*))?")


def plain_url(address: str) -> tuple[str, str, str, str] | None:
    """``(scheme, host, path, query)`` of a URL of the plain shape, as ``urlsplit`` and its
    ``hostname`` read them; None for any other URL."""
    match = _PLAIN_URL.fullmatch(address)
    if match is None:
        return None
    scheme, host, path, query = match.groups("")
    return scheme, host, path, query


def redact_url(address: str, sensitive: frozenset[str]) -> str | None:
    """A whole URL with sensitive query parameters (and any user:password) removed; None if unparsable."""
    plain = plain_url(address)
    if plain is not None:
        scheme, host, path, query = plain
        return join_url(scheme, host, path, redact_query(query, sensitive))
    return _redact_split_url(address, sensitive)


def _redact_split_url(address: str, sensitive: frozenset[str]) -> str | None:
    """``redact_url`` for any URL, as ``urlsplit`` reads it."""
    try:
        parts = urlsplit(address)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return join_url(parts.scheme, netloc, parts.path, redact_query(parts.query, sensitive))


def split_host(host: str | None) -> tuple[str | None, str | None]:
    """``example.com:8080`` -> (``example.com``, ``8080``); brackets of IPv6 literals kept off the name."""
    if not host:
        return None, None
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name.lower() or None, rest[1:] if rest.startswith(":") and rest[1:].isdigit() else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name.lower() or None, port
    return host.lower(), None


def page_properties(scheme: str | None, host: str | None, path: str | None, query: str | None,
                    sensitive: frozenset[str]) -> dict[str, Any]:
    """``$current_url`` and the web SDK's ``current_url_*`` / ``current_domain`` page properties."""
    properties: dict[str, Any] = {}
    scheme = scheme or "http"
    domain, port = split_host(host)
    search = redact_query(query, sensitive)
    if path is not None:
        safe_path = path if _QUOTED_PATH.fullmatch(path) else quote(path, safe=_PATH_SAFE, errors="replace")
        if domain:
            netloc = f"[{domain}]" if ":" in domain else domain
            if port and port != _DEFAULT_PORTS.get(scheme):
                netloc += f":{port}"
            properties["$current_url"] = join_url(scheme, netloc, safe_path, search)
        properties["current_url_path"] = safe_path
    if search:
        properties["current_url_search"] = "?" + search
    properties["current_url_protocol"] = scheme + ":"
    if domain:
        properties["current_domain"] = domain
    return properties
