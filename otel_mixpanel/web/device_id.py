"""The anonymous device id: which cookie holds it, how it is read, checked and written.

Mixpanel's server-side guidance: generate a random id for each browser, keep it in a
first-party cookie, send it as ``$device_id`` on every event, and add ``$user_id``
after login. When the page also runs Mixpanel's JavaScript SDK, its device id (kept in
the ``mp_<token>_mixpanel`` cookie) is reused, so that both sides' events belong to
one user.

Nothing here raises on what a browser sends: an odd or hostile Cookie header only
means a new id.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache
from time import time
from types import MappingProxyType
from typing import Any, Iterator, Mapping
from urllib.parse import unquote

from otel_mixpanel.config import ENV_PREFIX
from otel_mixpanel.enrich.user_agent import parse_user_agent
from otel_mixpanel.placeholder_ids import is_placeholder_id

ENVIRON_KEY = "otel_mixpanel.device"
DEFAULT_COOKIE_NAME = "otel_mp_device_id"
DEFAULT_FIRST_TOUCH_COOKIE_NAME = "otel_mp_first_touch"
ONE_YEAR_SECONDS = 365 * 24 * 3600

# RFC 6265 cookie-name characters (an HTTP token).
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Our UUIDs, and the ids Mixpanel's JavaScript SDK generates (hex groups joined by dashes,
# e.g. "18f3c0a1b2-0d3e4f-4c657b58-1fa400-18f3c0a1b2"), which our cookie holds once it
# follows the SDK. Anything else was not written by either.
_DEVICE_ID = re.compile(r"^[0-9a-fA-F]{1,32}(?:-[0-9a-fA-F]{1,32}){1,7}$")
_MAX_DEVICE_ID = 100
_JS_COOKIE = re.compile(r"^mp_.+_mixpanel$")
# A real Cookie header is a few kilobytes at most; past this it is not worth parsing.
_MAX_COOKIE_HEADER = 16 * 1024


@dataclass(frozen=True)
class DeviceIdOptions:
    """How the device-id cookie is named and written, and whether the JS SDK's id is reused.

    ``secure=None`` marks the cookie ``Secure`` when the request came over https
    (``wsgi.url_scheme``, ``X-Forwarded-Proto`` or ``Forwarded: proto=``).
    ``mixpanel_token`` names the JS SDK cookie ``mp_<token>_mixpanel`` (default: the
    ``OTEL_EXPORTER_MIXPANEL_TOKEN`` variable; unset: any ``mp_*_mixpanel`` cookie);
    ``js_cookie_name`` gives that cookie's full name instead.
    ``first_touch`` keeps each browser's first referrer and UTM parameters in the
    ``first_touch_cookie_name`` cookie (see ``otel_mixpanel.web.first_touch``), and with it the browser's
    current ``utm_*`` for its later events, as mixpanel-js does by default; ``stop_utm_persistence=True``
    stops that (and clears what was stored), as the SDK's option of that name does.
    ``write_js_cookie`` writes the JS SDK's cookie for browsers that have none, so that the
    SDK starts on the server's device id (see ``otel_mixpanel.web.js_cookie``), with the
    ``$device:<id>`` distinct_id the SDK uses in either ID Merge mode. ``js_tracks_page_views`` states whether the page's SDK
    tracks page views, which the server cannot see (``js_cookie.announce_hybrid``).
    """

    cookie_name: str = DEFAULT_COOKIE_NAME
    max_age: int = ONE_YEAR_SECONDS
    domain: str | None = None
    path: str = "/"
    secure: bool | None = None
    httponly: bool = True
    samesite: str = "Lax"
    reuse_js_device_id: bool = True
    mixpanel_token: str | None = field(default=None, repr=False)
    js_cookie_name: str | None = None
    first_touch: bool = True
    first_touch_cookie_name: str = DEFAULT_FIRST_TOUCH_COOKIE_NAME
    stop_utm_persistence: bool = False
    write_js_cookie: bool = False
    js_tracks_page_views: bool | None = None
    ids_in_baggage: bool = True

    @classmethod
    def build(cls, environ: Mapping[str, str] | None = None, **options: Any) -> DeviceIdOptions:
        """Check ``options`` (the middleware's keyword arguments) and fill the token from the environment."""
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown device-id option(s): {', '.join(sorted(unknown))}")
        environ = os.environ if environ is None else environ
        if options.get("mixpanel_token") is None:
            options["mixpanel_token"] = (environ.get(ENV_PREFIX + "TOKEN") or "").strip() or None
        built = cls(**options)
        built._validate()
        return built

    def _validate(self) -> None:
        for name in ("cookie_name", "first_touch_cookie_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _COOKIE_NAME.match(value):
                raise ValueError(f"{name}={value!r}: expected a cookie name (letters, digits, -_.)")
        if self.first_touch_cookie_name == self.cookie_name:
            raise ValueError("first_touch_cookie_name must differ from cookie_name")
        for flag in ("first_touch", "stop_utm_persistence"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag}={getattr(self, flag)!r}: expected True or False")
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age <= 0:
            raise ValueError(f"max_age={self.max_age!r}: expected a positive number of seconds")
        if not isinstance(self.samesite, str) or self.samesite.capitalize() not in ("Lax", "Strict", "None"):
            raise ValueError(f"samesite={self.samesite!r}: expected Lax, Strict or None")
        if self.samesite.capitalize() == "None" and self.secure is False:
            raise ValueError("samesite='None' needs a Secure cookie: browsers drop it otherwise")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"path={self.path!r}: expected a path starting with '/'")
        for name in ("domain", "path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or re.search(r"[;\s,]", value)):
                raise ValueError(f"{name}={value!r}: may not contain ';', ',' or spaces")
        self._validate_hybrid()

    def _validate_hybrid(self) -> None:
        if not isinstance(self.write_js_cookie, bool):
            raise ValueError(f"write_js_cookie={self.write_js_cookie!r}: expected True or False")
        if self.js_tracks_page_views is not None and not isinstance(self.js_tracks_page_views, bool):
            raise ValueError(f"js_tracks_page_views={self.js_tracks_page_views!r}: expected True, False or None")
        if not self.write_js_cookie:
            return
        name = self.js_cookie
        if name is None:
            raise ValueError("write_js_cookie needs the JS SDK cookie's name: set mixpanel_token "
                             f"(or {ENV_PREFIX}TOKEN), or js_cookie_name")
        if not _COOKIE_NAME.match(name) or name in (self.cookie_name, self.first_touch_cookie_name):
            # Not echoed: it may hold the project token.
            raise ValueError("the JS SDK cookie's name (js_cookie_name, or mp_<token>_mixpanel) must be "
                             "a cookie name, other than cookie_name and first_touch_cookie_name")

    def secure_for(self, secure_request: bool) -> bool:
        if self.secure is not None:
            return self.secure
        return secure_request or self.samesite.capitalize() == "None"

    @property
    def js_cookie(self) -> str | None:
        if self.js_cookie_name:
            return self.js_cookie_name
        return f"mp_{self.mixpanel_token}_mixpanel" if self.mixpanel_token else None


@dataclass
class DeviceState:
    """One request's device id, and whether the response must (re)write the cookie.

    ``request_device_id`` is what this request's span records; ``device_id`` is what the
    cookie will hold, which differs once ``reset_device_id()`` ran.
    """

    device_id: str | None
    source: str  # "cookie", "mixpanel-js", "new", or "none" (an automated client: no id at all)
    cookie_needed: bool
    secure_request: bool
    request_device_id: str | None = None
    # Whether the request's ids go in the OpenTelemetry baggage, for the jobs it enqueues (otel_mixpanel.jobs).
    ids_in_baggage: bool = True

    def __post_init__(self) -> None:
        self.request_device_id = self.request_device_id or self.device_id

    @property
    def keeps_cookies(self) -> bool:
        """The browser has, or is being given, a device cookie: the middleware's other cookies may follow it."""
        return self.device_id is not None and (self.cookie_needed or self.source != "new")

    def set_cookie_header(self, options: DeviceIdOptions) -> str | None:
        """The ``Set-Cookie`` value that stores the device id; None when there is none."""
        return cookie_header(options, self.device_id, self.secure_request) if self.device_id else None


_current: ContextVar[DeviceState | None] = ContextVar("otel_mixpanel_device", default=None)


def new_device_id() -> str:
    return str(uuid.uuid4())


def parse_cookies(header: object) -> Mapping[str, tuple[str, ...]]:
    """Every value of every cookie in a Cookie header, in order; malformed parts are skipped.

    ``http.cookies.SimpleCookie`` stops at the first part it cannot parse, losing the
    cookies after it, so a lenient split is used instead. The mapping is read-only: the
    same one is handed to every caller of the request (device id, first touch, the SDK's
    cookie) and to the browser's next requests, which send the same header.
    """
    if not isinstance(header, str):
        return _NO_COOKIES
    header = header[:_MAX_COOKIE_HEADER]
    # Longer headers are parsed each time, so hostile ones cannot pin much memory in the cache.
    return _parse_cookies_cached(header) if len(header) <= _CACHED_COOKIE_HEADER else _parse_cookie_text(header)


_NO_COOKIES: Mapping[str, tuple[str, ...]] = MappingProxyType({})
_CACHED_COOKIE_HEADER = 4096


def _parse_cookie_text(header: str) -> Mapping[str, tuple[str, ...]]:
    cookies: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, []).append(value)
    return MappingProxyType({name: tuple(values) for name, values in cookies.items()})


_parse_cookies_cached = lru_cache(maxsize=256)(_parse_cookie_text)


def valid_device_id(value: object) -> str | None:
    """A device id read from a cookie, or None when it is not one we or the JS SDK would write."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > _MAX_DEVICE_ID or not _DEVICE_ID.match(value) or is_placeholder_id(value):
        return None
    return value


def js_cookie_data(cookies: Mapping[str, tuple[str, ...]], options: DeviceIdOptions) -> Iterator[Mapping[str, Any]]:
    """The Mixpanel JavaScript SDK's persisted properties (its cookie's URL-encoded JSON), each readable value in order.

    The mappings may be shared with other callers: never change them.
    """
    wanted = options.js_cookie
    for name, values in cookies.items():
        if (name != wanted) if wanted else not _JS_COOKIE.match(name):
            continue
        for value in values:
            data = _decode_js_cookie(value)
            if data is not None:
                yield data


# Each request reads the SDK's cookie twice (device id, first touch), and percent-decoding its
# kilobyte or so is the dearest step: the second read is a cache hit.
@lru_cache(maxsize=64)
def _decode_js_cookie(value: str) -> dict[str, Any] | None:
    try:
        data = json.loads(unquote(value))
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def js_device_id(cookies: Mapping[str, tuple[str, ...]], options: DeviceIdOptions) -> str | None:
    """The device id the Mixpanel JavaScript SDK keeps in its cookie, if there is a usable one.

    The cookie is URL-encoded JSON; the id is ``$device_id``, or ``distinct_id`` when that
    is ``$device:<id>`` (an anonymous user in Simplified ID Merge).
    """
    for data in js_cookie_data(cookies, options):
        found = _device_id_in_js_cookie(data)
        if found:
            return found
    return None


def _device_id_in_js_cookie(data: Mapping[str, Any]) -> str | None:
    candidate = data.get("$device_id")
    if not isinstance(candidate, str):
        distinct_id = data.get("distinct_id")
        if not isinstance(distinct_id, str) or not distinct_id.startswith("$device:"):
            return None
        candidate = distinct_id[len("$device:"):]
    return valid_device_id(candidate)


def is_secure_request(environ: Mapping[str, Any]) -> bool:
    if environ.get("wsgi.url_scheme") == "https":
        return True
    forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO")
    if isinstance(forwarded_proto, str) and forwarded_proto.split(",")[0].strip().lower() == "https":
        return True
    forwarded = environ.get("HTTP_FORWARDED")
    if isinstance(forwarded, str):
        first = forwarded.split(",")[0]
        return bool(re.search(r"(?:^|;)\s*proto\s*=\s*\"?https\"?\s*(?:;|$)", first, re.IGNORECASE))
    return False


def resolve_device(environ: Mapping[str, Any], options: DeviceIdOptions) -> DeviceState:
    """Decide the request's device id: the JS SDK's, else our cookie's, else a new one.

    Health checkers, scripts, HTTP libraries and crawlers (by their User-Agent) get no new
    one: they keep no cookie, so each of their requests would otherwise be a new visitor.
    """
    cookies = parse_cookies(environ.get("HTTP_COOKIE"))
    secure = is_secure_request(environ)
    own = next(filter(None, map(valid_device_id, cookies.get(options.cookie_name, ()))), None)
    from_js = js_device_id(cookies, options) if options.reuse_js_device_id else None
    if from_js:
        # Our cookie follows the JS SDK's id, so that requests the SDK's cookie does not
        # reach (it may be cleared, or blocked) still carry the same device.
        return DeviceState(from_js, "mixpanel-js", own != from_js, secure)
    if own:
        return DeviceState(own, "cookie", False, secure)
    if not is_person(environ.get("HTTP_USER_AGENT")):
        return DeviceState(None, "none", False, secure)
    return DeviceState(new_device_id(), "new", True, secure)


def is_person(user_agent: object) -> bool:
    """A browser's User-Agent, not a crawler's or a script's (otel_mixpanel.enrich.user_agent)."""
    parsed = parse_user_agent(user_agent if isinstance(user_agent, str) else None)
    return not (parsed.is_automated or parsed.is_bot)


def cookie_header(options: DeviceIdOptions, device_id: str, secure_request: bool) -> str:
    """The ``Set-Cookie`` value that stores ``device_id`` with the configured attributes."""
    samesite = options.samesite.capitalize()
    parts = [
        f"{options.cookie_name}={device_id}",
        f"Max-Age={options.max_age}",
        f"Expires={formatdate(time() + options.max_age, usegmt=True)}",
        f"Path={options.path}",
    ]
    if options.domain:
        parts.append(f"Domain={options.domain}")
    if options.secure_for(secure_request):
        parts.append("Secure")
    if options.httponly:
        parts.append("HttpOnly")
    parts.append(f"SameSite={samesite}")
    return "; ".join(parts)


def _state_of(request: Any = None) -> DeviceState | None:
    if request is None:
        return _current.get()
    environ = (getattr(request, "environ", None) or getattr(request, "META", None)
               or getattr(request, "scope", None) or request)
    state = environ.get(ENVIRON_KEY) if isinstance(environ, Mapping) else None
    return state if isinstance(state, DeviceState) else None


def current_device_id(request: Any = None) -> str | None:
    """The anonymous device id of the request being handled, or None outside the middleware
    and for clients that are given none (health checkers, scripts, crawlers).

    ``request`` may be a WSGI environ or ASGI scope, or a Flask, Django or Starlette/FastAPI
    request; without it the request whose handler is running is used.
    """
    state = _state_of(request)
    return state.device_id if state else None


def reset_device_id(request: Any = None) -> str:
    """Start a new anonymous device id for this browser, e.g. at logout; returns the new id.

    The response sets the cookie to the new id, so the next requests are a new anonymous
    visitor who can no longer be linked to the user who logged out. This request's own
    events keep the old id: they still belong to that user.
    """
    state = _state_of(request)
    if state is None:
        raise RuntimeError(
            "reset_device_id() was called outside a request handled by otel_mixpanel's web middleware"
        )
    device_id = new_device_id()
    state.device_id = device_id
    state.source = "new"
    state.cookie_needed = True
    return device_id
