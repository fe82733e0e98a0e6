"""The consumer endpoints: the official SDK's names for the kinds of record, used everywhere a record goes."""

from __future__ import annotations

import enum


class Endpoint(str, enum.Enum):
    """What a record is, in ``mixpanel.Consumer.send``'s words; the spool stores the value."""

    EVENTS = "events"
    IMPORTS = "imports"
    PEOPLE = "people"
    GROUPS = "groups"

    def __str__(self) -> str:
        # The value, as on Python 3.10: 3.11 changed str() and format() of mixed-in enums to the member name.
        return self.value

    @property
    def is_event(self) -> bool:
        return self in (Endpoint.EVENTS, Endpoint.IMPORTS)

    @classmethod
    def named(cls, name: str) -> Endpoint:
        """The endpoint called ``name``; ``ValueError`` naming the valid ones otherwise."""
        try:
            return cls(name)
        except ValueError:
            expected = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown Mixpanel endpoint {name!r}; expected one of {expected}") from None


# The names, for code that reads them from the spool as text.
CONSUMER_ENDPOINTS = tuple(member.value for member in Endpoint)
EVENT_ENDPOINTS = tuple(member.value for member in Endpoint if member.is_event)
