"""Step 4: Mixpanel events and profile updates from one request's spans and its context.

Everything here is a pure function of the spans and the settings: the same spans give
the same messages, down to ``$insert_id``, so a message sent twice is deduplicated.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final, Iterator, Mapping, NamedTuple, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan

from otel_mixpanel.api import IDENTIFY_EVENT, SET_GROUP_EVENT, SET_GROUP_PROFILE_EVENT, SET_PROFILE_EVENT
from otel_mixpanel.assembly import LocalTrace
from otel_mixpanel.config import ID_MERGE_ORIGINAL, Settings
from otel_mixpanel.context import RequestContext, RequestFacts
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.enrich.client_ip import geolocation_ip
from otel_mixpanel.groups import group_membership, group_update, request_groups
from otel_mixpanel.enrich.identity import distinct_id, identify_properties, identity_properties
from otel_mixpanel.span_reads import context_span_id, context_trace_id, span_context, span_events, span_start_time
from otel_mixpanel.spans import new_named_tuple
from otel_mixpanel.limits import MAX_PROPERTIES, limit_property_count, safe_properties, truncate_utf8
from otel_mixpanel.page_views import is_page_view
from otel_mixpanel.version import __version__

LIBRARY = "otel-mixpanel"
LIBRARY_VERSION = __version__
# What identity and deduplication rest on: never overwritten by span-event attributes, never dropped.
RESERVED = frozenset({"distinct_id", "time", "$insert_id", "token", "$device_id", "$user_id",
                      "$identified_id", "$anon_id", "$anon_distinct_id"})
# Never dropped to fit the property limit either: without ``ip`` Mixpanel would place the event at the server.
KEPT = RESERVED | {"ip"}
EVENTS = Endpoint.EVENTS
PROFILES = Endpoint.PEOPLE
GROUPS = Endpoint.GROUPS


class Message(NamedTuple):
    """One Mixpanel record, for the consumer endpoint ``endpoint`` (events or people)."""

    endpoint: Endpoint
    body: dict[str, Any]


# An $insert_id's key: the trace id's 16 bytes (as two halves) and the span id's 8, big-endian.
# Packing refuses what ``int.to_bytes(16)``/``to_bytes(8)`` would refuse: negative or oversized ids.
_SPAN_KEY = struct.Struct(">QQQ")
_LOW_64_BITS = (1 << 64) - 1
_PAGE_VIEW_SLOT = b"page"
# BLAKE2b-64 before any input: copying it costs less than setting a new one up from its parameters.
_EMPTY_BLAKE2B_64 = hashlib.blake2b(digest_size=8)
# Its methods and the key's packing as functions: compiled, direct calls, where method calls look each name up.
_copy: Final = type(_EMPTY_BLAKE2B_64).copy
_update: Final = type(_EMPTY_BLAKE2B_64).update
_hexdigest: Final = type(_EMPTY_BLAKE2B_64).hexdigest
_pack_span_key: Final = _SPAN_KEY.pack


def insert_id(trace_id: int, span_id: int, slot: str) -> str:
    """A stable 16-character ``$insert_id`` for one event of one span.

    Mixpanel deduplicates on event name, time, distinct_id and ``$insert_id`` together, so
    64 bits are ample, and every byte saved is saved on every event sent.
    """
    return _insert_id(trace_id, span_id, slot.encode())


def _insert_id(trace_id: int, span_id: int, slot: bytes) -> str:
    """BLAKE2b-64 of the trace id (16 bytes), the span id (8 bytes) and the slot's UTF-8, in hex."""
    digest = _copy(_EMPTY_BLAKE2B_64)
    _update(digest, _pack_span_key(trace_id >> 64, trace_id & _LOW_64_BITS, span_id) + slot)
    hexdigest: str = _hexdigest(digest)
    return hexdigest


def _own_properties(attributes: Any) -> dict[str, Any]:
    """A business event's attributes as properties, less those that identity and deduplication rest on."""
    properties = safe_properties(attributes)
    for key in properties.keys() & RESERVED:
        del properties[key]
    return properties


class EventBuilder:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._excluded = frozenset(settings.excluded_events)
        self._included = frozenset(settings.included_events)
        # Like an event's own properties, super properties never replace what identity and dedup rest on.
        self._super = {key: value for key, value in (settings.super_properties or {}).items() if key not in KEPT}
        self._page_view_name = truncate_utf8(settings.page_view_event)

    def page_view(self, facts: RequestFacts) -> bool:
        """Whether the request is a page view to send; the exporter decides it once per request
        and hands it to ``may_produce`` and ``messages``."""
        return facts.http is not None and is_page_view(facts.http, facts.user_agent.is_automated, self._settings)

    def may_produce(self, trace: LocalTrace, facts: RequestFacts, page_view: bool | None = None) -> bool:
        """False when ``messages`` would give nothing for this request (a crawler not tracked, a
        request that is no page view and whose spans have no events), so that the exporter need
        not enrich it: API calls, assets and redirects are a third of a site's requests."""
        if facts.is_bot and not self._settings.track_bots:
            return False
        if page_view is None:
            page_view = self.page_view(facts)
        return page_view or any(map(span_events, trace.spans))

    def messages(self, trace: LocalTrace, context: RequestContext, page_view: bool | None = None
                 ) -> list[Message]:
        """The request's messages; ``page_view`` is ``page_view()``'s answer when already known."""
        if context.is_bot and not self._settings.track_bots:
            return []
        identity = identity_properties(context.device_id, context.user_id)
        # Most spans have no events: the spans that do are looked at, once.
        recorded = []
        for span in trace.spans:
            events = span_events(span)
            if events:
                recorded.append((span, events))
        # mixpanel-js 2.83.0's track(): automatic properties < super properties (set_group() registers one,
        # after those configured) < the event's own.
        groups = request_groups(recorded)
        base = {**context.properties, **self._super, **groups} if self._super or groups else context.properties
        server_span = context.server_span
        if page_view is None:
            page_view = server_span is not None and is_page_view(context.http, context.is_automated, self._settings)
        messages = []
        if page_view and server_span is not None:
            messages.append(self._event(self._page_view_name, server_span, _PAGE_VIEW_SLOT,
                                        span_start_time(server_span), {**base, **context.page, **identity},
                                        context.ip))
        for span, events in recorded:
            for index, span_event in enumerate(events):
                if span_event.name == IDENTIFY_EVENT:
                    messages.extend(self._identify(span, index, span_event.timestamp, context, base))
                    messages.extend(self._first_touch_update(context))
                elif span_event.name == SET_PROFILE_EVENT:
                    messages.extend(self._profile_update(span_event.attributes, context))
                elif span_event.name in (SET_GROUP_EVENT, SET_GROUP_PROFILE_EVENT):
                    messages.extend(self._group_messages(span_event.name, span_event.attributes, context))
                elif self._is_tracked(span_event.name):
                    properties = {**base, **_own_properties(span_event.attributes), **identity}
                    messages.append(self._event(truncate_utf8(span_event.name), span, b"%d" % index,
                                                span_event.timestamp, properties, context.ip))
        return messages

    def _group_messages(self, name: str, attributes: Any, context: RequestContext) -> Iterator[Message]:
        """set_group(): the user's profile gets the membership too, as mixpanel-js's people.set of it;
        set_group_profile(): the group's own ``/groups`` update."""
        if name == SET_GROUP_EVENT:
            membership = group_membership(attributes)
            if membership:
                yield from self._profile_update(membership, context)
            return
        update = group_update(attributes, self._settings.token)
        if update is not None:
            yield new_named_tuple(Message, (GROUPS, update))

    def _is_tracked(self, name: str) -> bool:
        """Whether a business event of this name is sent: not denied, and allowed when an allow-list is set."""
        return bool(name) and name not in self._excluded and (not self._included or name in self._included)

    def _event(self, name: str, span: ReadableSpan, slot: bytes, timestamp: int | None,
               properties: dict[str, Any], client_ip: str | None) -> Message:
        """Event ``name`` (already cut to Mixpanel's length) with the request's ``properties``, which it takes."""
        ip = properties.get("ip")
        # The request's client address (RequestContext.ip) is already normalised under the privacy setting;
        # one the application gave as an attribute, or none, goes through the check.
        properties["ip"] = ip if ip is client_ip and ip is not None else geolocation_ip(ip, self._settings.ip_mode)
        properties["time"] = int(timestamp or 0) // 1_000_000
        ids = span_context(span)
        assert ids is not None, "the assembler hands over only spans with a context"
        properties["$insert_id"] = _insert_id(context_trace_id(ids), context_span_id(ids), slot)
        properties.setdefault("mp_lib", LIBRARY)
        properties.setdefault("$lib_version", LIBRARY_VERSION)
        if self._settings.token:
            properties["token"] = self._settings.token
        if len(properties) > MAX_PROPERTIES:
            properties = limit_property_count(properties, KEPT)
        return new_named_tuple(Message, (EVENTS, {"event": name, "properties": properties}))

    def _identify(self, span: ReadableSpan, index: int, timestamp: int | None,
                  context: RequestContext, base: Mapping[str, Any]) -> Iterator[Message]:
        """Original ID Merge links the device to the user with one ``$identify`` at login, carrying
        the request's properties as mixpanel-js's does; Simplified ID Merge links them through the
        first event carrying both ids, and ignores ``$identify``."""
        if self._settings.id_merge != ID_MERGE_ORIGINAL or not context.device_id or not context.user_id:
            return
        yield self._event("$identify", span, b"identify%d" % index, timestamp,
                          {**base, **identify_properties(context.device_id, context.user_id)}, context.ip)

    def _profile_update(self, attributes: Any, context: RequestContext) -> Iterator[Message]:
        """``/engage`` ``$set`` for the request's user. mixpanel-js (2.83.0, MixpanelPeople) queues
        people updates until ``identify()``, so anonymous visitors do not each become a profile;
        ``ANONYMOUS_PROFILES`` opts in to ``$device:<id>`` profiles."""
        if not context.user_id and not (self._settings.anonymous_profiles and context.device_id):
            return
        update: dict[str, Any] = {
            "$distinct_id": distinct_id(context.device_id, context.user_id),
            "$set": limit_property_count(safe_properties(attributes), frozenset()),
        }
        if self._settings.token:
            update["$token"] = self._settings.token
        # Outside $set, so that Mixpanel locates the user, or no one, rather than the server that sent the update.
        update["$ip"] = geolocation_ip(context.ip, self._settings.ip_mode)
        if context.latitude is not None:
            update["$latitude"] = context.latitude
            update["$longitude"] = context.longitude
        yield new_named_tuple(Message, (PROFILES, update))

    def _first_touch_update(self, context: RequestContext) -> Iterator[Message]:
        """At login, ``$set_once`` of the browser's first touch, as mixpanel-js's ``identify()``
        flushes its queued ``people.set_once``: the profile keeps the first value it ever got."""
        if not context.user_id or not context.first_touch_profile:
            return
        update: dict[str, Any] = {
            "$distinct_id": distinct_id(context.device_id, context.user_id),
            "$set_once": dict(context.first_touch_profile),
        }
        if self._settings.token:
            update["$token"] = self._settings.token
        # As in _profile_update: the client's location, or no one's, never the exporting server's.
        update["$ip"] = geolocation_ip(context.ip, self._settings.ip_mode)
        if context.latitude is not None:
            update["$latitude"] = context.latitude
            update["$longitude"] = context.longitude
        yield new_named_tuple(Message, (PROFILES, update))
