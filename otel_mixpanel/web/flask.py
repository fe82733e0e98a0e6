"""Flask: ``MixpanelFlask(app)`` (or ``MixpanelFlask().init_app(app)``) wraps ``app.wsgi_app``.

Works before or after ``FlaskInstrumentor`` (``instrument_app`` or the global
``instrument()`` used by ``opentelemetry-instrument``): the Flask span is current when
Flask calls ``start_response``, where the middleware records its attributes.
"""

from __future__ import annotations

from typing import Any

from otel_mixpanel.web.wsgi import MixpanelMiddleware

EXTENSION_KEY = "otel_mixpanel"


class MixpanelFlask:
    def __init__(self, app: Any = None, **options: Any) -> None:
        self.options = options
        self.middleware: MixpanelMiddleware | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("MixpanelFlask is already set up on this app")
        self.middleware = MixpanelMiddleware(app.wsgi_app, **self.options)
        app.wsgi_app = self.middleware
        app.extensions[EXTENSION_KEY] = self
