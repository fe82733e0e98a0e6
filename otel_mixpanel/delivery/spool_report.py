"""What ``otel-mixpanel status`` shows: every spool file in a directory, read without changing it."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from otel_mixpanel.delivery.spool_db import EndpointState, endpoint_states
from otel_mixpanel.delivery.spool_files import CORRUPT_MARK, list_spool_files
from otel_mixpanel.delivery.spool_meta import (
    CREDENTIALS_REFUSED,
    DELIVERED_AT,
    LAST_ERROR,
    LAST_ERROR_AT,
    MOVED_AT,
    MOVED_TO,
    read_meta,
)


@dataclass
class SpoolReport:
    """One spool file: its records, and what it remembers of delivery (ages in seconds)."""

    path: str
    current: bool = False
    corrupt: bool = False
    unreadable: str | None = None
    endpoints: list[EndpointState] = field(default_factory=list)
    last_error: str | None = None
    last_error_age_s: float | None = None
    credentials_refused: bool = False
    last_delivery_age_s: float | None = None
    moved_to: str | None = None
    moved_age_s: float | None = None

    @property
    def events(self) -> int:
        return sum(item.events for item in self.endpoints)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.endpoints)

    @property
    def oldest_age_s(self) -> float | None:
        return max((item.oldest_age_s for item in self.endpoints), default=None)

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        values.update(events=self.events, bytes=self.bytes, oldest_age_s=self.oldest_age_s)
        return values


def describe(path: str, current: bool = False) -> SpoolReport:
    report = SpoolReport(path, current=current, corrupt=CORRUPT_MARK in os.path.basename(path))
    if os.path.islink(path):
        report.unreadable = "a symbolic link (never opened)"
        return report
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as error:
        report.unreadable = str(error)
        return report
    try:
        report.endpoints = endpoint_states(db)
        _add_meta(report, read_meta(db))
    except sqlite3.Error as error:
        report.unreadable = str(error)
    finally:
        db.close()
    return report


def _add_meta(report: SpoolReport, meta: dict[str, str]) -> None:
    now = time.time()

    def age(key: str) -> float | None:
        return max(0.0, now - float(meta[key])) if key in meta else None

    report.last_error = meta.get(LAST_ERROR)
    report.last_error_age_s = age(LAST_ERROR_AT)
    report.credentials_refused = meta.get(CREDENTIALS_REFUSED) == "1"
    report.last_delivery_age_s = age(DELIVERED_AT)
    report.moved_to = meta.get(MOVED_TO)
    report.moved_age_s = age(MOVED_AT)


def describe_directory(directory: str, current: str | None) -> list[SpoolReport]:
    """Every spool file in ``directory``: the one ``current`` names first, then by name."""
    paths = list_spool_files(directory)
    if current is not None and os.path.exists(current) and current not in paths:
        paths.append(current)
    reports = [describe(path, current=path == current) for path in paths]
    return sorted(reports, key=lambda report: (not report.current, report.path))
