"""The event builder's shortcuts give what the general path gives, on generated input.

``$insert_id`` packs the ids with ``struct`` rather than ``int.to_bytes``; an event's ``ip`` that
is the request's own client address (already normalised under the privacy setting) is not
checked again. Both are compared here with the general construction they replace.
"""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_mixpanel
from otel_mixpanel.assembly import TraceAssembler
from otel_mixpanel.config import Settings
from otel_mixpanel.context import build_context
from otel_mixpanel.enrich.client_ip import geolocation_ip
from otel_mixpanel.events import EVENTS, EventBuilder, insert_id

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
PAGE_REQUEST = {"http.request.method": "GET", "url.scheme": "https", "server.address": "shop.example.com",
                "url.path": "/shoes", "http.response.status_code": 200, "user_agent.original": CHROME,
                "http.request.header.sec-fetch-dest": ("document",),
                "http.request.header.sec-fetch-mode": ("navigate",),
                "http.request.header.accept": ("text/html",),
                "enduser.pseudo.id": "6f1c9b8e-2d4a-4c1e-9f3b-7a5d2e8c1b40"}


def _general_insert_id(trace_id: int, span_id: int, slot: str) -> str:
    key = trace_id.to_bytes(16, "big") + span_id.to_bytes(8, "big") + slot.encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()


@given(trace_id=st.integers(0, 2**128 - 1), span_id=st.integers(0, 2**64 - 1),
       slot=st.one_of(st.sampled_from(["page", "0", "17", "identify3"]),
                      st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)))
def test_insert_id_is_the_blake2b_of_the_ids_bytes(trace_id, span_id, slot):
    assert insert_id(trace_id, span_id, slot) == _general_insert_id(trace_id, span_id, slot)


@pytest.mark.parametrize(("trace_id", "span_id"), [(-1, 1), (2**128, 1), (1, -1), (1, 2**64), (1.0, 1)])
def test_ids_that_do_not_fit_are_refused_as_before(trace_id, span_id):
    with pytest.raises(Exception):
        _general_insert_id(trace_id, span_id, "page")
    with pytest.raises(Exception):
        insert_id(trace_id, span_id, "page")


def _request(attributes, handler=lambda: None):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("test").start_as_current_span("GET /shoes", kind=trace.SpanKind.SERVER,
                                                            attributes=attributes):
        handler()
    [local] = TraceAssembler(60).add(memory.get_finished_spans())
    return local


def _address_texts():
    """Addresses as a peer or a proxy header may write them: plain, expanded, mapped, bracketed, with a port."""
    v4 = st.ip_addresses(v=4)
    v6 = st.ip_addresses(v=6)
    return st.one_of(
        v4.map(str), v6.map(str), v6.map(lambda a: a.exploded), v6.map(lambda a: a.exploded.upper()),
        v4.map(lambda a: f"::ffff:{a}"), v4.map(lambda a: f"{a}:8080"), v6.map(lambda a: f"[{a}]:443"),
        v4.map(lambda a: f"::{a}"), st.sampled_from(["", "unknown", "_hidden", "0", "::", "fe80::1%eth0"]),
        st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(peer=_address_texts(), forwarded=_address_texts(), mode=st.sampled_from(["full", "truncate", "off"]),
       trusted=st.sampled_from([None, "1", "0.0.0.0/0, ::/0"]), attribute_ip=st.none() | _address_texts())
def test_an_events_ip_is_what_the_general_check_makes_of_it(peer, forwarded, mode, trusted, attribute_ip):
    configured = Settings.load({"token": "t", "ip_mode": mode, "trusted_proxies": trusted})
    attributes = {**PAGE_REQUEST, "client.address": peer, "http.request.header.x-forwarded-for": (forwarded,)}
    business = {} if attribute_ip is None else {"ip": attribute_ip}
    local = _request(attributes, lambda: otel_mixpanel.track("Bought", business))
    context = build_context(local, configured, frozenset())
    page_view, bought = [m.body["properties"] for m in EventBuilder(configured).messages(local, context)
                         if m.endpoint == EVENTS]
    assert page_view["ip"] == geolocation_ip(context.ip, mode)
    assert bought["ip"] == geolocation_ip(attribute_ip if attribute_ip is not None else context.ip, mode)
    if context.ip is not None:
        # The shortcut's premise: the request's address is already what the check would make of it.
        assert geolocation_ip(context.ip, mode) == context.ip
        assert str(ipaddress.ip_address(context.ip)) == context.ip
