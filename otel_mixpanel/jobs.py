"""Background jobs: the identity of the request that enqueued a job, carried in W3C baggage.

OpenTelemetry already carries the trace context and baggage from a request to the jobs
it enqueues (opentelemetry-instrumentation-celery injects them into the task message;
the worker extracts them and starts the task's CONSUMER span with them). So:

- the web middleware puts the request's device id in the baggage for the time of the
  request, after removing any ``otel_mixpanel.*`` entries the client sent;
- ``identify()`` and ``set_user()`` add the user id;
- in the worker, ``BaggageIdentityProcessor`` (also part of ``MixpanelSpanProcessor``)
  copies those entries onto each CONSUMER span as ``enduser.pseudo.id`` / ``enduser.id``,
  where the exporter reads identity, unless the job set them itself. A job that then names
  another user (``enduser.id``) than the request's loses the device id: the visitor's device
  must not be linked to that user.

Only the two ids travel, under the keys of ``otel_mixpanel.baggage_ids`` (which puts
them there); the middleware's ``ids_in_baggage=False``
keeps them out of the baggage (client-sent entries are still removed). See docs/identity.md.
"""

from __future__ import annotations

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID, ENDUSER_PSEUDO_ID
from opentelemetry.trace import SpanKind

from otel_mixpanel.baggage_ids import CARRIED_USER_ATTRIBUTE, DEVICE_KEY, USER_KEY
from otel_mixpanel.spans import identity_text

__all__ = ["DEVICE_KEY", "USER_KEY", "BaggageIdentityProcessor", "copy_identity"]

def copy_identity(span: Span, parent_context: Context | None) -> None:
    """On a job's CONSUMER span, the ids the enqueuing request put in the baggage."""
    if span.kind != SpanKind.CONSUMER or not span.is_recording():
        return
    entries = baggage.get_all(parent_context)
    if not entries:
        return
    recorded = span.attributes or {}
    device_id, user_id = identity_text(entries.get(DEVICE_KEY)), identity_text(entries.get(USER_KEY))
    if device_id and ENDUSER_PSEUDO_ID not in recorded:
        span.set_attribute(ENDUSER_PSEUDO_ID, device_id)
        span.set_attribute(CARRIED_USER_ATTRIBUTE, user_id or "")
    if user_id and ENDUSER_ID not in recorded:
        span.set_attribute(ENDUSER_ID, user_id)


class BaggageIdentityProcessor(SpanProcessor):
    """Copies the enqueuing request's ids from the baggage onto each job's CONSUMER span."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        copy_identity(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        pass
