"""Who an event belongs to, in the ids Mixpanel's web SDK uses, so that one browser is one user.

Followed: mixpanel-browser 2.83.0, src/mixpanel-core.js. Since 2.46 the SDK names an
anonymous browser ``distinct_id = "$device:<uuid>"`` with ``$device_id = "<uuid>"``, in both
ID Merge modes (``init`` registers them whatever the project's mode); ``identify(user)``
registers ``$user_id`` and ``distinct_id = user``, and sends one ``$identify`` with
``distinct_id`` (the user) and ``$anon_distinct_id`` (the previous, ``$device:`` id). The
server's events use the same ids, so a page that runs the SDK and the server's events share
one anonymous user in either mode.
"""

from __future__ import annotations

from typing import Any

DEVICE_PREFIX = "$device:"


def anonymous_id(device_id: str) -> str:
    """The distinct_id of an anonymous browser, as mixpanel-js (2.46 and later) makes it."""
    return DEVICE_PREFIX + device_id


def distinct_id(device_id: str | None, user_id: str | None) -> str:
    """The user when known, else the device's ``$device:<id>``: Mixpanel's own rule under
    Simplified ID Merge, and what mixpanel-js sends under Original ID Merge too.

    An event with neither gets an empty distinct_id, which Mixpanel accepts and attributes to no user.
    """
    if user_id:
        return user_id
    if device_id:
        return anonymous_id(device_id)
    return ""


def identity_properties(device_id: str | None, user_id: str | None) -> dict[str, Any]:
    """``distinct_id``, ``$device_id`` and ``$user_id``, as mixpanel-js puts them on every event."""
    properties: dict[str, Any] = {"distinct_id": distinct_id(device_id, user_id)}
    if device_id:
        properties["$device_id"] = device_id
    if user_id:
        properties["$user_id"] = user_id
    return properties


def identify_properties(device_id: str, user_id: str) -> dict[str, Any]:
    """The ``$identify`` that merges an anonymous browser into a user under Original ID Merge.

    mixpanel-js sends ``distinct_id`` and ``$anon_distinct_id`` (with ``$device_id`` and
    ``$user_id`` as on every event); Mixpanel's HTTP API documents ``$identified_id`` and
    ``$anon_id`` (reference/create-identity; its ``$identify`` endpoint accepts the
    ``$device:``-prefixed UUIDs since mixpanel-js 2.46). Both pairs are sent, naming the same ids,
    so the merge works whichever Mixpanel reads.
    """
    anonymous = anonymous_id(device_id)
    return {
        **identity_properties(device_id, user_id),
        "$anon_distinct_id": anonymous,
        "$identified_id": user_id,
        "$anon_id": anonymous,
    }
