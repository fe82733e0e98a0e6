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

from typing import Any, Mapping, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan

# opentelemetry-sdk releases whose internals were read and checked for the fast paths: the
# floor in pyproject.toml up to the newest release at the time of writing.
CHECKED_SDK_VERSIONS = ("1.43.0", "1.45.1")


def ended_span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """A finished span's attributes as a plain dict; callers must not change it.

    An ended span's ``BoundedAttributes`` is immutable, so its inner dict can be read as it is;
    anything else is copied.
    """
    bounded = getattr(span, "_attributes", None)
    inner = getattr(bounded, "_dict", None)
    if type(inner) is dict and getattr(bounded, "_immutable", False) is True:
        return inner
    return dict(span.attributes or {})


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
