"""Django: add ``"otel_mixpanel.web.django.MixpanelMiddleware"`` to ``MIDDLEWARE``.

Options come from the ``OTEL_MIXPANEL_WEB`` setting, a dict of ``DeviceIdOptions``
fields (e.g. ``{"cookie_name": "did", "domain": ".example.com"}``).

A WSGI middleware cannot serve Django: DjangoInstrumentor ends its span in its own
``process_response``, before Django calls ``start_response``. DjangoInstrumentor puts
its middleware first in ``MIDDLEWARE`` (``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION``
can move it), so this one runs inside it, while the request's span is current,
wherever it is listed. The same holds under ASGI (``get_asgi_application()`` served by
uvicorn, daphne or hypercorn), where this middleware runs async when the chain is async.
"""

from __future__ import annotations

from typing import Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from opentelemetry import context, trace

from otel_mixpanel.baggage_ids import attach_request, device_id_to_carry
from otel_mixpanel.web.attributes import record_request, record_response_content_type
from otel_mixpanel.web.device_id import ENVIRON_KEY, DeviceIdOptions, DeviceState, _current, resolve_device
from otel_mixpanel.web.first_touch import FirstTouchState, record_first_touch, resolve_first_touch
from otel_mixpanel.web.js_cookie import announce_hybrid
from otel_mixpanel.web.response import response_cookies

SETTINGS_NAME = "OTEL_MIXPANEL_WEB"


class MixpanelMiddleware:
    """Sync and async: under ASGI, with async views and an async middleware chain, no thread is spent on it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.options = DeviceIdOptions.build(**dict(getattr(settings, SETTINGS_NAME, None) or {}))
        announce_hybrid(self.options)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        state, touch = self._before(request)
        token, carried = _current.set(state), attach_request(device_id_to_carry(state, self.options))
        try:
            response = self.get_response(request)
        finally:
            context.detach(carried)
            _current.reset(token)
        return self._after(request, response, state, touch)

    async def _acall(self, request: Any) -> Any:
        state, touch = self._before(request)
        token, carried = _current.set(state), attach_request(device_id_to_carry(state, self.options))
        try:
            response = await self.get_response(request)
        finally:
            context.detach(carried)
            _current.reset(token)
        return self._after(request, response, state, touch)

    def _before(self, request: Any) -> tuple[DeviceState, FirstTouchState | None]:
        meta = request.META
        state = resolve_device(meta, self.options)
        touch = resolve_first_touch(meta.get("HTTP_COOKIE"), meta.get("HTTP_REFERER"), meta.get("QUERY_STRING"),
                                    self.options, may_set_cookie=state.keeps_cookies)
        meta[ENVIRON_KEY] = state
        span = trace.get_current_span()
        if span.is_recording():
            record_request(span, meta, state.request_device_id)
            record_first_touch(span, touch)
        return state, touch

    def _after(self, request: Any, response: Any, state: DeviceState, touch: FirstTouchState | None) -> Any:
        # The request's span is still current: the instrumentation ends it after this middleware returns.
        record_response_content_type(trace.get_current_span(), response.get("Content-Type"))
        if state.cookie_needed and state.device_id:
            response.set_cookie(
                self.options.cookie_name,
                state.device_id,
                max_age=self.options.max_age,
                path=self.options.path,
                domain=self.options.domain,
                secure=self.options.secure_for(state.secure_request),
                httponly=self.options.httponly,
                samesite=self.options.samesite.capitalize(),
            )
        for cookie in response_cookies(request.META.get("HTTP_COOKIE"), state, touch, self.options):
            response.set_cookie(**cookie.django_arguments())
        return response
