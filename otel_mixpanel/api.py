"""What application code calls: record Mixpanel facts on the current span.

Nothing here talks to Mixpanel. Each helper writes span attributes or a span event
that the exporter turns into Mixpanel data when the request's spans are exported, so
the calls cost what an ``add_event`` costs and work on whatever span is current
(the server span, or a child span inside the handler).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Sequence

from opentelemetry import baggage, trace
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID, ENDUSER_PSEUDO_ID

from otel_mixpanel import baggage_ids

logger = logging.getLogger("otel_mixpanel")

# Span events with these names carry instructions for the exporter, not business events.
IDENTIFY_EVENT = "otel_mixpanel.identify"
SET_PROFILE_EVENT = "otel_mixpanel.set_profile"
SET_GROUP_EVENT = "otel_mixpanel.set_group"
SET_GROUP_PROFILE_EVENT = "otel_mixpanel.set_group_profile"
# Attributes of the group instructions; the group profile's own properties share the event with them.
GROUP_KEY_ATTRIBUTE = "otel_mixpanel.group_key"
GROUP_ID_ATTRIBUTE = "otel_mixpanel.group_id"
USER_ID_ATTRIBUTE = "user_id"


def track(name: str, properties: Mapping[str, Any] | None = None) -> None:
    """Record business event ``name`` on the current span; it becomes a Mixpanel event.

    Property values may be anything OpenTelemetry accepts as an attribute value; the
    exporter turns each into JSON that Mixpanel accepts.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("track() needs a non-empty event name")
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes=dict(properties or {}))
    else:
        _track_on_own_span(name, dict(properties or {}))


_said: set[str] = set()
_said_lock = threading.Lock()
TRACER_NAME = "otel_mixpanel"
OWN_SPAN_NAME = "otel_mixpanel.track"


def _say_once(kind: str, message: str) -> None:
    with _said_lock:
        if kind in _said:
            return
        _said.add(kind)
    logger.warning(message)


def _known_identity() -> dict[str, str]:
    """The ids this context still knows without a span: the middleware's device id, the baggage."""
    from otel_mixpanel.web.device_id import current_device_id  # otel_mixpanel.web imports this module

    known = {ENDUSER_PSEUDO_ID: current_device_id() or baggage.get_baggage(baggage_ids.DEVICE_KEY),
             ENDUSER_ID: baggage.get_baggage(baggage_ids.USER_KEY)}
    return {attribute: str(value) for attribute, value in known.items() if value}


def _track_on_own_span(name: str, properties: dict[str, Any]) -> None:
    """No span is recording here: the event gets a span of its own, with the identity still known.

    This happens in a thread that did not get the request's context (``run_in_executor``
    copies none), in a script or job without instrumentation, or where the sampler dropped
    the span.
    """
    identity = _known_identity()
    span = trace.get_tracer(TRACER_NAME).start_span(OWN_SPAN_NAME, attributes=identity)
    if not span.is_recording():
        _say_once("no-provider", f"otel_mixpanel.track({name!r}) ran where no span is recording and the global "
                  "tracer provider records nothing (none is set, or its sampler dropped the span), so the event is "
                  "lost: set the provider with trace.set_tracer_provider() (docs/sampling.md for samplers), and "
                  "run code outside the request with "
                  "contextvars.copy_context().run (docs/identity.md)")
        return
    span.add_event(name, attributes=properties)
    span.end()
    if not identity:
        _say_once("no-identity", f"otel_mixpanel.track({name!r}) ran where no span is recording and nothing "
                  "tells the user (no request context: e.g. a thread started by run_in_executor, which does not "
                  "copy it). The event is sent on a span of its own, without a user; run such code with "
                  "contextvars.copy_context().run (docs/identity.md)")


def identify(user_id: str | int) -> None:
    """Say that the request's user has just logged in as ``user_id``.

    Sets ``enduser.id`` on the current span, so every event of the request carries the
    user, and records the login so that Original ID Merge sends one ``$identify``.
    """
    user = str(user_id).strip()
    if not user:
        raise ValueError("identify() needs a non-empty user id")
    span = trace.get_current_span()
    span.set_attribute(ENDUSER_ID, user)
    span.add_event(IDENTIFY_EVENT, attributes={USER_ID_ATTRIBUTE: user})
    _carry_to_jobs(user)


def set_user(user_id: str | int) -> None:
    """Say who the request's (already logged-in) user is, without recording a login."""
    user = str(user_id).strip()
    if user:
        trace.get_current_span().set_attribute(ENDUSER_ID, user)
        _carry_to_jobs(user)


def _carry_to_jobs(user: str) -> None:
    """Jobs enqueued from here on carry the user (docs/identity.md, background jobs).

    Only inside a request handled by the web middleware, whose context ends with the
    request: elsewhere (in a job, say) the entry would outlive the code that set it.
    """
    from otel_mixpanel.web.device_id import _current

    state = _current.get()
    if state is not None and state.device_id and state.ids_in_baggage:
        baggage_ids.carry_user(user, state.device_id)


def set_profile(properties: Mapping[str, Any]) -> None:
    """Set properties on the request's user profile (``/engage`` ``$set``)."""
    if not properties:
        return
    trace.get_current_span().add_event(SET_PROFILE_EVENT, attributes=dict(properties))


def _group_key(group_key: str) -> str:
    if not isinstance(group_key, str) or not group_key.strip():
        raise ValueError("a group key must be a non-empty property name, e.g. 'company'")
    return group_key.strip()


def set_group(group_key: str, group_ids: str | int | Sequence[str | int]) -> None:
    """Say that the request's user belongs to ``group_ids`` of ``group_key`` (e.g. ``"company", "acme"``).

    As mixpanel-js's ``set_group`` (2.83.0), which registers ``{group_key: [ids]}`` as a super
    property and ``people.set``s it: every event of the request carries ``group_key`` with the
    list of ids, and the identified user's profile gets it too. Ids are sent as text.
    """
    key = _group_key(group_key)
    ids = [group_ids] if isinstance(group_ids, (str, int)) else list(group_ids)
    texts = [str(group_id).strip() for group_id in ids if str(group_id).strip()]
    if not texts:
        raise ValueError("set_group() needs at least one non-empty group id")
    trace.get_current_span().add_event(SET_GROUP_EVENT, attributes={GROUP_KEY_ATTRIBUTE: key,
                                                                     GROUP_ID_ATTRIBUTE: texts})


def set_group_profile(group_key: str, group_id: str | int, properties: Mapping[str, Any]) -> None:
    """Set properties on the profile of group ``group_id`` of ``group_key`` (``/groups`` ``$set``)."""
    key = _group_key(group_key)
    identifier = str(group_id).strip()
    if not identifier:
        raise ValueError("set_group_profile() needs a non-empty group id")
    if not properties:
        return
    trace.get_current_span().add_event(SET_GROUP_PROFILE_EVENT, attributes={
        **properties, GROUP_KEY_ATTRIBUTE: key, GROUP_ID_ATTRIBUTE: identifier})
