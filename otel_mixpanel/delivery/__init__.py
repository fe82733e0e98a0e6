"""Delivery to Mixpanel: a durable spool, batching, retries, and a background thread.

``create_sender(settings)`` returns a ``MixpanelSender``, which is also a consumer for
``mixpanel.Mixpanel(token, consumer=sender)``. See ``docs/delivery.md``.

The names below load ``delivery.sender`` (SQLite, requests) on first use, so that importing a
light submodule such as ``delivery.local`` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otel_mixpanel.delivery.endpoints import Endpoint

if TYPE_CHECKING:
    from otel_mixpanel.delivery.sender import MixpanelSender, SenderStats, create_sender

__all__ = ["Endpoint", "MixpanelSender", "SenderStats", "create_sender"]
_FROM_SENDER = ("MixpanelSender", "SenderStats", "create_sender")


def __getattr__(name: str) -> Any:
    if name in _FROM_SENDER:
        from otel_mixpanel.delivery import sender

        value = getattr(sender, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otel_mixpanel.delivery' has no attribute {name!r}")
