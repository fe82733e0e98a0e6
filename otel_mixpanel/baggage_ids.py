"""The request's ids in the OpenTelemetry baggage, for the jobs it enqueues (see ``otel_mixpanel.jobs``).

Only the OpenTelemetry API is used here: ``import otel_mixpanel`` and the web middleware
load this, not the SDK.
"""

from __future__ import annotations

from contextvars import Token
from typing import TYPE_CHECKING, Mapping

from opentelemetry import baggage, context
from opentelemetry.context import Context

if TYPE_CHECKING:
    from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState

DEVICE_KEY = "otel_mixpanel.device_id"
USER_KEY = "otel_mixpanel.user_id"
# On a job's span whose device id came from the baggage: the user id that came with it ("" for an
# anonymous request). A job that names another user gets no device id (spans.read_identity), so that
# Mixpanel never links the enqueuing visitor's device to that user.
CARRIED_USER_ATTRIBUTE = "otel_mixpanel.job.request_user_id"


def request_context(device_id: str | None) -> Context:
    """The current context with the request's device id as baggage, and no user id a client sent."""
    ctx = baggage.remove_baggage(USER_KEY)
    if device_id:
        return baggage.set_baggage(DEVICE_KEY, device_id, context=ctx)
    return baggage.remove_baggage(DEVICE_KEY, context=ctx)


def device_id_to_carry(state: DeviceState, options: DeviceIdOptions) -> str | None:
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


def carried_ids() -> dict[str, str]:
    """The ids the request carries now (the user too, after ``identify()``), to carry on while its body streams."""
    return {key: str(value) for key in (DEVICE_KEY, USER_KEY) if (value := baggage.get_baggage(key))}


def attach_carried(ids: Mapping[str, str]) -> Token[Context]:
    """Attach ``carried_ids()``'s ids, and no client-sent ones; the caller detaches the token."""
    ctx = baggage.remove_baggage(DEVICE_KEY, context=baggage.remove_baggage(USER_KEY))
    for key, value in ids.items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    return context.attach(ctx)
