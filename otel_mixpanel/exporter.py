"""The OpenTelemetry span exporter: spans in, Mixpanel events and profile updates out.

``export()`` only converts: spans -> local traces -> request context -> messages, then
hands the messages to the sender, which keeps them (durably by default) and delivers
them from its own thread. Nothing here waits on the network, and nothing raises into
the OpenTelemetry SDK.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_mixpanel.admission import TRACK_MAX_AGE_MS, Admission
from otel_mixpanel import sampling
from otel_mixpanel.assembly import LocalTrace, TraceAssembler
from otel_mixpanel.compiled import conversion_build
from otel_mixpanel.config import (
    OUTPUT_CONSOLE,
    OUTPUT_FILE_PREFIX,
    OUTPUT_MIXPANEL,
    SETTINGS_BY_NAME,
    Settings,
    TrustedProxies,
)
from otel_mixpanel.conversion import Conversion
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.delivery.local import DiscardingSender, Sender
from otel_mixpanel.events import EVENTS
from otel_mixpanel.hooks import BeforeSend, BeforeSendHook

logger = logging.getLogger("otel_mixpanel")

class MixpanelSpanExporter(SpanExporter):
    """Sends what spans say about requests and business events to Mixpanel.

    Every keyword argument but ``before_send`` is a setting of ``otel_mixpanel.config.SETTINGS``,
    documented in docs/configuration.md; one left as None comes from its ``OTEL_EXPORTER_MIXPANEL_*``
    environment variable, else its default. A text value is parsed as the variable would be.
    ``before_send(record, endpoint)`` (code only, ``otel_mixpanel.hooks``) may change or drop each
    event and profile or group update before it is kept for delivery.
    """

    def __init__(
        self,
        *,
        enabled: bool | str | None = None,
        output: str | None = None,
        token: str | None = None,
        endpoint: str | None = None,
        api_secret: str | None = None,
        service_account_username: str | None = None,
        service_account_secret: str | None = None,
        project_id: str | None = None,
        events_api: str | None = None,
        id_merge: str | None = None,
        anonymous_profiles: bool | str | None = None,
        page_views: bool | str | None = None,
        page_view_detection: str | None = None,
        page_view_event: str | None = None,
        page_view_include: Sequence[str] | str | None = None,
        page_view_exclude: Sequence[str] | str | None = None,
        static_extensions: Sequence[str] | str | None = None,
        excluded_events: Sequence[str] | str | None = None,
        included_events: Sequence[str] | str | None = None,
        super_properties: Mapping[str, Any] | str | None = None,
        track_bots: bool | str | None = None,
        browser_names: str | None = None,
        trusted_proxies: TrustedProxies | int | Sequence[str] | str | None = None,
        client_ip_header: str | None = None,
        forwarded_host: bool | str | None = None,
        ip_mode: str | None = None,
        redact_query_params: Sequence[str] | str | None = None,
        trace_wait_ms: int | str | None = None,
        spool: str | None = None,
        spool_dir: str | None = None,
        spool_max_events: int | str | None = None,
        spool_max_bytes: int | str | None = None,
        batch_size: int | str | None = None,
        max_request_bytes: int | str | None = None,
        schedule_delay_ms: int | str | None = None,
        timeout_ms: int | str | None = None,
        retry_initial_ms: int | str | None = None,
        retry_max_ms: int | str | None = None,
        compression: str | None = None,
        before_send: BeforeSendHook | None = None,
    ) -> None:
        arguments = {name: value for name, value in locals().items() if name in SETTINGS_BY_NAME}
        self._settings = Settings.load(arguments)
        self._before_send = BeforeSend(before_send) if before_send is not None else None
        self._assembler = TraceAssembler(self._settings.trace_wait_ms / 1000)
        self._admission = Admission(None if self._settings.uses_import else TRACK_MAX_AGE_MS)
        self._conversion = Conversion(self._settings, self._before_send, self._admission,
                                      Endpoint.IMPORTS if self._settings.uses_import else EVENTS, self._warn_once)
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()
        self._sampling_checked = False
        sampling.register_exporter(self)
        self._shut_down = False
        self._off = self._settings.off_reason is not None
        if self._off:
            logger.warning("Mixpanel export is off, spans are dropped: %s", self._settings.off_reason)
            self._sender: Sender = DiscardingSender()
        else:
            # Imported here: delivery (SQLite, requests) is needed only by an exporter that is on.
            from otel_mixpanel.delivery import create_sender

            self._sender = create_sender(self._settings)
            logger.info("%s", _destination(self._settings))

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def sender(self) -> Sender:
        """The consumer this exporter delivers through; ``mixpanel.Mixpanel(token, consumer=...)`` can share it."""
        return self._sender

    def __repr__(self) -> str:
        return f"MixpanelSpanExporter(endpoint={self._settings.endpoint!r}, id_merge={self._settings.id_merge!r})"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        if self._off:
            return SpanExportResult.SUCCESS
        try:
            if not self._sampling_checked:
                self._check_sampling()
            return self._hand_over(self._assembler.add(spans))
        except Exception:
            self._warn_once("export", "Spans could not be turned into Mixpanel events", exc_info=True)
            return SpanExportResult.FAILURE

    def _check_sampling(self) -> None:
        """Once, at the first export, when the tracer provider is set up: say if it keeps spans from us."""
        self._sampling_checked = True
        problem = sampling.sampling_problem(self)
        if problem:
            self._warn_once("sampling", problem)

    def _hand_over(self, traces: list[LocalTrace]) -> SpanExportResult:
        serialised = self._conversion.records(traces)
        if serialised:
            self._sender.send_many(serialised, prevalidated=True)
        return SpanExportResult.SUCCESS

    @property
    def before_send(self) -> BeforeSend | None:
        """The ``before_send`` hook as run: counts of the records it dropped and of those it failed on."""
        return self._before_send

    @property
    def admission(self) -> Admission:
        """Counts of events whose time was fixed, that were too old for /track, or trimmed to 1 MB."""
        return self._admission

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            return bool(self._sender.flush(timeout_millis=timeout_millis))
        except Exception:
            self._warn_once("flush", "Flushing Mixpanel events failed", exc_info=True)
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        if self._shut_down:
            return
        try:
            # Unsampled spans that an extra processor still holds (docs/sampling.md) come first.
            sampling.flush_feeders(self, timeout_millis)
            # Spans still waiting for their server span go out with the context they have.
            self._hand_over(self._assembler.drain())
        except Exception:
            self._warn_once("shutdown", "Events waiting for their request could not be handed over", exc_info=True)
        self._shut_down = True
        try:
            self._sender.shutdown(timeout_millis=timeout_millis)
        except Exception:
            self._warn_once("shutdown-sender", "Stopping Mixpanel delivery failed", exc_info=True)

    def _warn_once(self, kind: str, message: str, exc_info: bool = False) -> None:
        with self._warn_lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        logger.warning(message, exc_info=exc_info)


def _destination(settings: Settings) -> str:
    """Where records go, said once at start: the host (never a credential), the ID Merge mode, the spool."""
    if settings.output != OUTPUT_MIXPANEL:
        where = "stderr" if settings.output == OUTPUT_CONSOLE else settings.output[len(OUTPUT_FILE_PREFIX):]
        return (f"Mixpanel export in development output: nothing is sent, each event and profile update is "
                f"printed as a JSON line to {where}; ID Merge: {settings.id_merge}; conversion: {conversion_build()}")
    from otel_mixpanel.delivery.spool import spool_path

    parts = urlsplit(settings.endpoint)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    events = "/import" if settings.uses_import else "/track"
    spool = spool_path(settings) or "in memory (lost if the process dies)"
    return (f"Mixpanel export: events to {parts.scheme}://{host}{events}, profile updates to /engage; "
            f"ID Merge: {settings.id_merge}; spool: {spool}; conversion: {conversion_build()}")

