"""Hybrid set-ups: the Mixpanel JavaScript SDK's cookie, written on a new visitor's first response.

Without it, the first page's server events carry the server's device id while the SDK,
finding no cookie of its own, makes another: the first page view, with its referrer
and UTM tags, stays on an id that nothing else uses. Writing the SDK's cookie the way it
writes it lets the SDK start on the server's id.

Followed: mixpanel-browser 2.83.0. ``MixpanelPersistence`` names the cookie
``mp_<token>_mixpanel`` (``mp_<persistence_name>`` when configured) and stores
``encodeURIComponent(JSON.stringify(props))``; ``_.cookie.get`` reads it back with
``decodeURIComponent`` and parses the JSON. At ``init`` the SDK keeps a stored
``distinct_id`` (it generates ``{"distinct_id": "$device:<uuid>", "$device_id": "<uuid>"}``
only when there is none), and ``update_referrer_info`` registers ``$initial_referrer`` /
``$initial_referring_domain`` only when they are missing, so it takes ours as they are.

The cookie is written host-only, ``Path=/``, not ``HttpOnly``: the SDK reads it from
``document.cookie``, and on its first load removes the host-only cookie and writes it again
under its own domain rules (``cross_subdomain_cookie``, ``cookie_domain``), expiry and
``secure_cookie``. An existing SDK cookie is never overwritten, whatever it holds.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping
from urllib.parse import quote

from otel_mixpanel.config import ENV_PREFIX
from otel_mixpanel.enrich.first_touch import INITIAL_REFERRER, INITIAL_REFERRING_DOMAIN
from otel_mixpanel.enrich.identity import distinct_id
from otel_mixpanel.web.cookies import SetCookie
from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState, parse_cookies
from otel_mixpanel.web.first_touch import MAX_REFERRER_CHARS, FirstTouchState

logger = logging.getLogger("otel_mixpanel.web")

# encodeURIComponent's unescaped characters, less "(" and ")", which some servers' cookie
# writers (Django's) would put the value in quotes for; decodeURIComponent reads %28/%29 alike.
_URI_COMPONENT_SAFE = "-_.!~*'"


def js_cookie_properties(device_id: str, first_touch: FirstTouchState | None,
                         referrer_limit: int = MAX_REFERRER_CHARS) -> dict[str, Any]:
    """The properties the SDK's cookie starts with: the server's device id and the browser's first touch.

    ``distinct_id`` is the one the server's own anonymous events carry: ``$device:<id>``, as the
    SDK makes it in either ID Merge mode, so that both sides' anonymous events share one distinct_id.
    """
    properties: dict[str, Any] = {"distinct_id": distinct_id(device_id, None), "$device_id": device_id}
    if first_touch is not None and referrer_limit > 0:
        properties[INITIAL_REFERRER] = first_touch.touch.referrer[:referrer_limit]
        properties[INITIAL_REFERRING_DOMAIN] = first_touch.touch.referring_domain[:referrer_limit]
    return properties


def encode_js_cookie(properties: dict[str, Any]) -> str:
    """``encodeURIComponent(JSON.stringify(properties))``, as the SDK's ``_.cookie.set`` writes it."""
    return quote(json.dumps(properties, separators=(",", ":")), safe=_URI_COMPONENT_SAFE)


# Browsers drop a cookie past 4096 bytes: the first touch is cut, or left to the SDK, to stay well within.
_MAX_VALUE = 3500
_REFERRER_LIMITS = (MAX_REFERRER_CHARS, 255, 0)


def js_sdk_cookie(cookie_header: object, device: DeviceState, first_touch: FirstTouchState | None,
                  options: DeviceIdOptions) -> SetCookie | None:
    """The SDK's cookie for this response, when ``write_js_cookie`` is on and the browser has none.

    None as well for a request that gets no device cookie. After ``reset_device_id()`` the new
    id is written, without the old first touch.
    """
    name = options.js_cookie
    if not options.write_js_cookie or name is None or name in parse_cookies(cookie_header):
        return None
    if not device.keeps_cookies or device.device_id is None:
        return None
    reset = device.device_id != device.request_device_id
    for limit in _REFERRER_LIMITS:
        properties = js_cookie_properties(device.device_id, None if reset else first_touch, limit)
        value = encode_js_cookie(properties)
        if len(value) <= _MAX_VALUE:
            break
    return SetCookie(name, value, options.max_age, "/", None,
                     options.secure_for(device.secure_request), httponly=False,
                     samesite=options.samesite.capitalize())


_FALSE = ("0", "false", "no", "off")
_announced: set[str] = set()


def page_view_advice(options: DeviceIdOptions, environ: Mapping[str, str]) -> tuple[int, str] | None:
    """Which side tracks page views in a hybrid set-up, as a log level and message; None when not hybrid.

    The server cannot see the SDK's ``mixpanel.init`` options, so ``js_tracks_page_views`` states
    them; the exporter's side is read from ``OTEL_EXPORTER_MIXPANEL_PAGE_VIEWS`` (default: on).
    """
    if not options.write_js_cookie and options.js_tracks_page_views is None:
        return None
    server = (environ.get(ENV_PREFIX + "PAGE_VIEWS") or "").strip().lower() not in _FALSE
    js = options.js_tracks_page_views
    if server and js:
        return logging.WARNING, (f"Page views are tracked twice: by the exporter ({ENV_PREFIX}PAGE_VIEWS "
                                 "is on) and by the Mixpanel JavaScript SDK (js_tracks_page_views=True). Set "
                                 f"{ENV_PREFIX}PAGE_VIEWS=false, or turn track_pageview off in "
                                 "mixpanel.init and say js_tracks_page_views=False.")
    if server and js is None:
        return logging.WARNING, (f"The exporter tracks page views ({ENV_PREFIX}PAGE_VIEWS): keep "
                                 "track_pageview and autocapture's pageview off in mixpanel.init, or each page "
                                 "view counts twice. Say js_tracks_page_views=False to confirm and silence this.")
    if not server and js is None:
        return logging.WARNING, ("The exporter leaves page views to the Mixpanel JavaScript SDK "
                                 f"({ENV_PREFIX}PAGE_VIEWS=false): turn track_pageview on in "
                                 "mixpanel.init, and say js_tracks_page_views=True to confirm and silence this.")
    if not server and js is False:
        return logging.WARNING, (f"No side tracks page views: {ENV_PREFIX}PAGE_VIEWS=false and "
                                 "js_tracks_page_views=False.")
    return logging.INFO, f"Page views are tracked by {'the exporter' if server else 'the Mixpanel JavaScript SDK'}."


def announce_hybrid(options: DeviceIdOptions, environ: Mapping[str, str] | None = None) -> None:
    """Log ``page_view_advice`` once per process and message, when the middleware is built."""
    advice = page_view_advice(options, os.environ if environ is None else environ)
    if advice is not None and advice[1] not in _announced:
        _announced.add(advice[1])
        logger.log(*advice)
