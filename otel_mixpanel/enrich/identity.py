"""Who an event belongs to, under the project's ID Merge API."""

from __future__ import annotations

from typing import Any

SIMPLIFIED = "simplified"
ORIGINAL = "original"


def distinct_id(mode: str, device_id: str | None, user_id: str | None) -> str:
    """Mixpanel's rule: the user when known, else the device (``$device:``-prefixed under Simplified ID Merge).

    An event with neither gets an empty distinct_id, which Mixpanel accepts and attributes to no user.
    """
    if user_id:
        return user_id
    if device_id:
        return f"$device:{device_id}" if mode == SIMPLIFIED else device_id
    return ""


def identity_properties(mode: str, device_id: str | None, user_id: str | None) -> dict[str, Any]:
    properties: dict[str, Any] = {"distinct_id": distinct_id(mode, device_id, user_id)}
    if mode == SIMPLIFIED:
        if device_id:
            properties["$device_id"] = device_id
        if user_id:
            properties["$user_id"] = user_id
    return properties


def identify_properties(device_id: str, user_id: str) -> dict[str, Any]:
    """The ``$identify`` event that links an anonymous device to a user under Original ID Merge."""
    return {"distinct_id": user_id, "$identified_id": user_id, "$anon_id": device_id}
