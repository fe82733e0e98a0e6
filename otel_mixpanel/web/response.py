"""The cookies a response sets besides the device id's, for every server integration (WSGI, Django, ASGI)."""

from __future__ import annotations

from otel_mixpanel.web.cookies import SetCookie
from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState
from otel_mixpanel.web.first_touch import FirstTouchState, first_touch_cookies
from otel_mixpanel.web.js_cookie import js_sdk_cookie


def response_cookies(cookie_header: object, device: DeviceState, first_touch: FirstTouchState | None,
                     options: DeviceIdOptions) -> list[SetCookie]:
    """The first-touch cookie when it changes, and the JS SDK's cookie in hybrid set-ups.

    Called when the response starts, after the handler ran (``reset_device_id()`` may have changed the id).
    """
    cookies = first_touch_cookies(first_touch, device, options)
    js_cookie = js_sdk_cookie(cookie_header, device, first_touch, options)
    if js_cookie is not None:
        cookies.append(js_cookie)
    return cookies
