"""Browser, OS and device from the User-Agent header, and who sent it: a person, a crawler or a script.

``$browser``, ``$browser_version``, ``$os`` and ``$device`` are named as mixpanel-js 2.83.0 names
them (``Chrome``, ``Chrome iOS``, ``Microsoft Edge``, ``Mobile Safari``; ``$device`` only for
phones and tablets), by a port of its rules in ``browser_names``, so that server and browser
events of one visitor agree. ``OTEL_EXPORTER_MIXPANEL_BROWSER_NAMES=ua-parser`` keeps ua-parser's
family names instead (``Chrome Mobile``, ``Mac``), for projects whose history uses them.

Two classifications come with every parse, whatever the names:

- ``is_bot``: a crawler, as ua-parser (device family ``Spider``) or mixpanel-js 2.83.0's own
  blocked list (``BLOCKED_UA_STRS`` in src/utils.js, the agents its ``_.isBlockedUA`` refuses
  to track) knows it. The web SDK sends nothing at all for these.
- ``is_automated``: a client that is no person's browser: health checkers, command-line tools
  and HTTP libraries, or no User-Agent at all. Such requests are real traffic (their business
  events count) but no page is being viewed and nobody's device is behind them.

Results are cached per user agent, cut to ``MAX_USER_AGENT_LENGTH`` characters first, so each
naming's cache holds at most ``CACHE_ENTRIES`` keys of bounded length whatever clients send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Mapping

import ua_parser

from otel_mixpanel.enrich.browser_names import mixpanel_properties
from otel_mixpanel.limits import is_ascii, safe_properties

# Far beyond any real browser's header. Longer input is cut before it is parsed or becomes a
# cache key: a hostile header can neither make a request pay for a long regular-expression
# scan nor pin its size in the cache.
MAX_USER_AGENT_LENGTH = 1024
CACHE_ENTRIES = 4096
UNKNOWN = "Other"
MIXPANEL_NAMES = "mixpanel"
UA_PARSER_NAMES = "ua-parser"

# mixpanel-js 2.83.0, src/utils.js BLOCKED_UA_STRS, matched as it does: anywhere, case-insensitive.
MIXPANEL_BLOCKED_AGENTS = (
    "ahrefsbot", "ahrefssiteaudit", "amazonbot", "baiduspider", "bingbot", "bingpreview",
    "chrome-lighthouse", "facebookexternal", "petalbot", "pinterest", "screaming frog",
    "yahoo! slurp", "yandex",
    "adsbot-google", "apis-google", "duplexweb-google", "feedfetcher-google", "google favicon",
    "google web preview", "google-read-aloud", "googlebot", "googleweblight",
    "mediapartners-google", "storebot-google",
)

# Clients that announce themselves by their first product token: HTTP libraries and tools.
_AUTOMATED_PRODUCTS = (
    "curl", "wget", "httpie", "python-requests", "python-httpx", "python-urllib", "python-urllib3",
    "python", "aiohttp", "okhttp", "java", "apache-httpclient", "jakarta commons-httpclient",
    "go-http-client", "node-fetch", "node", "undici", "axios", "got", "deno", "bun", "postmanruntime",
    "insomnia", "libwww-perl", "lwp-request", "ruby", "faraday", "guzzlehttp", "restsharp",
    "dart", "reqwest", "hyper", "k6", "apachebench", "jmeter", "locust", "wrk", "hey",
    "kube-probe", "elb-healthchecker", "googlehc", "envoy", "consul health check",
    "prometheus", "blackbox-exporter", "zabbix", "check_http", "nagios", "datadog agent",
)
# Matched on the lower-cased user agent: a product token ends at "/", a space, ";", "(" or the end.
_AUTOMATED_PREFIX = re.compile(
    r"(?:" + "|".join(re.escape(product) for product in _AUTOMATED_PRODUCTS) + r")(?:[/ ;(]|$)"
)
# Health checkers and uptime monitors that put their name later in a browser-like string.
_AUTOMATED_NAMES = (
    "healthcheck", "health-check", "health check", "kube-probe", "googlestackdrivermonitoring",
    "datadogsynthetics", "datadog/synthetics", "newrelicsynthetics", "pingdom", "uptimerobot",
    "statuscake", "site24x7",
)


# Slots: the page-view decision and the bot check read this for every request, and a slot is
# read at once where a dataclass's attribute goes through its instance dictionary.
@dataclass(frozen=True, slots=True)
class ParsedUserAgent:
    """What one User-Agent says. ``properties`` may be shared between requests: never change it."""

    properties: Mapping[str, Any]
    # A crawler: never tracked unless OTEL_EXPORTER_MIXPANEL_TRACK_BOTS is set.
    is_bot: bool
    # Not a person's browser (health checker, script, HTTP library, no User-Agent): no page
    # views and no new device ids, but its business events count. Independent of is_bot.
    is_automated: bool


NO_USER_AGENT = ParsedUserAgent(MappingProxyType({}), is_bot=False, is_automated=True)


def parse_user_agent(user_agent: str | None, names: str = MIXPANEL_NAMES) -> ParsedUserAgent:
    """Properties and classification of a User-Agent header; empty or missing means a script.

    ``names``: ``"mixpanel"`` (the web SDK's names) or ``"ua-parser"`` (ua-parser's families).
    """
    if not user_agent or user_agent.isspace():
        return NO_USER_AGENT
    return _CACHED_PARSERS[names](user_agent[:MAX_USER_AGENT_LENGTH])


def _parse(user_agent: str, names: str) -> ParsedUserAgent:
    # The native backend needs UTF-8: a lone surrogate (possible in a hand-set attribute,
    # never in a decoded header) would make it raise. An ASCII agent is used as it is, so
    # ua-parser's own cache holds the same string as ours, not a copy.
    text = user_agent if is_ascii(user_agent) else user_agent.encode("utf-8", "replace").decode("utf-8")
    if names == UA_PARSER_NAMES:
        result = ua_parser.parse(text)
        properties = _ua_parser_properties(result)
        device = result.device
    else:
        properties = mixpanel_properties(text)
        device = ua_parser.parse_device(text)
    is_spider = device is not None and device.family == "Spider"
    return ParsedUserAgent(
        MappingProxyType(safe_properties(properties)),
        is_bot=is_spider or is_mixpanel_blocked(text),
        is_automated=is_automated_client(text),
    )


def _cached_parser(names: str) -> Callable[[str], ParsedUserAgent]:
    """One cache per naming, keyed on the user agent alone: a hit is one dictionary look-up."""

    @lru_cache(maxsize=CACHE_ENTRIES)
    def parse(user_agent: str) -> ParsedUserAgent:
        return _parse(user_agent, names)

    return parse


_CACHED_PARSERS = {names: _cached_parser(names) for names in (MIXPANEL_NAMES, UA_PARSER_NAMES)}


def _ua_parser_properties(result: ua_parser.Result) -> dict[str, Any]:
    """ua-parser's families; what it cannot tell is left out rather than sent as "Other"."""
    properties: dict[str, Any] = {}
    browser = result.user_agent
    if browser is not None and browser.family != UNKNOWN:
        properties["$browser"] = browser.family
        version = _browser_version(browser.major, browser.minor)
        if version is not None:
            properties["$browser_version"] = version
    if result.os is not None and result.os.family != UNKNOWN:
        properties["$os"] = result.os.family
    if result.device is not None and result.device.family != UNKNOWN:
        properties["$device"] = result.device.family
    return properties


def is_mixpanel_blocked(user_agent: str) -> bool:
    """mixpanel-js's ``_.isBlockedUA``: the crawlers its web SDK never tracks."""
    lowered = user_agent.lower()
    return any(agent in lowered for agent in MIXPANEL_BLOCKED_AGENTS)


def is_automated_client(user_agent: str) -> bool:
    """A health checker, command-line tool or HTTP library, by its product token or its name."""
    lowered = user_agent.strip().lower()
    return (not lowered or _AUTOMATED_PREFIX.match(lowered) is not None
            or any(name in lowered for name in _AUTOMATED_NAMES))


def _browser_version(major: str | None, minor: str | None) -> float | None:
    """The web SDK sends ``$browser_version`` as a number, major.minor."""
    if not major or not major.isdigit():
        return None
    return float(f"{major}.{minor}" if minor and minor.isdigit() else major)
