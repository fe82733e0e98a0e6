"""What a spool file remembers about itself: whose records it holds, and how delivery went.

Kept in the file's ``meta`` table (key, value) so that ``otel-mixpanel status`` can show it
from another process, and so that a process whose credentials were fixed can recognise the
records its application spooled under the wrong ones (see ``adoption``). No secret is ever
written: the project is a digest, as in the file's name.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource

from otel_mixpanel.config import Settings

META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"

# Keys of the meta table.
ENDPOINT = "endpoint"
PROJECT = "project"
APPLICATION = "application"
LAST_ERROR = "last_error"
LAST_ERROR_AT = "last_error_at"
CREDENTIALS_REFUSED = "credentials_refused"
DELIVERED_AT = "delivered_at"
MOVED_TO = "moved_to"
MOVED_AT = "moved_at"
DISK_CHECKED_AT = "disk_checked_at"  # the write that tells a full disk has room again

# "Mixpanel took records at" is refreshed at most this often (each refresh is a write).
DELIVERED_NOTE_INTERVAL_S = 60.0


@dataclass(frozen=True)
class SpoolIdentity:
    """Whose records a spool holds: the endpoint, the project (a digest), the application (a digest)."""

    endpoint: str
    project: str
    application: str
    # The configured project token, written into records taken over from a spool of the same
    # application that held them under a refused one. Never stored, never shown.
    token: str | None = field(default=None, repr=False)

    def values(self) -> dict[str, str]:
        return {ENDPOINT: self.endpoint, PROJECT: self.project, APPLICATION: self.application}


def project_digest(settings: Settings) -> str:
    """The endpoint and the project identity (token, project id, service account user), hashed."""
    identity = "\n".join(
        [settings.endpoint, settings.token or "", settings.project_id or "", settings.service_account_username or ""]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def application_digest() -> str:
    """This application on this host: its OpenTelemetry ``service.name`` when one is set in the
    environment, else its working directory and command line. It survives fixing a credential."""
    service = str(Resource.create().attributes.get("service.name", ""))
    if service and not service.startswith("unknown_service"):
        parts = ["service", service]
    else:
        parts = ["command", os.getcwd(), *sys.argv]
    text = "\n".join([socket.gethostname(), *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_for(settings: Settings) -> SpoolIdentity:
    return SpoolIdentity(settings.endpoint, project_digest(settings), application_digest(), settings.token)


def read_meta(db: sqlite3.Connection) -> dict[str, str]:
    """The meta table's values (empty for a spool written before it existed)."""
    try:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:
        return {}


def write_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


class DeliveryNotes:
    """Decides which delivery outcomes are worth a write to the meta table: each new error once,
    and a success after an error or once a minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_error: tuple[str, bool] | None = None
        self._delivered_noted: float | None = None

    def error(self, message: str, credentials: bool) -> dict[str, str] | None:
        with self._lock:
            if self._last_error == (message, credentials):
                return None
            self._last_error = (message, credentials)
        values = {LAST_ERROR: message, LAST_ERROR_AT: f"{time.time():.3f}"}
        if credentials:
            values[CREDENTIALS_REFUSED] = "1"
        return values

    def delivered(self) -> dict[str, str] | None:
        now = time.monotonic()
        with self._lock:
            recent = self._delivered_noted is not None and now - self._delivered_noted < DELIVERED_NOTE_INTERVAL_S
            if self._last_error is None and recent:
                return None
            self._last_error, self._delivered_noted = None, now
        return {DELIVERED_AT: f"{time.time():.3f}", CREDENTIALS_REFUSED: "0"}
