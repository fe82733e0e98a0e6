"""read_request reads a one-span request without the loops over spans, exactly as the general composition."""

from __future__ import annotations

from hypothesis import example, given, settings, strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_mixpanel.assembly import LocalTrace
from otel_mixpanel.config import Settings
from otel_mixpanel.context import _identity, _server_request, read_request
from test_spans import HTTP_KEYS, IDENTITY_KEYS, USUAL_HTTP, USUAL_IDENTITY, _spans

LOCATED = {**USUAL_IDENTITY, "geo.location.lat": 52.5, "geo.location.lon": 13.4}
REQUESTS = st.tuples(st.sampled_from(USUAL_HTTP), st.sampled_from([{}, USUAL_IDENTITY, LOCATED])).flatmap(
    lambda bases: _spans(HTTP_KEYS + IDENTITY_KEYS, {**bases[0], **bases[1]}))


@settings(max_examples=400, deadline=None)
@given(REQUESTS, st.sampled_from([SpanKind.SERVER, SpanKind.INTERNAL]))
# Found by generation: an infinite status code.
@example({"http.method": "GET", "http.target": "/", "client.address": "GET", "http.status_code": float("inf")},
         SpanKind.SERVER)
def test_a_one_span_request_reads_as_identity_and_server_request_read_it(attributes, kind):
    span = ReadableSpan(name="GET /p/2", kind=kind, attributes=attributes)
    facts = read_request(LocalTrace(span, [span]), Settings())
    assert (facts.device_id, facts.user_id, facts.latitude, facts.longitude) == _identity(facts.spans)
    assert (facts.server_span, facts.server_attributes, facts.http) == _server_request(facts.spans)
    assert facts.is_bot == (facts.http is not None and (facts.http.synthetic or facts.user_agent.is_bot))
