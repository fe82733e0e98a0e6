"""The only place that reads the OpenTelemetry SDK's private span internals, for speed.

Conversion reads every attribute of every server span and asks every span for its events.
The public API makes both cost several times what they need to: ``span.attributes`` is a
``MappingProxyType`` over the SDK's ``BoundedAttributes``, where each lookup goes through
``__getitem__`` under a lock, and ``span.events`` copies the event list under a lock. Each
read below checks the shape it relies on and falls back to the public API when the shape is
not there (another SDK version, a hand-made ``ReadableSpan``), so it can only be slow, never
wrong. tests/test_span_reads.py checks both paths against the public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from opentelemetry.attributes import BoundedAttributes

if TYPE_CHECKING:  # the web middleware reads spans too, and loads no SDK
    from opentelemetry.sdk.trace import Event, ReadableSpan

# opentelemetry-sdk releases whose internals were read and checked for the fast paths: the
# floor in pyproject.toml up to the newest release at the time of writing.
CHECKED_SDK_VERSIONS = ("1.43.0", "1.45.1")


def ended_span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """A finished span's attributes as a plain dict; callers must not change it.

    An ended span's ``BoundedAttributes`` is immutable, so its inner dict can be read as it is;
    anything else is copied.
    """
    bounded: Any = getattr(span, "_attributes", None)
    if type(bounded) is BoundedAttributes and bounded._immutable is True and type(bounded._dict) is dict:
        inner: dict[str, Any] = bounded._dict
        return inner
    return dict(span.attributes or {})


def attribute_length_limit(span: object) -> int | None:
    """The most characters a text attribute of ``span`` keeps, or None when it keeps any length.

    The SDK cuts longer values to their first characters (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
    ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`` or the provider's ``SpanLimits``). The public API
    does not say what limit a span has; a span that is not the SDK's is taken to have none.
    """
    bounded = getattr(span, "_attributes", None)
    if isinstance(bounded, BoundedAttributes):
        limit = bounded.max_value_len
        return limit if isinstance(limit, int) else None
    return None


def span_events(span: ReadableSpan) -> Sequence[Event]:
    """The span's events. Most spans have none, and asking the SDK's list its length first
    costs a fraction of the copy ``span.events`` makes."""
    events = getattr(span, "_events", None)
    if events is not None:
        try:
            if len(events) == 0:
                return ()
        except TypeError:
            pass
    return span.events
