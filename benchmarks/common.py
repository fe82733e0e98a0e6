"""What every measurement shares: the token, the export batch, an exporter on a throw-away spool."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from otel_mixpanel import MixpanelSpanExporter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-token"
# What BatchSpanProcessor hands an exporter at most (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
EXPORT_BATCH = 512


def exporter_settings(url: str, spool_dir: str, **overrides: Any) -> dict[str, Any]:
    """Default delivery settings (SQLite spool, batches of 2000, gzip), but a short schedule delay:
    a final flush wakes the sender anyway, and short delays keep the sender busy while spans come in."""
    settings = {"token": TOKEN, "endpoint": url, "spool_dir": spool_dir, "schedule_delay_ms": 10}
    settings.update(overrides)
    return settings


class Spooled:
    """A MixpanelSpanExporter on a throw-away spool directory."""

    def __init__(self, url: str, **overrides: Any) -> None:
        self.directory = tempfile.mkdtemp(prefix="otel-mixpanel-bench-")
        self.exporter = MixpanelSpanExporter(**exporter_settings(url, self.directory, **overrides))

    def close(self) -> None:
        self.exporter.shutdown(timeout_millis=5_000)
        shutil.rmtree(self.directory, ignore_errors=True)
