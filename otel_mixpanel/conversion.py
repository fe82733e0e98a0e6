"""What ``export()`` does for each request: its local trace -> request facts -> context -> messages -> JSON.

Apart from exporter.py, whose exporter subclasses the SDK's ``SpanExporter`` and stays Python code, so that the
loop run for every request is compiled with the steps it calls (otel_mixpanel/compiled.py).
"""

from __future__ import annotations

from typing import Callable

from opentelemetry.sdk.trace import ReadableSpan

from otel_mixpanel.admission import Admission, dumps
from otel_mixpanel.advice import no_identity_advice
from otel_mixpanel.assembly import LocalTrace
from otel_mixpanel.config import Settings
from otel_mixpanel.context import enrich_request, read_request
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.events import EVENTS, KEPT, EventBuilder, Message
from otel_mixpanel.hooks import BeforeSend
from otel_mixpanel.page_views import UNRECORDED_HEADERS_ADVICE, headers_unrecorded

# The exporter's warning said once per kind: (kind, message, exc_info).
WarnOnce = Callable[[str, str, bool], None]


class Conversion:
    """Local traces to the (endpoint, JSON) records the sender keeps. Never raises for one trace's data."""

    def __init__(self, settings: Settings, before_send: BeforeSend | None, admission: Admission,
                 events_endpoint: Endpoint, warn_once: WarnOnce) -> None:
        self._settings = settings
        self._sensitive = frozenset(settings.redact_query_params)
        self.builder = EventBuilder(settings)
        self._before_send = before_send
        self._admission = admission
        self._events_endpoint = events_endpoint
        self._warn_once = warn_once

    def records(self, traces: list[LocalTrace]) -> list[tuple[str, str]]:
        serialised: list[tuple[str, str]] = []
        # One reading of the clock for the batch: its events are checked against the same "now".
        now_ms = self._admission.now_ms()
        for trace in traces:
            try:
                serialised.extend(self.serialise(self.messages(trace), now_ms))
            except Exception:
                # One trace's odd data must not cost the others their events.
                self._warn_once("convert", "A request's spans could not be converted; its events are skipped", True)
        return serialised

    def messages(self, trace: LocalTrace) -> list[Message]:
        facts = read_request(trace, self._settings)
        if headers_unrecorded(facts.http, facts.user_agent.is_automated, self._settings):
            self._warn_once("page-view-headers", UNRECORDED_HEADERS_ADVICE, False)
        builder = self.builder
        page_view = builder.page_view(facts)
        if not builder.may_produce(trace, facts, page_view):
            # An API call without business events, an asset, a crawler: nothing to enrich.
            return []
        context = enrich_request(facts, self._settings, self._sensitive)
        messages = builder.messages(trace, context, page_view)
        # Automated clients (health checkers, scripts) are given no device id on purpose.
        if messages and not context.device_id and not context.user_id and not context.is_automated:
            self._warn_once("identity", no_identity_advice(_scope_name(context.server_span)), False)
        return messages

    def serialise(self, messages: list[Message], now_ms: int) -> list[tuple[str, str]]:
        serialised: list[tuple[str, str]] = []
        for message in messages:
            body = message.body
            if self._before_send is not None:
                hooked = self._before_send(body, message.endpoint.value)
                if hooked is None:
                    continue
                body = hooked
            if message.endpoint == EVENTS:
                text = self._admission.event_json(body, KEPT, now_ms)
                if text is not None:
                    serialised.append((self._events_endpoint, text))
            else:
                serialised.append((message.endpoint, dumps(body).decode()))
        return serialised


def _scope_name(server_span: ReadableSpan | None) -> str | None:
    """The server span's instrumentation ("" when unnamed), or None when the trace has no server span."""
    if server_span is None:
        return None
    scope = server_span.instrumentation_scope
    return scope.name if scope is not None else ""
