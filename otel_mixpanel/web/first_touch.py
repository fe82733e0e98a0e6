"""A browser's first touch and current campaign: read from mixpanel-js's cookie, else kept in a cookie of our own.

mixpanel-js (followed: mixpanel-browser 2.83.0, see ``otel_mixpanel.enrich.first_touch``)
registers ``$initial_referrer`` and ``$initial_referring_domain`` once per browser in its
cookie, and queues ``initial_utm_*`` for the profile in the cookie's ``__mpso`` (its
pending ``people.set_once``) until ``identify()``. When that cookie has them, they win;
otherwise the middleware keeps the same facts in its own cookie, set on the first visit
(with the UTM parameters of the first visit that had any, as the SDK's queue keeps the
first value of each ``set_once``).

The same cookie keeps the browser's current campaign, as mixpanel-js 2.83.0 does with its defaults
(``store_google: true``, ``stop_utm_persistence: false``): at every page load ``_set_default_superprops``
calls ``register(_.info.campaignParams())``, which registers the ``utm_*`` parameters the page's URL has,
overwriting those stored under the same names and keeping the others (a merge: nothing is cleared), so
every later event carries the last value seen of each. Click ids are not stored (only page views carry
them). With ``stop_utm_persistence`` the SDK unregisters all ten at load, and so does this module.
Whatever that option says, ``update_search_keyword`` registers ``_.info.searchInfo(document.referrer)``
at every page load the same way: ``$search_engine`` of a search engine's referrer, and ``mp_keyword``
when it has the search's words (an older keyword stays when it has none).

Nothing here depends on WSGI: decisions take the Cookie header, Referer and query string,
and answer what to record on the span and which cookies to set.
"""

from __future__ import annotations

import base64
import binascii
import json
from functools import lru_cache
from typing import Any, Mapping, NamedTuple

from opentelemetry.trace import Span

from otel_mixpanel.enrich.campaign import CAMPAIGN_PARAMETERS, query_campaign_properties
from otel_mixpanel.enrich.first_touch import (
    CAMPAIGN_ATTRIBUTES,
    SEARCH_ATTRIBUTES,
    SEARCH_PROPERTIES,
    INITIAL_REFERRER,
    INITIAL_REFERRING_DOMAIN,
    INITIAL_UTM_KEYS,
    REFERRER_ATTRIBUTE,
    REFERRING_DOMAIN_ATTRIBUTE,
    INITIAL_UTM_PREFIX,
    initial_referrer,
)
from otel_mixpanel.enrich.referrer import search_info
from otel_mixpanel.web.cookies import SetCookie
from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState, js_cookie_data, parse_cookies

# Enough for any real referrer; keeps the cookie well inside browsers' 4 KB per cookie.
MAX_REFERRER_CHARS = 1024
MAX_UTM_CHARS = 255
# Past this the referrer and UTM values are cut harder (JSON escapes and base64 make a character up to 8 bytes).
_MAX_COOKIE_VALUE = 3500
_UTM_ATTRIBUTES = {key: f"otel_mixpanel.{key}" for key in INITIAL_UTM_KEYS}
# Ever shorter cuts of the referrer and the UTM values, until the value fits; the last always does.
_SHORTER = ((MAX_REFERRER_CHARS, MAX_UTM_CHARS), (255, 64), (32, 8), (32, 4))
_SET_ONCE_QUEUE = "__mpso"
_UTM_ORDER = {key: index for index, key in enumerate(INITIAL_UTM_KEYS)}
_CAMPAIGN_ORDER = {key: index for index, key in enumerate(CAMPAIGN_PARAMETERS)}
_CAMPAIGN_ATTRIBUTES = dict(zip(CAMPAIGN_PARAMETERS, CAMPAIGN_ATTRIBUTES))
_SEARCH_ORDER = {key: index for index, key in enumerate(SEARCH_PROPERTIES)}
_SEARCH_ATTRIBUTES = dict(zip(SEARCH_PROPERTIES, SEARCH_ATTRIBUTES))

Pairs = tuple[tuple[str, str], ...]


class FirstTouch(NamedTuple):
    referrer: str
    referring_domain: str
    # The non-empty initial_utm_* values, in the SDK's order; () when no visit had UTM parameters.
    utm: Pairs = ()
    # The browser's current utm_* values (the SDK's registered super properties), in the SDK's order.
    campaign: Pairs = ()
    # The browser's last $search_engine and mp_keyword, as the SDK registers them.
    search: Pairs = ()

    def as_properties(self) -> dict[str, str]:
        """The first touch, current campaign and search under mixpanel-js's property names."""
        return {INITIAL_REFERRER: self.referrer, INITIAL_REFERRING_DOMAIN: self.referring_domain, **dict(self.utm),
                **dict(self.campaign), **dict(self.search)}


class FirstTouchState(NamedTuple):
    touch: FirstTouch
    source: str  # "mixpanel-js", "cookie" or "new"
    # Set when our cookie must be (re)written with ``touch``.
    write_cookie: bool


def resolve_first_touch(cookie_header: object, referer: object, query: object, options: DeviceIdOptions,
                        may_set_cookie: bool = True) -> FirstTouchState | None:
    """The request's first touch: mixpanel-js's, else our cookie's, else this request's; None when turned off.

    Its ``campaign`` is the stored one (the SDK's, else our cookie's) with this URL's ``utm_*`` merged in, as
    the SDK registers them. ``may_set_cookie`` is False when the request gets no device cookie either (then it
    gets no first-touch cookie).
    """
    if not options.first_touch:
        return None
    cookies = parse_cookies(cookie_header)
    own = next(filter(None, map(_own_cookie, cookies.get(options.first_touch_cookie_name, ()))), None)
    from_js = next(filter(None, map(_from_js_cookie, js_cookie_data(cookies, options))), None)
    page = _campaign_of(query)
    searched = _search_of(referer)
    persist = not options.stop_utm_persistence
    if from_js is not None:
        touch = from_js._replace(campaign=_merge(from_js.campaign, page) if persist else (),
                                 search=_merge(from_js.search, searched, _SEARCH_ORDER))
        # Our cookie is only a fallback here, written once: the SDK's cookie is the one both sides follow.
        return FirstTouchState(touch, "mixpanel-js", may_set_cookie and own is None)
    if own is not None:
        if not page and not searched and (persist or not own.campaign):
            return FirstTouchState(own, "cookie", False)
        touch = own._replace(utm=own.utm or _initial(page), campaign=_merge(own.campaign, page) if persist else (),
                             search=_merge(own.search, searched, _SEARCH_ORDER))
        return FirstTouchState(touch, "cookie", may_set_cookie and touch != own)
    referrer, domain = initial_referrer(referer if isinstance(referer, str) else None)
    touch = FirstTouch(referrer[:MAX_REFERRER_CHARS], domain[:MAX_REFERRER_CHARS], _initial(page),
                       page if persist else (), searched)
    return FirstTouchState(touch, "new", may_set_cookie)


def _campaign_of(query: object) -> Pairs:
    """The URL's non-empty ``utm_*`` values, as ``_.info.campaignParams()`` finds them, in the SDK's order."""
    if not isinstance(query, str) or "utm_" not in query.lower():
        return ()
    return _cached_campaign(query) if len(query) <= _CACHED_QUERY_CHARS else _parse_campaign(query)


# Campaign links and referrers repeat across browsers; longer ones are parsed each time, so they pin no memory.
_CACHED_QUERY_CHARS = 512


@lru_cache(maxsize=1024)
def _cached_campaign(query: str) -> Pairs:
    return _parse_campaign(query)


def _parse_campaign(query: str) -> Pairs:
    found = query_campaign_properties(query)
    return tuple((key, value[:MAX_UTM_CHARS]) for key in CAMPAIGN_PARAMETERS
                 if isinstance(value := found.get(key), str) and value)


def _search_of(referer: object) -> Pairs:
    """The Referer's ``$search_engine`` and ``mp_keyword``, as ``_.info.searchInfo`` reads them."""
    if not isinstance(referer, str) or not referer:
        return ()
    return _cached_search(referer) if len(referer) <= _CACHED_QUERY_CHARS else _parse_search(referer)


# A site's own pages are most requests' Referer: each is matched against the search engines once.
@lru_cache(maxsize=1024)
def _cached_search(referer: str) -> Pairs:
    return _parse_search(referer)


def _parse_search(referer: str) -> Pairs:
    found = search_info(referer[:MAX_REFERRER_CHARS])
    return tuple((key, value[:MAX_UTM_CHARS]) for key in SEARCH_PROPERTIES if (value := found.get(key)))


def _initial(campaign: Pairs) -> Pairs:
    """A first campaign as the profile's ``initial_utm_*``."""
    return tuple((INITIAL_UTM_PREFIX + key, value) for key, value in campaign)


def _merge(stored: Pairs, page: Pairs, order: Mapping[str, int] = _CAMPAIGN_ORDER) -> Pairs:
    """``register(page)`` over ``stored``: the page's values replace those of the same names, the rest stay."""
    if not page:
        return stored
    merged = {**dict(stored), **dict(page)}
    return tuple(sorted(merged.items(), key=lambda pair: order[pair[0]]))


def _text(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value.strip() else None


def _known_values(source: object, order: Mapping[str, int]) -> Pairs:
    """The non-empty text values of ``source`` under the names in ``order``, cut and sorted by it."""
    if not isinstance(source, Mapping):
        return ()
    # The source holds a handful of keys; looking each of them up beats trying all ten UTM names.
    found = [(key, text) for key, value in source.items()
             if key in order and (text := _text(value, MAX_UTM_CHARS)) is not None]
    return tuple(sorted(found, key=lambda pair: order[pair[0]]))


def _parse(data: Mapping[str, Any], utm_source: object) -> FirstTouch | None:
    referrer = _text(data.get(INITIAL_REFERRER), MAX_REFERRER_CHARS)
    if referrer is None:
        return None
    domain = _text(data.get(INITIAL_REFERRING_DOMAIN), MAX_REFERRER_CHARS)
    if domain is None:
        domain = initial_referrer(referrer)[1]
    return FirstTouch(referrer, domain, _known_values(utm_source, _UTM_ORDER), _known_values(data, _CAMPAIGN_ORDER),
                      _known_values(data, _SEARCH_ORDER))


def _from_js_cookie(data: Mapping[str, Any]) -> FirstTouch | None:
    """The SDK's registered referrer and ``utm_*``; its ``initial_utm_*`` wait in the pending ``set_once`` queue."""
    return _parse(data, data.get(_SET_ONCE_QUEUE))


def _own_cookie(value: str) -> FirstTouch | None:
    # Longer than any value this module writes: not ours, and not worth a place in the cache.
    return _parse_own(value) if len(value) <= _MAX_COOKIE_VALUE else None


# A browser sends the same value with every request (pages and assets alike): it is decoded once.
@lru_cache(maxsize=256)
def _parse_own(value: str) -> FirstTouch | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return _parse(data, data) if isinstance(data, dict) else None


def encode_first_touch(touch: FirstTouch) -> str:
    """The cookie value: base64url (unpadded) JSON under mixpanel-js's property names, cut to fit a cookie.

    Only the server reads this cookie; base64url needs no quoting by any server's cookie writer and
    decodes several times faster than percent-encoding, on every request of a returning browser.
    """
    for referrer_limit, utm_limit in _SHORTER:
        value = _encode(FirstTouch(touch.referrer[:referrer_limit], touch.referring_domain[:referrer_limit],
                                   tuple((key, text[:utm_limit]) for key, text in touch.utm),
                                   tuple((key, text[:utm_limit]) for key, text in touch.campaign),
                                   tuple((key, text[:utm_limit]) for key, text in touch.search)).as_properties())
        if len(value) <= _MAX_COOKIE_VALUE:
            break
    return value


def _encode(properties: Mapping[str, str]) -> str:
    data = json.dumps(properties, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def record_first_touch(span: Span, state: FirstTouchState | None) -> None:
    """Write the first touch and campaign on the server span, where the exporter reads them (``enrich.first_touch``)."""
    if state is None:
        return
    touch = state.touch
    # One call: the SDK locks and checks its limits once per call, not once per attribute.
    attributes = {REFERRER_ATTRIBUTE: touch.referrer, REFERRING_DOMAIN_ATTRIBUTE: touch.referring_domain}
    attributes.update((_UTM_ATTRIBUTES[key], value) for key, value in touch.utm)
    attributes.update((_CAMPAIGN_ATTRIBUTES[key], value) for key, value in touch.campaign)
    attributes.update((_SEARCH_ATTRIBUTES[key], value) for key, value in touch.search)
    span.set_attributes(attributes)


def first_touch_cookies(state: FirstTouchState | None, device: DeviceState,
                        options: DeviceIdOptions) -> list[SetCookie]:
    """Cookies for the response: the first touch when it is new or grew, deleted when the device id was reset.

    After ``reset_device_id()`` the browser is a new anonymous visitor, as after mixpanel-js's
    ``reset()``, which clears the SDK's ``$initial_referrer``: its next request starts a new first touch.
    """
    if state is None:
        return []
    secure = options.secure_for(device.secure_request)
    samesite = options.samesite.capitalize()
    name = options.first_touch_cookie_name
    if device.device_id != device.request_device_id:
        return [SetCookie(name, "", 0, options.path, options.domain, secure, options.httponly, samesite)]
    if not state.write_cookie:
        return []
    return [SetCookie(name, encode_first_touch(state.touch), options.max_age, options.path, options.domain,
                      secure, options.httponly, samesite)]
