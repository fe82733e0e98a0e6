"""The enrichment's shortcuts give exactly what the general code gives, on generated requests.

Each shortcut (plain URLs read without ``urlsplit``, queries split without ``parse_qsl``, the
search-engine pre-check, JSON-safety of the exporter's own text, the first touch's cached campaign,
the peer read without a header reader) is compared with the general path it stands in for, and
the whole ``enrich_request`` with the composition it replaced, key order included.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from hypothesis import HealthCheck, example, given, settings, strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_mixpanel.assembly import TraceAssembler
from otel_mixpanel.config import Settings
from otel_mixpanel.context import RequestContext, RequestFacts, _never_cut, enrich_request, read_request
from otel_mixpanel.enrich import client_ip
from otel_mixpanel.enrich.campaign import query_campaign_properties
from otel_mixpanel.enrich.client_ip import anonymise, proxied_request, untrusted_client
from otel_mixpanel.enrich.first_touch import (
    _STORED_ATTRIBUTES,
    _SEARCH_WORD_PARAMETERS,
    CAMPAIGN_ATTRIBUTES,
    REFERRER_ATTRIBUTE,
    REFERRING_DOMAIN_ATTRIBUTE,
    SEARCH_ATTRIBUTES,
    UTM_ATTRIBUTES,
    _first_touch,
    read_first_touch,
)
from otel_mixpanel.enrich.referrer import (
    _any_referrer_properties,
    _referrer_properties,
    referrer_properties,
    referring_domain,
    search_info,
)
from otel_mixpanel.enrich.url import (
    REDACTED,
    _redact_split_url,
    page_properties,
    plain_url,
    query_pairs,
    redact_query,
    redact_url,
)
from otel_mixpanel.limits import json_safe, safe_properties, safe_text_properties
from otel_mixpanel.span_reads import attribute_length_limit
from otel_mixpanel.spans import request_header, request_header_cut

SENSITIVE = frozenset({"token", "code", "q", "session"})
URL_PIECES = ["http", "https", "HTTPS", "://", "//", ":", "/", "?", "#", "&", "=", "@", "[", "]", "%", "%2F", "+",
              " ", "\t", "\n", "\x00", "\x7f", "a", "Z", "shop.example.com", "WWW.Google.com", "google.", "bing.com",
              "yahoo.com", "duckduckgo.com", "search", "q=shoes", "p=x", "token=s", "utm_source=x", "gclid=1",
              ":8080", ":99999", ":x", "user:pw@", "é", "\u212a", "\ud800", "..", "-", "~", "'", '"', "\\",
              "x" * 300]
url_texts = st.lists(st.sampled_from(URL_PIECES), max_size=14).map("".join)
# Texts shaped as URLs, most of them plain enough for the shortcuts to take.
urls = st.one_of(url_texts, st.builds(lambda scheme, rest: scheme + "://" + rest,
                                      st.sampled_from(["http", "https", "HTTP", "ftp"]), url_texts))


@settings(max_examples=3000, deadline=None)
@given(urls)
# Found by generation: a lone surrogate in a query to redact.
@example("?\ud800&q=shoes")
def test_plain_urls_are_read_as_urlsplit_reads_them(address):
    plain = plain_url(address)
    if plain is not None:
        parts = urlsplit(address)
        assert plain == (parts.scheme, parts.hostname, parts.path, parts.query) and parts.port is None
        assert not parts.fragment and parts.netloc == parts.hostname
    assert redact_url(address, SENSITIVE) == _redact_split_url(address, SENSITIVE)
    try:
        host = urlsplit(address).hostname or None
    except ValueError:
        host = None
    assert referring_domain(address) == host


@settings(max_examples=3000, deadline=None)
@given(url_texts)
def test_queries_are_split_as_parse_qsl_splits_them(query):
    assert query_pairs(query) == (parse_qsl(query, keep_blank_values=True) if query else [])


QUERY_PIECES = ["&", "=", "+", "%", "%26", "%3D", "%3d", "%74oken", "TOKEN", "token", "to", "ken", "code", "q", "x",
                "session", "sessions", "%2B", "%20", "\u212a", "\ud800", "Σ"]


@settings(max_examples=5000, deadline=None)
@given(st.one_of(url_texts, st.lists(st.sampled_from(QUERY_PIECES), max_size=12).map("".join)),
       st.sampled_from([SENSITIVE, frozenset({"token"}), frozenset({"my token"}), frozenset()]))
@example("My+Token=1", frozenset({"my token"}))
@example("a=%26token%3D1", SENSITIVE)
def test_queries_are_redacted_as_parsing_every_pair_would(query, sensitive):
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    if any(name.lower() in sensitive for name, _ in pairs):
        expected = urlencode([(n, REDACTED if n.lower() in sensitive else v) for n, v in pairs], errors="replace")
    else:
        expected = query
    assert redact_query(query, sensitive) == expected


# mixpanel-js 2.83.0's own patterns (_.info.searchEngine, _.info.searchInfo), as regular expressions.
JS_SEARCH_ENGINES = [(re.compile(r"https?://(.*)google.([^/?]*)"), "google"),
                     (re.compile(r"https?://(.*)bing.com"), "bing"),
                     (re.compile(r"https?://(.*)yahoo.com"), "yahoo"),
                     (re.compile(r"https?://(.*)duckduckgo.com"), "duckduckgo")]
JS_SEARCH_WORDS = {"q": re.compile(r"[?&]q=([^&#]*)"), "p": re.compile(r"[?&]p=([^&#]*)")}


def _search_by_patterns(referrer: str) -> dict[str, str]:
    for pattern, engine in JS_SEARCH_ENGINES:
        if pattern.match(referrer):
            found = {"$search_engine": engine}
            words = JS_SEARCH_WORDS["p" if engine == "yahoo" else "q"].search(referrer)
            if words and words.group(1):
                found["mp_keyword"] = unquote(words.group(1)).replace("+", " ")
            return found
    return {}


SEARCH_PIECES = ["https://", "http://", "HTTPS://", "google", "googl", "bing", "yahoo", "duckduckgo", ".", "com", "co",
                 "\n", "\r", "/", "?", "&", "#", "q=", "p=", "?q=", "&q=", "?p=", "&p=", "shoes", "%20", "+", "=", "é"]


@settings(max_examples=5000, deadline=None)
@given(st.one_of(urls, st.lists(st.sampled_from(SEARCH_PIECES), max_size=14).map("".join)))
@example("https://www.bing.com/search?q=red+shoes&form=QBLH")
@example("https://xbing\ncom.example/")
@example("https://a.example/?utm_source=google&q=1#q=2")
@example("https://search.yahoo.com/search?q=no&p=yes")
def test_search_engines_are_told_as_mixpanel_js_patterns_tell_them(referrer):
    assert search_info(referrer) == _search_by_patterns(referrer)


texts = st.text(st.sampled_from(["a", "Z", "é", "\ud800", "\U0001f600", " ", "%"]), max_size=300)


@given(st.dictionaries(st.sampled_from(["$current_url", "utm_source", "current_url_path", "mp_keyword"]), texts))
def test_safe_text_properties_are_safe_properties(properties):
    assert safe_text_properties(dict(properties)) == safe_properties(properties)


# --- The first touch: cached campaign keyed on the raw attribute values -----------------------------------

ODD_VALUES = st.one_of(st.none(), st.sampled_from(["", "google", "x" * 400, "caf\u00e9", "\ud800", "$direct"]),
                       st.booleans(), st.integers(-2, 2), st.just(1.0), st.tuples(st.just("google")),
                       st.builds(lambda text: type("Tagged", (str,), {})(text), st.sampled_from(["google", "x"])))
FIRST_TOUCH_NAMES = [REFERRER_ATTRIBUTE, REFERRING_DOMAIN_ATTRIBUTE, *CAMPAIGN_ATTRIBUTES, *SEARCH_ATTRIBUTES,
                     *(attribute for attribute, _ in UTM_ATTRIBUTES)]
first_touch_attributes = st.dictionaries(st.sampled_from(FIRST_TOUCH_NAMES), ODD_VALUES)


def _reference_first_touch(attributes: Mapping[str, Any], sensitive: frozenset[str]) -> tuple[Any, ...]:
    """What read_first_touch gave before its campaign was cached on raw values: read attribute by attribute."""
    referrer = attributes.get(REFERRER_ATTRIBUTE)
    if type(referrer) is not str or not referrer:
        return {}, {}, {}
    domain = attributes.get(REFERRING_DOMAIN_ATTRIBUTE)
    utm = tuple((key, value) for attribute, key in UTM_ATTRIBUTES
                if type(value := attributes.get(attribute)) is str and value)
    touch = _first_touch.__wrapped__(referrer, domain if type(domain) is str and domain else None, utm, sensitive)
    campaign = {name: value for attribute, name in _STORED_ATTRIBUTES
                if type(value := attributes.get(attribute)) is str and value}
    if "mp_keyword" in campaign and not _SEARCH_WORD_PARAMETERS.isdisjoint(sensitive):
        campaign["mp_keyword"] = REDACTED
    return dict(touch.every_event), dict(touch.profile), safe_properties(campaign)


@settings(max_examples=2000, deadline=None)
@given(first_touch_attributes, st.sampled_from([SENSITIVE, frozenset({"token"})]))
def test_first_touch_reads_as_attribute_by_attribute(attributes, sensitive):
    touch = read_first_touch(attributes, sensitive)
    assert (dict(touch.every_event), dict(touch.profile), dict(touch.campaign)) == \
        _reference_first_touch(attributes, sensitive)


def test_a_str_subclass_equal_to_a_cached_value_does_not_hit_the_cache():
    tagged = type("Tagged", (str,), {})
    plain = {REFERRER_ATTRIBUTE: "$direct", CAMPAIGN_ATTRIBUTES[0]: "google"}
    assert dict(read_first_touch(plain, SENSITIVE).campaign) == {"utm_source": "google"}
    # Only plain str values count, as read attribute by attribute.
    assert dict(read_first_touch({**plain, CAMPAIGN_ATTRIBUTES[0]: tagged("google")}, SENSITIVE).campaign) == {}


def test_first_touch_values_no_cache_can_hold_are_read_without_it():
    attributes = {REFERRER_ATTRIBUTE: "$direct", CAMPAIGN_ATTRIBUTES[0]: ["a", "list"], CAMPAIGN_ATTRIBUTES[1]: "cpc"}
    assert dict(read_first_touch(attributes, SENSITIVE).campaign) == {"utm_medium": "cpc"}


# --- The whole enrichment, against the composition it replaced --------------------------------------------

def _reference_page(scheme, host, path, query, sensitive) -> tuple[dict[str, Any], dict[str, Any]]:
    page = page_properties(scheme, host, path, query, sensitive)
    every_event = query_campaign_properties(query)
    if "$current_url" in page:
        every_event["$current_url"] = page["$current_url"]
    return safe_properties(every_event), safe_properties(page)


def _reference_enrich(facts: RequestFacts, settings: Settings, sensitive: frozenset[str]) -> RequestContext:
    """enrich_request as it was before its shortcuts: every step through the general path."""
    device_id, user_id, latitude, longitude = facts.device_id, facts.user_id, facts.latitude, facts.longitude
    location = {"$latitude": latitude, "$longitude": longitude} if latitude is not None else {}
    http = facts.http
    if http is None:
        return RequestContext(None, None, device_id, user_id, None, latitude, longitude, False, location)
    parsed = facts.user_agent
    properties = dict(parsed.properties)
    limit = attribute_length_limit(facts.server_span)
    cut = _never_cut if limit is None else partial(request_header_cut, facts.server_attributes, limit)
    proxied = proxied_request(http.peer_address, partial(request_header, facts.server_attributes), settings, cut)
    ip = anonymise(proxied.client, settings.ip_mode) if proxied.client else None
    if ip:
        properties["ip"] = ip
    every_event, profile, campaign = {}, {}, {}
    for _, attributes in facts.spans:
        if REFERRER_ATTRIBUTE in attributes:
            every_event, profile, campaign = _reference_first_touch(attributes, sensitive)
            break
    properties.update(campaign)
    if http.referer:
        properties.update(referrer_properties(http.referer, sensitive))
    scheme, host = proxied.scheme or http.scheme, proxied.host or http.host
    page_every_event, page_view = _reference_page(scheme, host, http.path, http.query, sensitive)
    properties.update(page_every_event)
    properties.update(every_event)
    properties.update(location)
    if http.route:
        page_view = {**page_view, "http_route": json_safe(http.route)}
    return RequestContext(http, facts.server_span, device_id, user_id, ip, latitude, longitude, facts.is_bot,
                          properties, page_view, is_automated=parsed.is_automated,
                          first_touch_profile=MappingProxyType(profile))


_memory = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_memory))
_tracer = _provider.get_tracer("test")

ADDRESSES = ["203.0.113.9", "::ffff:10.1.2.3", "10.1.2.3", "2001:db8::1", "[2001:db8::2]:443", "unknown", "",
             " 1.2.3.4 "]
addresses = st.sampled_from(ADDRESSES)
header_value = st.one_of(addresses, st.lists(addresses, min_size=1, max_size=3).map(", ".join),
                         st.sampled_from(["for=203.0.113.7;proto=https;host=a.example", 'for="[2001:db8::7]"', ""]))
USER_AGENTS = ["Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/17.1 Mobile/15E148 Safari/604.1", "curl/8.4.0", "Googlebot/2.1", ""]
request_attributes = st.fixed_dictionaries({
    "http.request.method": st.just("GET"),
    "url.scheme": st.sampled_from(["https", "http", ""]),
    "server.address": st.sampled_from(["shop.example.com", "Shop.Example.com:8443", "[2001:db8::1]:80", ""]),
    "url.path": st.one_of(url_texts.map(lambda text: "/" + text), st.just("")),
}, optional={
    "url.query": url_texts,
    "http.route": st.sampled_from(["/products/{id}", "x" * 300]),
    "user_agent.original": st.sampled_from(USER_AGENTS),
    "client.address": addresses,
    "http.request.header.referer": urls.map(lambda text: (text,)),
    "http.request.header.x-forwarded-for": header_value.map(lambda text: (text,)),
    "http.request.header.x_forwarded_for": header_value,
    "http.request.header.forwarded": header_value.map(lambda text: (text,)),
    "http.request.header.x-forwarded-proto": st.sampled_from([("https",), ("ftp",)]),
    "http.request.header.x-forwarded-host": st.sampled_from([("a.example:8080",), ("bad host",)]),
    "geo.location.lat": st.just(48.85),
    "geo.location.lon": st.just(2.35),
    "enduser.pseudo.id": st.just("6f1c9b8e-2d4a-4c1e-9f3b-7a5d2e8c1b40"),
})
request_settings = st.builds(
    lambda proxies, header, forwarded_host, ip: Settings(token="t", trusted_proxies=proxies, client_ip_header=header,
                                                         forwarded_host=forwarded_host, ip_mode=ip),
    st.sampled_from(["", "1", "10.0.0.0/8"]), st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip"]),
    st.booleans(), st.sampled_from(["full", "truncate", "off"]))


def _facts(attributes: dict[str, Any], first_touch: dict[str, Any], settings: Settings) -> RequestFacts:
    _memory.clear()
    with _tracer.start_as_current_span("GET /", kind=trace.SpanKind.SERVER, attributes=attributes):
        with _tracer.start_as_current_span("handler", attributes=first_touch):
            pass
    [local] = TraceAssembler(60).add(_memory.get_finished_spans())
    return read_request(local, settings)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_attributes, first_touch_attributes, request_settings, st.sampled_from([SENSITIVE, frozenset()]))
def test_enrich_request_is_the_general_composition(attributes, first_touch, configured, sensitive):
    facts = _facts(attributes, {name: value for name, value in first_touch.items() if value is not None}, configured)
    fast, general = enrich_request(facts, configured, sensitive), _reference_enrich(facts, configured, sensitive)
    assert list(fast.properties.items()) == list(general.properties.items())
    assert list(fast.page.items()) == list(general.page.items())
    assert dict(fast.first_touch_profile) == dict(general.first_touch_profile)
    assert fast._replace(properties={}, page={}, first_touch_profile={}) == \
        general._replace(properties={}, page={}, first_touch_profile={})


def test_the_peer_read_without_a_header_reader_warns_as_the_general_path(monkeypatch, caplog):
    untrusted = Settings(token="t")
    for attributes in ({}, {"http.request.header.x_forwarded_for": ""}, {"http.request.header.forwarded": ("",)},
                       {"http.request.header.x-forwarded-for": (0,)}):
        monkeypatch.setattr(client_ip, "_warned_untrusted_forwarding", False)
        general = proxied_request("::ffff:1.2.3.4", partial(request_header, attributes), untrusted)
        warned = client_ip._warned_untrusted_forwarding
        monkeypatch.setattr(client_ip, "_warned_untrusted_forwarding", False)
        with caplog.at_level(logging.WARNING, "otel_mixpanel"):
            assert untrusted_client("::ffff:1.2.3.4", attributes) == general.client == "1.2.3.4"
        assert client_ip._warned_untrusted_forwarding == warned == bool(attributes.get(
            "http.request.header.x-forwarded-for"))


@settings(max_examples=3000, deadline=None)
@given(urls, st.sampled_from([SENSITIVE, frozenset()]))
# Found by generation: no path, and what follows the host ends in "@" (mixpanel-js's domain is then empty).
@example("http://http?user:pw@", SENSITIVE)
@example("?\ud800&q=shoes", frozenset({"q"}))
def test_plain_referrers_are_read_as_any_referrer(referrer, sensitive):
    assert _referrer_properties.__wrapped__(referrer, sensitive) == _any_referrer_properties(referrer, sensitive)
