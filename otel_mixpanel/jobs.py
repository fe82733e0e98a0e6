"""Background jobs: the identity of the request that enqueued a job, carried in W3C baggage.

OpenTelemetry already carries the trace context and baggage from a request to the jobs
it enqueues (opentelemetry-instrumentation-celery injects them into the task message;
the worker extracts them and starts the task's CONSUMER span with them). So:

- the web middleware puts the request's device id in the baggage for the time of the
  request, after removing any ``otel_mixpanel.*`` entries the client sent;
- ``identify()`` and ``set_user()`` add the user id;
- in the worker, ``BaggageIdentityProcessor`` (also part of ``MixpanelSpanProcessor``)
  copies those entries onto each CONSUMER span as ``enduser.pseudo.id`` / ``enduser.id``,
  where the exporter reads identity, unless the job set them itself.

Only the two ids travel, under the keys below; the middleware's ``ids_in_baggage=False``
keeps them out of the baggage (client-sent entries are still removed). See docs/identity.md.
"""

from __future__ import annotations

from contextvars import Token
from typing import TYPE_CHECKING

from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID, ENDUSER_PSEUDO_ID
from opentelemetry.trace import SpanKind

from otel_mixpanel.spans import identity_text

if TYPE_CHECKING:
    from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState

DEVICE_KEY = "otel_mixpanel.device_id"
USER_KEY = "otel_mixpanel.user_id"
_COPIED = ((DEVICE_KEY, ENDUSER_PSEUDO_ID), (USER_KEY, ENDUSER_ID))


def request_context(device_id: str | None) -> Context:
    """The current context with the request's device id as baggage, and no user id a client sent."""
    ctx = baggage.remove_baggage(USER_KEY)
    if device_id:
        return baggage.set_baggage(DEVICE_KEY, device_id, context=ctx)
    return baggage.remove_baggage(DEVICE_KEY, context=ctx)


def baggage_ids(state: DeviceState, options: DeviceIdOptions) -> str | None:
    """The device id the request puts in the baggage: none when the ``ids_in_baggage`` option is off."""
    state.ids_in_baggage = options.ids_in_baggage
    return state.device_id if options.ids_in_baggage else None


def attach_request(device_id: str | None) -> Token[Context]:
    """Attach ``request_context``; the caller detaches the token when the request ends."""
    return context.attach(request_context(device_id))


def carry_user(user_id: str, device_id: str | None) -> None:
    """Put the user id (and device id) in the baggage of the code that runs next in this request.

    Not detached here: the request's own attach (the middleware's, the instrumentation's)
    is detached when the request ends, which restores the context from before it.
    """
    ctx = baggage.set_baggage(USER_KEY, user_id)
    if device_id:
        ctx = baggage.set_baggage(DEVICE_KEY, device_id, context=ctx)
    context.attach(ctx)


def copy_identity(span: Span, parent_context: Context | None) -> None:
    """On a job's CONSUMER span, the ids the enqueuing request put in the baggage."""
    if span.kind != SpanKind.CONSUMER or not span.is_recording():
        return
    entries = baggage.get_all(parent_context)
    if not entries:
        return
    recorded = span.attributes or {}
    for key, attribute in _COPIED:
        value = identity_text(entries.get(key))
        if value and attribute not in recorded:
            span.set_attribute(attribute, value)


class BaggageIdentityProcessor(SpanProcessor):
    """Copies the enqueuing request's ids from the baggage onto each job's CONSUMER span."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        copy_identity(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        pass
