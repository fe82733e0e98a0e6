"""otel-mixpanel: product analytics in Mixpanel from OpenTelemetry spans."""

from otel_mixpanel.api import identify, set_profile, set_user, track
from otel_mixpanel.config import ConfigError, Settings
from otel_mixpanel.exporter import MixpanelSpanExporter
from otel_mixpanel.version import __version__

__all__ = [
    "ConfigError",
    "MixpanelSpanExporter",
    "Settings",
    "__version__",
    "identify",
    "set_profile",
    "set_user",
    "track",
]
