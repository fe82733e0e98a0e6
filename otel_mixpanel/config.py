"""Settings: constructor argument, else environment variable, else default.

Every setting is declared once in ``SETTINGS`` with its variable, default, unit and
meaning; ``docs/configuration.md`` is checked against that table by the tests.
Durations are in milliseconds, as the OpenTelemetry specification asks of
``OTEL_*`` variables. A bad value raises ``ConfigError`` naming the variable and
what was expected; secret values are never echoed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

ENV_PREFIX = "OTEL_EXPORTER_MIXPANEL_"


class ConfigError(ValueError):
    """A setting has a value the exporter cannot work with."""


@dataclass(frozen=True)
class TrustedProxies:
    """Which hops in front of the application may be believed about the client's address.

    ``hops`` trusts that many proxies, counted from the right of ``X-Forwarded-For``;
    ``networks`` trusts hops whose address lies in one of them. Neither: trust no header.
    """

    hops: int = 0
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @cached_property
    def enabled(self) -> bool:
        """Whether any header is believed. Cached: conversion asks for every request, and a property would run
        as Python code there each time; once cached, it is an attribute of the instance."""
        return self.hops > 0 or bool(self.networks)

    def trusts(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    parse: Callable[[str, str], Any]
    unit: str
    description: str
    secret: bool = False


def _text(env: str, raw: str) -> str:
    return raw.strip()


def _optional_text(env: str, raw: str) -> str | None:
    return raw.strip() or None


def _flag(env: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{env}={raw!r}: expected true or false")


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(env: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{env}={raw!r}: expected one of {', '.join(choices)}")
        return value

    return parse


def _positive_int(minimum: int = 1, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(env: str, raw: str) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{env}={raw!r}: expected a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(f"{env}={raw!r}: expected a whole number of at least {minimum}{upper}")
        return value

    return parse


def _word_list(env: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _lower_word_list(env: str, raw: str) -> tuple[str, ...]:
    return tuple(word.lower() for word in _word_list(env, raw))


def _extensions(env: str, raw: str) -> tuple[str, ...]:
    return tuple("." + word.lower().lstrip(".") for word in _word_list(env, raw))


def _endpoint(env: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if "@" in parts.netloc:
        # Never echoed: the part before "@" would be a password.
        raise ConfigError(f"{env}: credentials in the URL are not used; give them as {ENV_PREFIX}API_SECRET "
                          f"or {ENV_PREFIX}SERVICE_ACCOUNT_USERNAME / _SECRET")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"{env}={raw!r}: expected a base URL such as https://api.mixpanel.com "
            "or https://api-eu.mixpanel.com (the API paths are appended)"
        )
    return value


def _json_object(env: str, raw: str) -> Mapping[str, Any] | None:
    """A JSON object's text as a read-only mapping (the settings are frozen); empty text: None."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"{env}: expected a JSON object of property names and values, "
                          'e.g. {"app": "shop", "region": "eu"}')
    return MappingProxyType(value)


# Headers a proxy writes the client's address in: lists each proxy appends to, then single addresses.
FORWARDING_LIST_HEADERS = ("x-forwarded-for", "forwarded")
CLIENT_IP_HEADERS = FORWARDING_LIST_HEADERS + ("x-real-ip", "cf-connecting-ip", "true-client-ip")


def _trusted_proxies(env: str, raw: str) -> TrustedProxies:
    value = raw.strip()
    if not value:
        return TrustedProxies()
    if value.isdigit():
        return TrustedProxies(hops=int(value))
    networks = []
    for part in _word_list(env, value):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"{env}={raw!r}: expected a number of proxy hops, or a comma-separated "
                f"list of proxy addresses and CIDR ranges ({part!r} is neither)"
            ) from None
    return TrustedProxies(networks=tuple(networks))


def _path(env: str, raw: str) -> str:
    return os.path.expanduser(raw.strip())


ID_MERGE_SIMPLIFIED = "simplified"
ID_MERGE_ORIGINAL = "original"
OUTPUT_MIXPANEL = "mixpanel"
OUTPUT_CONSOLE = "console"
OUTPUT_FILE_PREFIX = "file:"


def _output(env: str, raw: str) -> str:
    value = raw.strip()
    if value.lower() in (OUTPUT_MIXPANEL, OUTPUT_CONSOLE):
        return value.lower()
    if value.lower().startswith(OUTPUT_FILE_PREFIX) and value[len(OUTPUT_FILE_PREFIX):].strip():
        return OUTPUT_FILE_PREFIX + os.path.expanduser(value[len(OUTPUT_FILE_PREFIX):].strip())
    raise ConfigError(
        f"{env}={raw!r}: expected mixpanel (send), console (print JSON lines to stderr) "
        "or file:<path> (append JSON lines to that file)"
    )


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    """The OpenTelemetry SDK's own off switch, ``OTEL_SDK_DISABLED=true``."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _default_spool_dir() -> str:
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state_home, "otel-mixpanel")


DEFAULT_STATIC_EXTENSIONS = (
    ".css .js .mjs .map .png .jpg .jpeg .gif .svg .ico .webp .avif .bmp "
    ".woff .woff2 .ttf .otf .eot .mp4 .webm .mp3 .wav .ogg .zip .gz .txt .xml .json .webmanifest"
)

DEFAULT_REDACTED_QUERY_PARAMS = (
    "token,access_token,refresh_token,id_token,password,passwd,pwd,secret,client_secret,"
    "api_key,apikey,key,code,signature,sig,auth,authorization,session,sessionid,otp"
)

SETTINGS: tuple[Setting, ...] = (
    # On or off, and where records go.
    Setting("enabled", "ENABLED", True, _flag, "true or false",
            "false: the exporter drops every span and starts nothing (no spool, no thread); so does "
            "OTEL_SDK_DISABLED=true. With no token the exporter turns itself off the same way, with a warning."),
    Setting("output", "OUTPUT", OUTPUT_MIXPANEL, _output, "mixpanel, console or file:<path>",
            "mixpanel: deliver to the endpoint. console: send nothing, print each event and profile update "
            "as a JSON line on stderr. file:<path>: the same lines appended to that file. No token needed "
            "for console or file."),
    # Credentials and where to send.
    Setting("token", "TOKEN", None, _optional_text, "text",
            "Mixpanel project token. Needed unless a service account is set.", secret=True),
    Setting("endpoint", "ENDPOINT", "https://api.mixpanel.com", _endpoint, "URL",
            "Base URL of Mixpanel's ingestion API, without credentials; /import, /track and /engage are appended. "
            "EU residency: https://api-eu.mixpanel.com, India: https://api-in.mixpanel.com."),
    Setting("api_secret", "API_SECRET", None, _optional_text, "text",
            "Project API secret, used as Basic credentials for /import.", secret=True),
    Setting("service_account_username", "SERVICE_ACCOUNT_USERNAME", None, _optional_text, "text",
            "Service account user name for /import (needs the project id)."),
    Setting("service_account_secret", "SERVICE_ACCOUNT_SECRET", None, _optional_text, "text",
            "Service account secret.", secret=True),
    Setting("project_id", "PROJECT_ID", None, _optional_text, "text",
            "Mixpanel project id, required with a service account."),
    Setting("events_api", "EVENTS_API", "auto", _choice("auto", "import", "track"), "import, track or auto",
            "Where events go. auto: /import?strict=1 when credentials allow it "
            "(service account, API secret, or the token as Basic user), else /track."),
    # What becomes an event.
    Setting("id_merge", "ID_MERGE", ID_MERGE_SIMPLIFIED, _choice(ID_MERGE_SIMPLIFIED, ID_MERGE_ORIGINAL),
            "simplified or original",
            "The project's ID Merge API: whether $identify is sent at login (the ids are mixpanel-js's in both)."),
    Setting("anonymous_profiles", "ANONYMOUS_PROFILES", False, _flag, "true or false",
            "Send set_profile() updates of visitors not identified yet, to a $device:<id> profile. Off: only "
            "identified users get profile updates, as mixpanel-js holds people updates until identify()."),
    Setting("page_views", "PAGE_VIEWS", True, _flag, "true or false",
            "Send page-view events; which requests are page views: page_view_detection."),
    Setting("page_view_detection", "PAGE_VIEW_DETECTION", "document", _choice("document", "any-get"),
            "document or any-get",
            "document: a page view is a browser's document load (Sec-Fetch-Dest / Sec-Fetch-Mode, else an "
            "Accept preferring text/html, and an HTML response where its Content-Type is known). "
            "any-get: every successful GET, as before. Health checkers and scripts are never page views."),
    Setting("page_view_event", "PAGE_VIEW_EVENT", "$mp_web_page_view", _text, "event name",
            "Name of the page-view event."),
    Setting("page_view_include", "PAGE_VIEW_INCLUDE", (), _word_list, "comma-separated path globs",
            "When set, only paths matching one of these globs are page views (e.g. /app/*,/)."),
    Setting("page_view_exclude", "PAGE_VIEW_EXCLUDE", (), _word_list, "comma-separated path globs",
            "Paths matching one of these globs are never page views (e.g. /healthz,/api/*)."),
    Setting("static_extensions", "STATIC_EXTENSIONS", _extensions("", DEFAULT_STATIC_EXTENSIONS.replace(" ", ",")),
            _extensions, "comma-separated file extensions",
            "Paths ending in one of these are static assets, never page views."),
    Setting("excluded_events", "EXCLUDED_EVENTS", ("exception",), _word_list, "comma-separated span-event names",
            "Span events that never become Mixpanel events."),
    Setting("included_events", "INCLUDED_EVENTS", (), _word_list, "comma-separated span-event names",
            "When set, only span events with one of these names become Mixpanel events (EXCLUDED_EVENTS still "
            "applies); empty: all. Page views and the helpers' identify and profile updates are never filtered."),
    Setting("super_properties", "SUPER_PROPERTIES", None, _json_object, "JSON object",
            "Properties added to every event, as mixpanel-js's register(): the event's own properties win over "
            "them, they win over the request's automatic properties; identity and deduplication keys are ignored."),
    Setting("track_bots", "TRACK_BOTS", False, _flag, "true or false",
            "Send events for requests from crawlers and synthetic clients."),
    Setting("browser_names", "BROWSER_NAMES", "mixpanel", _choice("mixpanel", "ua-parser"), "mixpanel or ua-parser",
            "How $browser, $os and $device are named: as Mixpanel's web SDK names them (Chrome, Mobile Safari; "
            "$device only for phones and tablets) or as ua-parser does (Chrome Mobile, Mac)."),
    Setting("trusted_proxies", "TRUSTED_PROXIES", TrustedProxies(), _trusted_proxies,
            "hop count, or comma-separated addresses and CIDRs",
            "Proxies whose headers are believed (the client address, X-Forwarded-Proto). Empty: the socket "
            "peer is the client."),
    Setting("client_ip_header", "CLIENT_IP_HEADER", "x-forwarded-for", _choice(*CLIENT_IP_HEADERS),
            "x-forwarded-for, forwarded, x-real-ip, cf-connecting-ip or true-client-ip",
            "The header your trusted proxies write the client's address in; no other is read for it."),
    Setting("forwarded_host", "FORWARDED_HOST", False, _flag, "true or false",
            "Take the page's host from trusted proxies' X-Forwarded-Host (Forwarded host= with "
            "CLIENT_IP_HEADER=forwarded); only if they set or overwrite it."),
    Setting("ip_mode", "IP", "full", _choice("full", "truncate", "off"), "full, truncate or off",
            "The client IP sent for geolocation: as is, with the last IPv4 octet / last 80 IPv6 bits "
            "zeroed, or not at all."),
    Setting("redact_query_params", "REDACT_QUERY_PARAMS", _lower_word_list("", DEFAULT_REDACTED_QUERY_PARAMS),
            _lower_word_list, "comma-separated parameter names",
            "Query parameters whose values are replaced by 'redacted' in every URL property."),
    Setting("trace_wait_ms", "TRACE_WAIT", 60_000, _positive_int(0), "milliseconds",
            "How long events of a child span wait for their request's server span before they are "
            "sent with the context known so far."),
    # Delivery.
    Setting("spool", "SPOOL", "sqlite", _choice("sqlite", "memory"), "sqlite or memory",
            "sqlite: events are kept on disk until Mixpanel accepts them. memory: lost if the process dies."),
    Setting("spool_dir", "SPOOL_DIR", None, _path, "directory",
            "Where the SQLite spool lives. Default: $XDG_STATE_HOME/otel-mixpanel "
            "(~/.local/state/otel-mixpanel)."),
    Setting("spool_max_events", "SPOOL_MAX_EVENTS", 1_000_000, _positive_int(), "events",
            "Most events kept in the spool; past it the oldest are dropped and counted."),
    Setting("spool_max_bytes", "SPOOL_MAX_BYTES", 256 * 1024 * 1024, _positive_int(), "bytes",
            "Most bytes of event JSON kept in the spool; past it the oldest are dropped and counted."),
    Setting("batch_size", "BATCH_SIZE", 2000, _positive_int(1, 2000), "events",
            "Most events or profile updates in one request (Mixpanel's limit is 2000)."),
    Setting("max_request_bytes", "MAX_REQUEST_BYTES", 1024 * 1024, _positive_int(1024), "bytes",
            "Most uncompressed bytes in one request; larger batches are split before sending."),
    Setting("schedule_delay_ms", "SCHEDULE_DELAY", 1000, _positive_int(0), "milliseconds",
            "How long records wait for a batch to fill before what has arrived is sent; 0 sends at once."),
    Setting("timeout_ms", "TIMEOUT", 10_000, _positive_int(1), "milliseconds",
            "Deadline of one HTTP request to Mixpanel, for the whole exchange: connecting, sending, "
            "and reading the whole answer."),
    # At least 10 ms: a shorter wait against a failing server would retry in a near busy loop.
    Setting("retry_initial_ms", "RETRY_INITIAL_BACKOFF", 2000, _positive_int(10), "milliseconds",
            "First wait before retrying a failed request (at least 10); doubles each time, with jitter."),
    Setting("retry_max_ms", "RETRY_MAX_BACKOFF", 60_000, _positive_int(10), "milliseconds",
            "Longest wait between retries (at least 10)."),
    Setting("compression", "COMPRESSION", "gzip", _choice("gzip", "none"), "gzip or none",
            "Request body compression."),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def env_name(setting: Setting) -> str:
    return ENV_PREFIX + setting.env


def _argument(setting: Setting, value: Any) -> Any:
    """A value given in code, checked by the same rules as its environment variable."""
    if isinstance(value, Mapping):
        value = json.dumps(dict(value), default=str)
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(str(item) for item in value)
    if isinstance(value, (str, int, float)):
        return setting.parse(f"argument {setting.name}", str(value))
    return value


def _default(name: str) -> Any:
    return SETTINGS_BY_NAME[name].default


@dataclass(frozen=True)
class Settings:
    """Every setting, typed. Defaults come from ``SETTINGS``; a value given here (a string as it
    would stand in the environment, or a typed value) is parsed and checked like the variable."""

    enabled: bool = _default("enabled")
    output: str = _default("output")
    token: str | None = _default("token")
    endpoint: str = _default("endpoint")
    api_secret: str | None = _default("api_secret")
    service_account_username: str | None = _default("service_account_username")
    service_account_secret: str | None = _default("service_account_secret")
    project_id: str | None = _default("project_id")
    events_api: str = _default("events_api")
    id_merge: str = _default("id_merge")
    anonymous_profiles: bool = _default("anonymous_profiles")
    page_views: bool = _default("page_views")
    page_view_detection: str = _default("page_view_detection")
    page_view_event: str = _default("page_view_event")
    page_view_include: tuple[str, ...] = _default("page_view_include")
    page_view_exclude: tuple[str, ...] = _default("page_view_exclude")
    static_extensions: tuple[str, ...] = _default("static_extensions")
    excluded_events: tuple[str, ...] = _default("excluded_events")
    included_events: tuple[str, ...] = _default("included_events")
    super_properties: Mapping[str, Any] | None = _default("super_properties")
    track_bots: bool = _default("track_bots")
    browser_names: str = _default("browser_names")
    trusted_proxies: TrustedProxies = _default("trusted_proxies")
    client_ip_header: str = _default("client_ip_header")
    forwarded_host: bool = _default("forwarded_host")
    ip_mode: str = _default("ip_mode")
    redact_query_params: tuple[str, ...] = _default("redact_query_params")
    trace_wait_ms: int = _default("trace_wait_ms")
    spool: str = _default("spool")
    spool_dir: str | None = _default("spool_dir")
    spool_max_events: int = _default("spool_max_events")
    spool_max_bytes: int = _default("spool_max_bytes")
    batch_size: int = _default("batch_size")
    max_request_bytes: int = _default("max_request_bytes")
    schedule_delay_ms: int = _default("schedule_delay_ms")
    timeout_ms: int = _default("timeout_ms")
    retry_initial_ms: int = _default("retry_initial_ms")
    retry_max_ms: int = _default("retry_max_ms")
    compression: str = _default("compression")

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if value is not None and value is not setting.default:
                # Frozen: the parsed value replaces the given one once, here, before anyone sees it.
                object.__setattr__(self, setting.name, _argument(setting, value))
        if self.spool_dir is None:
            object.__setattr__(self, "spool_dir", _default_spool_dir())
        self.validate()

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``overrides`` (constructor arguments), else ``environ``, else defaults."""
        environ = os.environ if environ is None else environ
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        unknown = set(overrides) - set(SETTINGS_BY_NAME)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            variable = env_name(setting)
            if setting.name in overrides:
                values[setting.name] = overrides[setting.name]
            elif environ.get(variable, "").strip():
                values[setting.name] = setting.parse(variable, environ[variable])
        if sdk_disabled(environ):
            values["enabled"] = False
        return cls(**values)

    def validate(self) -> None:
        username, secret = self.service_account_username, self.service_account_secret
        if bool(username) != bool(secret):
            raise ConfigError(
                f"{ENV_PREFIX}SERVICE_ACCOUNT_USERNAME and {ENV_PREFIX}SERVICE_ACCOUNT_SECRET "
                "must be set together"
            )
        if username and not self.project_id:
            raise ConfigError(f"{ENV_PREFIX}PROJECT_ID is required with a service account")
        if self.off_reason is None and self.output == OUTPUT_MIXPANEL:
            self._validate_credentials()
        if self.retry_max_ms < self.retry_initial_ms:
            raise ConfigError(
                f"{ENV_PREFIX}RETRY_MAX_BACKOFF ({self.retry_max_ms} ms) must be at least "
                f"{ENV_PREFIX}RETRY_INITIAL_BACKOFF ({self.retry_initial_ms} ms)"
            )

    def _validate_credentials(self) -> None:
        if self.events_api == "import" and self.import_auth is None:
            raise ConfigError(
                f"{ENV_PREFIX}EVENTS_API=import needs credentials: a service account, "
                f"{ENV_PREFIX}API_SECRET, or {ENV_PREFIX}TOKEN without {ENV_PREFIX}PROJECT_ID"
            )
        if self.events_api == "track" and not self.token:
            raise ConfigError(f"{ENV_PREFIX}EVENTS_API=track needs {ENV_PREFIX}TOKEN")

    @property
    def off_reason(self) -> str | None:
        """Why the exporter should drop everything instead of converting, or None when it should run.

        Neither is a configuration error: an application must start (in development, in CI) where
        no Mixpanel project is set up, and a development output needs no credentials.
        """
        if not self.enabled:
            return f"{ENV_PREFIX}ENABLED=false or OTEL_SDK_DISABLED=true"
        if self.output == OUTPUT_MIXPANEL and not self.token and not self.service_account_username:
            return (f"{ENV_PREFIX}TOKEN is not set (nor a service account); set it to your Mixpanel project "
                    f"token, or {ENV_PREFIX}OUTPUT=console to see the events without sending them")
        return None

    @property
    def import_auth(self) -> tuple[str, str] | None:
        """Basic credentials for /import, in Mixpanel's order of preference, or None."""
        if self.service_account_username and self.service_account_secret:
            return (self.service_account_username, self.service_account_secret)
        if self.api_secret:
            return (self.api_secret, "")
        if self.token and not self.project_id:
            return (self.token, "")
        return None

    @property
    def uses_import(self) -> bool:
        if self.events_api == "auto":
            return self.import_auth is not None
        return self.events_api == "import"

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if SETTINGS_BY_NAME[f.name].secret and value:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__
