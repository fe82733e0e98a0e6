"""What application code calls: record Mixpanel facts on the current span.

Nothing here talks to Mixpanel. Each helper writes span attributes or a span event
that the exporter turns into Mixpanel data when the request's spans are exported, so
the calls cost what an ``add_event`` costs and work on whatever span is current
(the server span, or a child span inside the handler).
"""

from __future__ import annotations

from typing import Any, Mapping

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID

# Span events with these names carry instructions for the exporter, not business events.
IDENTIFY_EVENT = "otel_mixpanel.identify"
SET_PROFILE_EVENT = "otel_mixpanel.set_profile"
USER_ID_ATTRIBUTE = "user_id"


def track(name: str, properties: Mapping[str, Any] | None = None) -> None:
    """Record business event ``name`` on the current span; it becomes a Mixpanel event.

    Property values may be anything OpenTelemetry accepts as an attribute value; the
    exporter turns each into JSON that Mixpanel accepts.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("track() needs a non-empty event name")
    trace.get_current_span().add_event(name, attributes=dict(properties or {}))


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


def set_user(user_id: str | int) -> None:
    """Say who the request's (already logged-in) user is, without recording a login."""
    user = str(user_id).strip()
    if user:
        trace.get_current_span().set_attribute(ENDUSER_ID, user)


def set_profile(properties: Mapping[str, Any]) -> None:
    """Set properties on the request's user profile (``/engage`` ``$set``)."""
    if not properties:
        return
    trace.get_current_span().add_event(SET_PROFILE_EVENT, attributes=dict(properties))
