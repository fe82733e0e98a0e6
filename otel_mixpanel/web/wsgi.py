"""WSGI middleware: an anonymous device id for every browser, recorded on the server span.

Wrap the application on either side of OpenTelemetry's WSGI middleware (or of what
FlaskInstrumentor wraps); both orders work. Inside it, the server span is current when
the middleware is called. Outside it, there is no span yet at that moment, so the
attributes are written when the application calls ``start_response``, which happens
while the span is current.
"""

from __future__ import annotations

import inspect
from contextvars import Token
from typing import Any, Callable, Iterable, Iterator

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from otel_mixpanel.baggage_ids import attach_carried, attach_request, carried_ids, device_id_to_carry
from otel_mixpanel.web.attributes import content_type_of, record_request, record_response_content_type
from otel_mixpanel.web.device_id import ENVIRON_KEY, DeviceIdOptions, DeviceState, _current, resolve_device
from otel_mixpanel.web.first_touch import FirstTouchState, record_first_touch, resolve_first_touch
from otel_mixpanel.web.js_cookie import announce_hybrid
from otel_mixpanel.web.response import response_cookies

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MixpanelMiddleware:
    """``app = MixpanelMiddleware(app, **options)``; options are those of ``DeviceIdOptions``."""

    def __init__(self, app: WSGIApp, **options: Any) -> None:
        if _is_asgi(app):
            # Served by an ASGI server, a WSGI middleware would fail every request with a 500.
            raise TypeError(f"{app!r} is an ASGI application: use otel_mixpanel.web.asgi.MixpanelMiddleware "
                            "(FastAPI/Starlette: app.add_middleware(MixpanelMiddleware)); see docs/web.md")
        self.app = app
        self.options = DeviceIdOptions.build(**options)
        announce_hybrid(self.options)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        state = resolve_device(environ, self.options)
        touch = resolve_first_touch(environ.get("HTTP_COOKIE"), environ.get("HTTP_REFERER"),
                                    environ.get("QUERY_STRING"), self.options,
                                    may_set_cookie=state.keeps_cookies)
        environ[ENVIRON_KEY] = state
        span = record_on_current_span(environ, state, touch)

        def _start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            nonlocal span
            span = span or record_on_current_span(environ, state, touch)
            if span is not None:
                record_response_content_type(span, content_type_of(headers))
            device_cookie = state.set_cookie_header(self.options) if state.cookie_needed else None
            if device_cookie:
                headers = [*headers, ("Set-Cookie", device_cookie)]
            extra = response_cookies(environ.get("HTTP_COOKIE"), state, touch, self.options)
            if extra:
                headers = [*headers, *(("Set-Cookie", cookie.header()) for cookie in extra)]
            return start_response(status, headers, *exc_info)

        # Inside the instrumentation, the context can be set around each step of the body (below);
        # outside it, the instrumentation's body holds its span's context across steps, which ours must not cut.
        inside_instrumentation = span is not None
        token = _current.set(state)
        carried = attach_request(device_id_to_carry(state, self.options))
        try:
            body = self.app(environ, _start_response)
            ids = carried_ids() if inside_instrumentation else None
        finally:
            context.detach(carried)
            _current.reset(token)
        if isinstance(body, (list, tuple)) or _is_file_wrapper(body, environ):
            # No application code runs while these are sent (and servers send a file wrapper with sendfile).
            return body
        return _BodyWithDevice(body, state, ids)


def _is_asgi(app: object) -> bool:
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None))


def _is_file_wrapper(body: object, environ: dict[str, Any]) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(body, wrapper)


class _BodyWithDevice:
    """The application's response iterable, with the request's device id current while it runs.

    A streaming body (a generator, a framework's streamed response) runs application code
    after the application returned, as opentelemetry-instrumentation-wsgi keeps the span
    current for it. The device id (and the request's ids in the baggage) is set around each step rather than across the whole
    iteration, so that it is always reset in the context that set it, whichever thread
    the server closes the response from. ``close()`` is always passed on (PEP 3333).
    """

    def __init__(self, body: Iterable[bytes], state: DeviceState, ids: dict[str, str] | None) -> None:
        self._body = body
        self._state = state
        # The request's ids in the baggage, for jobs enqueued while the body is produced; None: context untouched.
        self._ids = ids

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._body)
        while True:
            token, carried = _current.set(self._state), self._attach_ids()
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                self._detach_ids(carried)
                _current.reset(token)
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is None:
            return
        token, carried = _current.set(self._state), self._attach_ids()
        try:
            close()
        finally:
            self._detach_ids(carried)
            _current.reset(token)

    def _attach_ids(self) -> Token[Context] | None:
        return attach_carried(self._ids) if self._ids is not None else None

    @staticmethod
    def _detach_ids(carried: Token[Context] | None) -> None:
        if carried is not None:
            context.detach(carried)


def record_on_current_span(environ: dict[str, Any], state: DeviceState,
                            touch: FirstTouchState | None) -> Span | None:
    """The request's span, with the request recorded on it; None while there is none yet."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    record_request(span, environ, state.request_device_id)
    record_first_touch(span, touch)
    return span
