"""Step 2b: the request context shared by every event of one request.

Built once per request from its server span (what the client sent) and from every
span of the request (who the user is), then enriched: user agent, client IP,
referrer, campaign, page URL, location.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from otel_mixpanel.assembly import LocalTrace
from otel_mixpanel.config import Settings
from otel_mixpanel.enrich.campaign import campaign_properties
from otel_mixpanel.enrich.client_ip import anonymise, client_ip
from otel_mixpanel.enrich.referrer import referrer_properties
from otel_mixpanel.enrich.url import page_properties, query_pairs
from otel_mixpanel.enrich.user_agent import parse_user_agent
from otel_mixpanel.limits import safe_properties
from otel_mixpanel.spans import HttpFacts, read_http, read_identity


@dataclass(frozen=True)
class RequestContext:
    http: HttpFacts | None = None
    server_span: ReadableSpan | None = None
    device_id: str | None = None
    user_id: str | None = None
    ip: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    is_bot: bool = False
    # On every event of the request.
    properties: dict[str, Any] = field(default_factory=dict)
    # On the page view only: the web SDK's current_url_* page properties.
    page: dict[str, Any] = field(default_factory=dict)


def _root_first(trace: LocalTrace) -> list[tuple[ReadableSpan, dict[str, Any]]]:
    """The trace's spans, its root first, each with its attributes as a plain dict: the SDK's
    read-only attribute view costs several times more per lookup."""
    spans = trace.spans if trace.root is None else [trace.root] + [s for s in trace.spans if s is not trace.root]
    return [(span, dict(span.attributes or {})) for span in spans]


def _server_request(spans: list[tuple[ReadableSpan, dict[str, Any]]]) -> tuple[ReadableSpan | None, HttpFacts | None]:
    for span, attributes in spans:
        facts = read_http(span.name, span.kind, attributes)
        if facts is not None:
            return span, facts
    return None, None


def _identity(spans: list[tuple[ReadableSpan, dict[str, Any]]]) -> tuple[str | None, str | None, float | None, float | None]:
    """The first device id, user id and location that any span of the request carries, root first."""
    device = user = latitude = longitude = None
    for _, attributes in spans:
        facts = read_identity(attributes)
        device = device or facts.device_id
        user = user or facts.user_id
        if latitude is None and facts.latitude is not None and facts.longitude is not None:
            latitude, longitude = facts.latitude, facts.longitude
    return device, user, latitude, longitude


def build_context(trace: LocalTrace, settings: Settings, sensitive: frozenset[str]) -> RequestContext:
    spans = _root_first(trace)
    device_id, user_id, latitude, longitude = _identity(spans)
    location = {"$latitude": latitude, "$longitude": longitude} if latitude is not None else {}
    server_span, http = _server_request(spans)
    if http is None:
        return RequestContext(None, None, device_id, user_id, None, latitude, longitude, False, location)

    properties: dict[str, Any] = {}
    is_bot = http.synthetic
    if http.user_agent:
        parsed = parse_user_agent(http.user_agent)
        properties.update(parsed.properties)
        is_bot = is_bot or parsed.is_spider
    ip = client_ip(http.peer_address, http.forwarded_for, http.forwarded, settings.trusted_proxies)
    ip = anonymise(ip, settings.ip_mode) if ip else None
    if ip:
        properties["ip"] = ip
    if http.referer:
        properties.update(referrer_properties(http.referer, sensitive))
    properties.update(campaign_properties(query_pairs(http.query)))
    page = page_properties(http.scheme, http.host, http.path, http.query, sensitive)
    if "$current_url" in page:
        properties["$current_url"] = page["$current_url"]
    if http.route:
        page["http_route"] = http.route
    properties.update(location)
    return RequestContext(http, server_span, device_id, user_id, ip, latitude, longitude, is_bot,
                          safe_properties(properties), safe_properties(page))
