"""Browser, OS and device from the User-Agent header, with ua-parser (uap-core's rules).

Values are named as ua-parser names them (``Chrome Mobile``, ``iOS``, ``iPhone``), as
Mixpanel's own server-side guidance does; anything ua-parser cannot tell is left out
rather than sent as "Other". Results are cached per user agent: a site sees few
distinct ones, and the native backend parses a new one in tens of microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import ua_parser

from otel_mixpanel.limits import safe_properties

# Far beyond any real browser's header; longer input is cut before parsing so that a
# hostile header cannot make every request pay for a long regular-expression scan.
MAX_USER_AGENT_LENGTH = 1024
UNKNOWN = "Other"


@dataclass(frozen=True)
class ParsedUserAgent:
    properties: dict[str, Any]
    is_spider: bool


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str) -> ParsedUserAgent:
    result = ua_parser.parse(user_agent[:MAX_USER_AGENT_LENGTH])
    properties: dict[str, Any] = {}
    browser = result.user_agent
    if browser is not None and browser.family != UNKNOWN:
        properties["$browser"] = browser.family
        version = _browser_version(browser.major, browser.minor)
        if version is not None:
            properties["$browser_version"] = version
    if result.os is not None and result.os.family != UNKNOWN:
        properties["$os"] = result.os.family
    device = result.device
    if device is not None and device.family != UNKNOWN:
        properties["$device"] = device.family
    return ParsedUserAgent(safe_properties(properties), device is not None and device.family == "Spider")


def _browser_version(major: str | None, minor: str | None) -> float | None:
    """The web SDK sends ``$browser_version`` as a number, major.minor."""
    if not major or not major.isdigit():
        return None
    return float(f"{major}.{minor}" if minor and minor.isdigit() else major)
