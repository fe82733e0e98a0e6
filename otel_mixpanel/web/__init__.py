"""Web apps: an anonymous device id per browser, recorded on the request's server span.

``MixpanelMiddleware`` (WSGI), ``otel_mixpanel.web.asgi.MixpanelMiddleware`` (ASGI:
FastAPI, Starlette), ``otel_mixpanel.web.flask.MixpanelFlask`` and
``otel_mixpanel.web.django.MixpanelMiddleware`` give each browser a UUIDv4 in a
first-party cookie (or reuse the Mixpanel JavaScript SDK's), and record on the server
span what the exporter needs: ``enduser.pseudo.id``, the Referer, the proxy headers,
and ``url.path``/``url.query`` when the instrumentation left them out. See docs/web.md.
"""

from otel_mixpanel.api import identify, set_profile, set_user, track
from otel_mixpanel.web.device_id import DeviceIdOptions, current_device_id, reset_device_id
from otel_mixpanel.web.wsgi import MixpanelMiddleware

__all__ = [
    "DeviceIdOptions",
    "MixpanelMiddleware",
    "current_device_id",
    "identify",
    "reset_device_id",
    "set_profile",
    "set_user",
    "track",
]
