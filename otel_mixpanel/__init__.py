"""otel-mixpanel: product analytics in Mixpanel from OpenTelemetry spans.

``import otel_mixpanel`` loads only what application code calls (``track``, ``identify``...):
the exporter, with the SDK's export machinery and the conversion, loads on first use of
``MixpanelSpanExporter``, ``Settings`` or ``ConfigError``, and delivery (SQLite, HTTP) only
when an exporter that sends is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from otel_mixpanel.api import identify, set_group, set_group_profile, set_profile, set_user, track
from otel_mixpanel.version import __version__

if TYPE_CHECKING:
    from otel_mixpanel.config import ConfigError, Settings
    from otel_mixpanel.exporter import MixpanelSpanExporter

_LAZY = {
    "ConfigError": "otel_mixpanel.config",
    "Settings": "otel_mixpanel.config",
    "MixpanelSpanExporter": "otel_mixpanel.exporter",
}

__all__ = [
    "ConfigError",
    "MixpanelSpanExporter",
    "Settings",
    "__version__",
    "identify",
    "set_group",
    "set_group_profile",
    "set_profile",
    "set_user",
    "track",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups find it without coming here
        return value
    raise AttributeError(f"module 'otel_mixpanel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
