"""Everything an application would send to Mixpanel, captured in memory, for its own tests.

``MixpanelCapture`` is a real ``MixpanelSpanExporter`` (same settings, same conversion) whose
records go into lists instead of the network. Spans reach it through ``span_processor``, which
the pytest fixture ``mixpanel_capture`` (``otel_mixpanel.testing.pytest_plugin``) adds to the
global tracer provider. See ``docs/testing.md``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Iterable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_mixpanel.config import OUTPUT_CONSOLE
from otel_mixpanel.exporter import MixpanelSpanExporter

_EVENT_PATHS = ("/track", "/import")
_PATHS = {"imports": "/import", "people": "/engage", "groups": "/groups"}


class Record:
    """One record as it would be sent: the Mixpanel API ``path`` and the JSON ``body``."""

    __slots__ = ("path", "body")

    def __init__(self, path: str, body: dict[str, Any]) -> None:
        self.path = path
        self.body = body

    def __repr__(self) -> str:
        return f"Record({self.path!r}, {self.body!r})"


class _CapturingSender:
    """A consumer that keeps every record, parsed, in order."""

    def __init__(self, events_path: str) -> None:
        self._events_path = events_path
        self._lock = threading.Lock()
        self.records: list[Record] = []

    def send(self, endpoint: str, json_message: str, api_key: Any = None, api_secret: Any = None) -> None:
        self.send_many([(endpoint, json_message)])

    def send_many(self, messages: Iterable[tuple[str, str]], *, prevalidated: bool = False) -> None:
        records: list[Record] = []
        for endpoint, message in messages:
            parsed = json.loads(message)
            path = self._events_path if str(endpoint) == "events" else _PATHS.get(str(endpoint), f"/{endpoint}")
            records.extend(Record(path, body) for body in (parsed if isinstance(parsed, list) else [parsed]))
        with self._lock:
            self.records.extend(records)

    def flush(self, timeout_millis: float | None = None) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        pass


class MixpanelCapture:
    """The events and profile updates the application's spans convert to, as Mixpanel would receive them.

    Keyword arguments are exporter settings (``id_merge="original"``, ``page_views=False``...); the
    others come from ``OTEL_EXPORTER_MIXPANEL_*``, as in the application. No token is needed.
    """

    def __init__(self, **settings: Any) -> None:
        # Console output: an exporter that is on without credentials and starts no delivery; its sender
        # is then replaced by the capturing one, so nothing is printed either.
        self.exporter = MixpanelSpanExporter(output=OUTPUT_CONSOLE, **settings)
        self._sender = _CapturingSender("/import" if self.exporter.settings.uses_import else "/track")
        self.exporter._sender = self._sender
        self.span_processor: SpanProcessor = SimpleSpanProcessor(self.exporter)

    @property
    def records(self) -> list[Record]:
        """Every record so far, events and profile updates, in the order they were handed over."""
        with self._sender._lock:
            return list(self._sender.records)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events (``{"event": name, "properties": {...}}``) so far."""
        return [record.body for record in self.records if record.path in _EVENT_PATHS]

    @property
    def profile_updates(self) -> list[dict[str, Any]]:
        """The ``/engage`` updates (``{"$distinct_id": ..., "$set": {...}}``) so far."""
        return [record.body for record in self.records if record.path == "/engage"]

    def event_names(self) -> list[str]:
        return [event["event"] for event in self.events]

    def events_named(self, name: str) -> list[dict[str, Any]]:
        """The properties of each event called ``name``."""
        return [event["properties"] for event in self.events if event["event"] == name]

    def flush(self) -> None:
        """Convert what still waits for its request's server span, with the context known so far."""
        self.exporter.shutdown()

    def clear(self) -> None:
        with self._sender._lock:
            self._sender.records.clear()


class CaptureRouter(SpanProcessor):
    """A span processor added once to a tracer provider that forwards to the capture of the running test."""

    def __init__(self) -> None:
        self.current: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        current = self.current
        if current is not None:
            current.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        current = self.current
        if current is not None:
            current.on_end(span)

    def shutdown(self) -> None:
        self.current = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
