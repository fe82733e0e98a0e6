"""Delivery to Mixpanel: a durable spool, batching, retries, and a background thread.

``create_sender(settings)`` returns a ``MixpanelSender``, which is also a consumer for
``mixpanel.Mixpanel(token, consumer=sender)``. See ``docs/delivery.md``.
"""

from otel_mixpanel.delivery.endpoints import Endpoint
from otel_mixpanel.delivery.sender import MixpanelSender, SenderStats, create_sender

__all__ = ["Endpoint", "MixpanelSender", "SenderStats", "create_sender"]
