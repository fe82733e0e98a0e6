"""read_request on a one-span request with generated attributes: it reads the span as step 1's readers do."""

from __future__ import annotations

from hypothesis import example, given, settings, strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_mixpanel.assembly import LocalTrace
from otel_mixpanel.config import Settings
from otel_mixpanel.context import read_request
from otel_mixpanel.spans import read_http, read_identity
from test_spans import HTTP_KEYS, IDENTITY_KEYS, USUAL_HTTP, USUAL_IDENTITY, _spans

LOCATED = {**USUAL_IDENTITY, "geo.location.lat": 52.5, "geo.location.lon": 13.4}
REQUESTS = st.tuples(st.sampled_from(USUAL_HTTP), st.sampled_from([{}, USUAL_IDENTITY, LOCATED])).flatmap(
    lambda bases: _spans(HTTP_KEYS + IDENTITY_KEYS, {**bases[0], **bases[1]}))


@settings(max_examples=400, deadline=None)
@given(REQUESTS, st.sampled_from([SpanKind.SERVER, SpanKind.INTERNAL]))
# Found by generation: an infinite status code.
@example({"http.method": "GET", "http.target": "/", "client.address": "GET", "http.status_code": float("inf")},
         SpanKind.SERVER)
def test_a_one_span_request_reads_as_the_span_readers_read_it(attributes, kind):
    span = ReadableSpan(name="GET /p/2", kind=kind, attributes=attributes)
    facts = read_request(LocalTrace(span, [span]), Settings())
    identity = read_identity(dict(attributes))
    # A location is both coordinates or none.
    located = identity.latitude is not None and identity.longitude is not None
    assert (facts.device_id, facts.user_id, facts.latitude, facts.longitude) == (
        identity.device_id, identity.user_id, identity.latitude if located else None,
        identity.longitude if located else None)
    assert facts.http == read_http("GET /p/2", kind, dict(attributes))
    assert (facts.server_span is span) == (facts.http is not None)
    assert facts.server_attributes == (dict(attributes) if facts.http is not None else {})
    assert facts.is_bot == (facts.http is not None and (facts.http.synthetic or facts.user_agent.is_bot))
