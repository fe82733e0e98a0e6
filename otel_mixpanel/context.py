"""Step 2b: the request context shared by every event of one request.

Built once per request from its server span (what the client sent) and from every
span of the request (who the user is), then enriched: user agent, client IP,
referrer, campaign, page URL, location.
"""

from __future__ import annotations

from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan

from otel_mixpanel.assembly import LocalTrace
from otel_mixpanel.config import Settings
from otel_mixpanel.enrich.campaign import query_campaign_properties
from otel_mixpanel.enrich.client_ip import ProxiedRequest, anonymise, proxied_request, untrusted_client
from otel_mixpanel.enrich.first_touch import NO_FIRST_TOUCH, REFERRER_ATTRIBUTE, FirstTouchProperties, read_first_touch
from otel_mixpanel.enrich.referrer import referrer_properties
from otel_mixpanel.enrich.url import page_properties
from otel_mixpanel.enrich.user_agent import NO_USER_AGENT, ParsedUserAgent, parse_user_agent
from otel_mixpanel.limits import json_safe, safe_text_properties
from otel_mixpanel.span_reads import ended_span_attributes, span_kind, span_name
from otel_mixpanel.span_reads import attribute_length_limit
from otel_mixpanel.spans import (
    HttpFacts,
    new_named_tuple,
    read_http,
    read_identity,
    request_header,
    request_header_cut,
)


class RequestContext(NamedTuple):
    """What every event of one request shares. Property dicts may be shared with caches: never change them."""

    http: HttpFacts | None = None
    server_span: ReadableSpan | None = None
    device_id: str | None = None
    user_id: str | None = None
    ip: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    is_bot: bool = False
    # On every event of the request, already JSON-safe.
    properties: Mapping[str, Any] = MappingProxyType({})
    # On the page view only: the web SDK's current_url_* page properties, already JSON-safe.
    page: Mapping[str, Any] = MappingProxyType({})
    # No person's browser sent the request (health checker, script, HTTP library, no User-Agent):
    # see otel_mixpanel.enrich.user_agent. False when there is no HTTP request.
    is_automated: bool = False
    # The browser's first referrer and UTM parameters, for the profile's $set_once once the user is known.
    first_touch_profile: Mapping[str, Any] = MappingProxyType({})


def _root_first(trace: LocalTrace) -> list[tuple[ReadableSpan, Mapping[str, Any]]]:
    spans = trace.spans
    if len(spans) == 1:
        # Most requests: one server span, and no comprehension to set up for it.
        return [(spans[0], ended_span_attributes(spans[0]))]
    if trace.root is not None:
        spans = [trace.root] + [s for s in spans if s is not trace.root]
    return [(span, ended_span_attributes(span)) for span in spans]


def _server_request(spans: list[tuple[ReadableSpan, Mapping[str, Any]]]
                    ) -> tuple[ReadableSpan | None, Mapping[str, Any], HttpFacts | None]:
    for span, attributes in spans:
        facts = read_http(span_name(span), span_kind(span), attributes)
        if facts is not None:
            return span, attributes, facts
    return None, {}, None


def _identity(spans: list[tuple[ReadableSpan, Mapping[str, Any]]]
              ) -> tuple[str | None, str | None, float | None, float | None]:
    """The first device id, user id and location that any span of the request carries, root first."""
    device = user = latitude = longitude = None
    for _, attributes in spans:
        facts = read_identity(attributes)
        device = device or facts.device_id
        user = user or facts.user_id
        if latitude is None and facts.latitude is not None and facts.longitude is not None:
            latitude, longitude = facts.latitude, facts.longitude
    return device, user, latitude, longitude


def _first_touch(spans: list[tuple[ReadableSpan, Mapping[str, Any]]],
                 sensitive: frozenset[str]) -> FirstTouchProperties:
    """The first touch the web middleware recorded on a span of the request, root first."""
    for _, attributes in spans:
        if REFERRER_ATTRIBUTE in attributes:
            return read_first_touch(attributes, sensitive)
    return NO_FIRST_TOUCH


class _Page(NamedTuple):
    every_event: Mapping[str, Any]
    page_view: Mapping[str, Any]


# Beyond this length a URL (with its route) is converted without the cache, so hostile URLs cannot pin much memory.
_CACHED_URL_LENGTH = 512


# A site's pages, and the campaign links to them, repeat from visit to visit; each page has its route.
@lru_cache(maxsize=2048)
def _cached_page(scheme: str | None, host: str | None, path: str | None, query: str | None, route: str | None,
                 sensitive: frozenset[str]) -> _Page:
    return _page(scheme, host, path, query, route, sensitive)


def _page(scheme: str | None, host: str | None, path: str | None, query: str | None, route: str | None,
          sensitive: frozenset[str]) -> _Page:
    """The campaign and ``$current_url`` (on every event) and the page view's own properties, its
    ``http_route`` (the server's route template) last."""
    page = page_properties(scheme, host, path, query, sensitive)
    every_event = query_campaign_properties(query)
    if "$current_url" in page:
        every_event["$current_url"] = page["$current_url"]
    page_view: dict[str, Any] = safe_text_properties(page)
    if route:
        page_view["http_route"] = json_safe(route)
    return _Page(safe_text_properties(every_event), page_view)


def _never_cut(name: str) -> bool:
    return False


class RequestFacts(NamedTuple):
    """What a request's spans say before enrichment: enough to tell whether it gives any message."""

    spans: list[tuple[ReadableSpan, Mapping[str, Any]]]
    server_span: ReadableSpan | None
    server_attributes: Mapping[str, Any]
    http: HttpFacts | None
    device_id: str | None
    user_id: str | None
    latitude: float | None
    longitude: float | None
    # NO_USER_AGENT when there is no HTTP request.
    user_agent: ParsedUserAgent
    # A crawler or a synthetic request; never true without an HTTP request. Read for every request
    # (may_produce, enrich_request), so decided once here.
    is_bot: bool


def read_request(trace: LocalTrace, settings: Settings) -> RequestFacts:
    """Step 2b's first half: the request, its identity and its user agent, read from the spans."""
    spans = _root_first(trace)
    device_id, user_id, latitude, longitude = _identity(spans)
    server_span, server_attributes, http = _server_request(spans)
    if http is None:
        parsed, is_bot = NO_USER_AGENT, False
    else:
        parsed = parse_user_agent(http.user_agent, settings.browser_names)
        is_bot = http.synthetic or parsed.is_bot
    return new_named_tuple(RequestFacts, (spans, server_span, server_attributes, http, device_id, user_id, latitude,
                                          longitude, parsed, is_bot))


def build_context(trace: LocalTrace, settings: Settings, sensitive: frozenset[str]) -> RequestContext:
    return enrich_request(read_request(trace, settings), settings, sensitive)


def enrich_request(facts: RequestFacts, settings: Settings, sensitive: frozenset[str]) -> RequestContext:
    """Step 2b's second half: the properties every event of the request shares."""
    http = facts.http
    latitude = facts.latitude
    if http is None:
        location = {"$latitude": latitude, "$longitude": facts.longitude} if latitude is not None else {}
        return RequestContext(None, None, facts.device_id, facts.user_id, None, latitude, facts.longitude, False,
                              location)
    if settings.trusted_proxies.enabled:
        proxied = _proxied_request(facts, http, settings)
        # What the client used, as a trusted proxy tells it, else what reached the application.
        client, scheme, host = proxied.client, proxied.scheme or http.scheme, proxied.host or http.host
    else:
        client, scheme, host = untrusted_client(http.peer_address, facts.server_attributes), http.scheme, http.host
    ip = anonymise(client, settings.ip_mode) if client else None
    first_touch = _first_touch(facts.spans, sensitive)
    page = _request_page(scheme, host, http.path, http.query, http.route, sensitive)
    # Later ones win: the user agent's, the client's address, the browser's stored campaign and search (as
    # mixpanel-js's super properties), the request's own Referer and URL parameters, its first touch.
    # Cached properties come as read-only proxies; copy() hands back the plain dict behind one at C speed,
    # and the others are plain dicts, which update() merges at C speed too.
    user_agent = facts.user_agent
    properties: dict[str, Any] = user_agent.properties.copy()  # type: ignore[attr-defined]
    if ip:
        properties["ip"] = ip
    properties.update(first_touch.campaign)
    if http.referer:
        properties.update(referrer_properties(http.referer, sensitive))
    properties.update(page.every_event)
    properties.update(first_touch.every_event)
    if latitude is not None:
        properties["$latitude"] = latitude
        properties["$longitude"] = facts.longitude
    return new_named_tuple(RequestContext, (http, facts.server_span, facts.device_id, facts.user_id, ip, latitude,
                                            facts.longitude, facts.is_bot, properties, page.page_view,
                                            user_agent.is_automated, first_touch.profile))


def _proxied_request(facts: RequestFacts, http: HttpFacts, settings: Settings) -> ProxiedRequest:
    limit = attribute_length_limit(facts.server_span)
    cut = _never_cut if limit is None else partial(request_header_cut, facts.server_attributes, limit)
    return proxied_request(http.peer_address, partial(request_header, facts.server_attributes), settings, cut)


def _request_page(scheme: str | None, host: str | None, path: str | None, query: str | None, route: str | None,
                  sensitive: frozenset[str]) -> _Page:
    short = len(host or "") + len(path or "") + len(query or "") + len(route or "") <= _CACHED_URL_LENGTH
    return (_cached_page if short else _page)(scheme, host, path, query, route, sensitive)
