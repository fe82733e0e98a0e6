"""Senders that never touch the network: the development printer, and the switched-off discarder.

``OTEL_EXPORTER_MIXPANEL_OUTPUT=console`` (or ``file:<path>``) swaps the delivering sender for a
``PrintingSender``: the exporter converts exactly as it would for Mixpanel, and each event and
profile update becomes one JSON line, ``{"path": "/import", "record": {...}}``, with the project
token masked. Nothing is spooled, no thread is started, no credentials are needed.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any, Iterable, Protocol, TextIO

from otel_mixpanel.config import ENV_PREFIX, OUTPUT_CONSOLE, OUTPUT_FILE_PREFIX, ConfigError, Settings
from otel_mixpanel.delivery.consumer import BadMessage, records_from
from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.delivery.routes import route_for

logger = logging.getLogger("otel_mixpanel.delivery")

_MASK = "***"


class Sender(Protocol):
    """What the exporter hands records to: the delivering sender, or one of the two below."""

    def send(self, endpoint: str, json_message: str, api_key: Any = None, api_secret: Any = None) -> None: ...

    def send_many(self, messages: Iterable[tuple[str, str]], *, prevalidated: bool = False) -> None: ...

    def flush(self, timeout_millis: float | None = None) -> bool: ...

    def shutdown(self, timeout_millis: float = 30_000) -> None: ...


class PrintingSender:
    """A Mixpanel consumer (``send``/``flush``) that writes each record as a JSON line instead of sending it."""

    def __init__(self, settings: Settings) -> None:
        # The Mixpanel API path each endpoint's records would go to with these credentials.
        self._paths = {endpoint: route_for(settings, endpoint).path for endpoint in Endpoint}
        self._lock = threading.Lock()
        self._target = settings.output
        # None: the console, looked up at each write, so a redirected sys.stderr is honoured.
        self._file = _open_file(settings.output) if settings.output != OUTPUT_CONSOLE else None
        self._closed = False

    def __repr__(self) -> str:
        return f"PrintingSender(output={self._target!r})"

    @property
    def output(self) -> str:
        """``console`` or ``file:<path>``, as configured."""
        return self._target

    def send(self, endpoint: str, json_message: str, api_key: Any = None, api_secret: Any = None) -> None:
        """Print one message (a JSON object, or an array of them) meant for ``endpoint``."""
        self.send_many([(endpoint, json_message)])

    def send_many(self, messages: Iterable[tuple[str, str]], *, prevalidated: bool = False) -> None:
        """Print each record as the delivering sender would spool it (see ``consumer``); never raises for content."""
        lines: list[str] = []
        for name, message in messages:
            endpoint = Endpoint.named(name)
            try:
                bodies = records_from(endpoint, message)
            except BadMessage as error:
                logger.warning("Mixpanel output: a message that could never be delivered is skipped (%s)", error)
                continue
            lines.extend(self._line(self._paths[endpoint], json.loads(body)) for body in bodies)
        if not lines:
            return
        with self._lock:
            if self._closed:
                return
            stream = self._file or sys.stderr
            stream.write("".join(lines))
            stream.flush()

    def _line(self, path: str, record: dict[str, Any]) -> str:
        return json.dumps({"path": path, "record": self._masked(record)}, ensure_ascii=False) + "\n"

    def _masked(self, record: dict[str, Any]) -> dict[str, Any]:
        # The token is a credential: what is printed must be safe to paste into an issue.
        if record.get("$token"):
            record = {**record, "$token": _MASK}
        properties = record.get("properties")
        if isinstance(properties, dict) and properties.get("token"):
            record = {**record, "properties": {**properties, "token": _MASK}}
        return record

    def flush(self, timeout_millis: float | None = None) -> bool:
        return True

    force_flush = flush

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()


class DiscardingSender:
    """The switched-off exporter's consumer: takes every message and keeps none."""

    def __repr__(self) -> str:
        return "DiscardingSender()"

    def send(self, endpoint: str, json_message: str, api_key: Any = None, api_secret: Any = None) -> None:
        pass

    def send_many(self, messages: Iterable[tuple[str, str]], *, prevalidated: bool = False) -> None:
        pass

    def flush(self, timeout_millis: float | None = None) -> bool:
        return True

    force_flush = flush

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        pass


def _open_file(output: str) -> TextIO:
    path = output[len(OUTPUT_FILE_PREFIX):]
    try:
        # Appending, flushed after each batch: several processes (a pre-forking server's workers) can share it.
        return open(path, "a", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{ENV_PREFIX}OUTPUT={output!r}: cannot open the file for appending ({error.strerror})") \
            from None

