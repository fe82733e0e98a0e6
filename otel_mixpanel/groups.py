"""Group analytics: a request's group memberships, and group profile updates for ``/groups``.

The shapes are mixpanel-js's (2.83.0): ``set_group`` registers ``{group_key: [group ids]}`` on
every event, and ``MixpanelGroup._send_request`` sends ``{"$set": {...}, "$group_key",
"$group_id", "$token"}``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan

from otel_mixpanel.api import GROUP_ID_ATTRIBUTE, GROUP_KEY_ATTRIBUTE, SET_GROUP_EVENT
from otel_mixpanel.limits import limit_property_count, safe_properties


def request_groups(recorded: Iterable[tuple[ReadableSpan, Sequence[Event]]]) -> dict[str, list[str]]:
    """``{group_key: [ids]}`` from the ``set_group()`` calls among the request's spans' events (``recorded``,
    in span order); a later call for a key wins."""
    groups: dict[str, list[str]] = {}
    for _, span_events in recorded:
        for span_event in span_events:
            if span_event.name == SET_GROUP_EVENT:
                membership = group_membership(span_event.attributes)
                if membership:
                    groups.update(membership)
    return groups


def group_membership(attributes: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """One ``set_group()`` call's ``{group_key: [ids]}``, or nothing when it is malformed."""
    attributes = attributes or {}
    key, ids = attributes.get(GROUP_KEY_ATTRIBUTE), attributes.get(GROUP_ID_ATTRIBUTE)
    if not isinstance(key, str) or not key or not isinstance(ids, (list, tuple)) or not ids:
        return {}
    # JSON-safe like any property (a lone surrogate in a key or id would make the request's every event unsendable).
    return safe_properties({key: [str(group_id) for group_id in ids]})


def group_update(attributes: Mapping[str, Any] | None, token: str | None) -> dict[str, Any] | None:
    """The ``/groups`` ``$set`` a ``set_group_profile()`` call asks for, or None when it is malformed."""
    properties = safe_properties(attributes or {})
    key, group_id = properties.pop(GROUP_KEY_ATTRIBUTE, None), properties.pop(GROUP_ID_ATTRIBUTE, None)
    if not isinstance(key, str) or not key or not group_id or not properties:
        return None
    update: dict[str, Any] = {"$group_key": key, "$group_id": str(group_id),
                              "$set": limit_property_count(properties, frozenset())}
    if token:
        update["$token"] = token
    return update
