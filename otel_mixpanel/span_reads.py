"""The only place that reads the OpenTelemetry SDK's private span internals, for speed.

Conversion reads every attribute of every server span and asks every span for its events.
The public API makes both cost several times what they need to: ``span.attributes`` is a
``MappingProxyType`` over the SDK's ``BoundedAttributes``, where each lookup goes through
``__getitem__`` under a lock, and ``span.events`` copies the event list under a lock. The
span's name, kind, context, parent and start time, and a span context's ids, are properties
written in Python: each read is a Python function call, where the field behind it is one
attribute look-up. Each read below checks the shape it relies on and falls back to the public
API when the shape is not there (another SDK version, a hand-made or subclassed span), so it can
only be slow, never wrong. tests/test_span_reads.py checks both paths against the public API.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final, Mapping, Sequence

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import SpanContext, SpanKind

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
        # The SDK's BoundedList keeps its items in a deque, and its __len__ is Python code.
        items = getattr(events, "_dq", None) if _is_sdk_bounded_list(events) else None
        try:
            if len(items if type(items) is deque else events) == 0:
                return ()
        except TypeError:
            pass
    return span.events


# Classes of span event lists seen so far: whether each is the SDK's BoundedList. A process has one or two.
_list_classes: Final[dict[type, bool]] = {}


def _is_sdk_bounded_list(events: object) -> bool:
    known = _list_classes.get(type(events))
    if known is None:
        try:
            from opentelemetry.sdk.util import BoundedList
        except ImportError:
            known = False
        else:
            known = type(events) is BoundedList
        if len(_list_classes) < _MAX_SPAN_CLASSES:
            _list_classes[type(events)] = known
    return known


# The ReadableSpan properties read for every span, each of which returns the field of the same name
# with a leading underscore.
_FIELDS: Final = ("name", "kind", "context", "parent", "start_time")
# Span classes seen so far: whether they read their fields as ReadableSpan does. A process has a few.
_span_classes: Final[dict[type, bool]] = {}
_MAX_SPAN_CLASSES: Final = 64


def _sdk_fields(span: object) -> bool:
    """Whether ``span``'s fields can be read directly: its class has ReadableSpan's properties
    unchanged, and an instance keeps each field where they read it (checked once per class)."""
    known = _span_classes.get(type(span))
    if known is None:
        known = _reads_as_readable_span(span)
        if len(_span_classes) < _MAX_SPAN_CLASSES:
            _span_classes[type(span)] = known
    return known


def _reads_as_readable_span(span: object) -> bool:
    try:
        from opentelemetry.sdk.trace import ReadableSpan
    except ImportError:
        return False
    kind = type(span)
    if (not isinstance(span, ReadableSpan) or kind.__getattribute__ is not object.__getattribute__
            or any(getattr(kind, name, None) is not ReadableSpan.__dict__.get(name) for name in _FIELDS)):
        return False
    missing = object()
    try:
        return all(getattr(span, "_" + name, missing) is getattr(span, name) for name in _FIELDS)
    except AttributeError:
        return False


def span_name(span: ReadableSpan) -> str:
    return span._name if _sdk_fields(span) else span.name


def span_kind(span: ReadableSpan) -> SpanKind:
    return span._kind if _sdk_fields(span) else span.kind


def span_context(span: ReadableSpan) -> Any:
    # Any, as the SDK's property is untyped: a span made by hand may carry any object with the ids as its context.
    untyped: Any = span
    return untyped._context if _sdk_fields(span) else untyped.context


def span_parent(span: ReadableSpan) -> SpanContext | None:
    return span._parent if _sdk_fields(span) else span.parent


def span_start_time(span: ReadableSpan) -> int | None:
    return span._start_time if _sdk_fields(span) else span.start_time


def _context_is_its_tuple() -> bool:
    """Whether the API's SpanContext is the tuple (trace id, span id, is remote, ...) its properties read."""
    probe = SpanContext(trace_id=5, span_id=7, is_remote=True)
    return (tuple.__getitem__(probe, 0) == probe.trace_id == 5 and tuple.__getitem__(probe, 1) == probe.span_id == 7
            and tuple.__getitem__(probe, 2) is probe.is_remote is True)


_CONTEXT_IS_ITS_TUPLE: Final = _context_is_its_tuple()


# A span context's ids; ``context`` is Any, as span_context's answer: anything with the ids is read through them.
def context_trace_id(context: Any) -> int:
    trace_id: int = context[0] if _CONTEXT_IS_ITS_TUPLE and type(context) is SpanContext else context.trace_id
    return trace_id


def context_span_id(context: Any) -> int:
    span_id: int = context[1] if _CONTEXT_IS_ITS_TUPLE and type(context) is SpanContext else context.span_id
    return span_id


def context_is_remote(context: Any) -> bool:
    is_remote: bool = context[2] if _CONTEXT_IS_ITS_TUPLE and type(context) is SpanContext else context.is_remote
    return is_remote
