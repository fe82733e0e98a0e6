"""ASGI middleware: what ``otel_mixpanel.web.MixpanelMiddleware`` does for WSGI, for ASGI apps.

FastAPI and Starlette: ``app.add_middleware(MixpanelMiddleware)``; any other ASGI app:
``app = MixpanelMiddleware(app)``. Keyword options are those of ``DeviceIdOptions``.

Either side of OpenTelemetry's ASGI middleware works. Inside it (``add_middleware``
puts it there, as FastAPIInstrumentor wraps the whole middleware stack), the server
span is current when this middleware is called. Outside it there is no span yet, so
the attributes are written when the response starts: OpenTelemetry's ``send`` wrapper
calls the server's ``send`` with the server span current.

Lifespan and websocket scopes pass through untouched. The response body is never
read or buffered: only the ``http.response.start`` message gains a ``Set-Cookie``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import unquote_to_bytes

from opentelemetry import context, trace
from opentelemetry.semconv._incubating.attributes.http_attributes import HTTP_HOST
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS
from opentelemetry.trace import Span

from otel_mixpanel.baggage_ids import attach_request, device_id_to_carry
from otel_mixpanel.web.attributes import (
    MAX_HEADER_CHARS,
    content_type_of,
    record_response_content_type,
)
from otel_mixpanel.web.device_id import ENVIRON_KEY, DeviceIdOptions, DeviceState, _current, resolve_device
from otel_mixpanel.web.first_touch import FirstTouchState, resolve_first_touch
from otel_mixpanel.web.js_cookie import announce_hybrid
from otel_mixpanel.web.response import response_cookies
from otel_mixpanel.web.wsgi import record_on_current_span

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Headers WSGI names without the HTTP_ prefix (PEP 3333).
_CGI_NAMES = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class MixpanelMiddleware:
    """``app = MixpanelMiddleware(app, **options)``; options are those of ``DeviceIdOptions``."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.options = DeviceIdOptions.build(**options)
        announce_hybrid(self.options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        environ = request_environ(scope)
        state = resolve_device(environ, self.options)
        touch = resolve_first_touch(environ.get("HTTP_COOKIE"), environ.get("HTTP_REFERER"),
                                    environ.get("QUERY_STRING"), self.options,
                                    may_set_cookie=state.keeps_cookies)
        scope[ENVIRON_KEY] = state
        span = _record_on_current_span(environ, state, touch)

        async def send_with_cookie(message: Message) -> None:
            nonlocal span
            if message.get("type") == "http.response.start":
                span = span or _record_on_current_span(environ, state, touch)
                if span is not None:
                    record_response_content_type(span, content_type_of(message.get("headers") or ()))
                cookies = _set_cookie_headers(environ, state, touch, self.options)
                if cookies:
                    message = {**message, "headers": [*message.get("headers", ()), *cookies]}
            await send(message)

        token = _current.set(state)
        carried = attach_request(device_id_to_carry(state, self.options))
        try:
            await self.app(scope, receive, send_with_cookie)
        finally:
            context.detach(carried)
            _current.reset(token)


def request_environ(scope: Scope) -> dict[str, Any]:
    """The request as a WSGI server would describe it, for the functions shared with WSGI.

    Header names become ``HTTP_*`` keys, repeated headers are joined as RFC 9110 allows
    (cookies with "; "), and ``PATH_INFO`` is the path as a WSGI server gives it: the
    percent-decoded bytes of the raw path as latin-1 text.
    """
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.get("method") or "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": _wsgi_path(scope),
        "QUERY_STRING": _latin1(scope.get("query_string")),
        "wsgi.url_scheme": scope.get("scheme") or "http",
    }
    for raw_name, raw_value in scope.get("headers") or ():
        name = _latin1(raw_name).lower()
        value = _latin1(raw_value)
        key = _CGI_NAMES.get(name) or "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            value = f"{environ[key]}{'; ' if name == 'cookie' else ', '}{value}"
        environ[key] = value
    return environ


def _wsgi_path(scope: Scope) -> str:
    # raw_path is what the client sent, root path included; "path" is already decoded text.
    raw = scope.get("raw_path")
    if isinstance(raw, (bytes, bytearray)) and raw:
        return unquote_to_bytes(bytes(raw).partition(b"?")[0]).decode("latin-1") or "/"
    path = scope.get("path")
    return path.encode("utf-8", "surrogateescape").decode("latin-1") if isinstance(path, str) and path else "/"


def _latin1(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return value if isinstance(value, str) else ""


def _set_cookie_headers(environ: dict[str, Any], state: DeviceState, touch: FirstTouchState | None,
                        options: DeviceIdOptions) -> list[tuple[bytes, bytes]]:
    device_cookie = state.set_cookie_header(options) if state.cookie_needed else None
    values = [device_cookie] if device_cookie else []
    values.extend(cookie.header() for cookie in response_cookies(environ.get("HTTP_COOKIE"), state, touch, options))
    return [(b"set-cookie", value.encode("latin-1")) for value in values]


def _record_on_current_span(environ: dict[str, Any], state: DeviceState,
                            touch: FirstTouchState | None) -> Span | None:
    """As for WSGI, and the Host header where the ASGI instrumentation recorded the socket's address."""
    span = record_on_current_span(environ, state, touch)
    if span is not None:
        _record_host(span, environ)
    return span


def _record_host(span: Span, environ: dict[str, Any]) -> None:
    """The Host header as the page's host, where the instrumentation recorded the socket's address.

    opentelemetry-instrumentation-asgi records ``server.address``/``http.host`` from the
    listening socket (``127.0.0.1:8000`` behind any proxy); the WSGI instrumentation, and
    the semantic conventions, take the Host header, which is what the browser's address
    bar showed.
    """
    host = environ.get("HTTP_HOST")
    if not host:
        return
    recorded = getattr(span, "attributes", None) or {}
    for attribute in (SERVER_ADDRESS, HTTP_HOST):
        if attribute in recorded:
            span.set_attribute(attribute, host[:MAX_HEADER_CHARS])
