"""``$browser``, ``$browser_version``, ``$os`` and ``$device`` named as Mixpanel's web SDK names them.

A port of mixpanel-js 2.83.0's ``_.info.browser``, ``browserVersion``, ``os`` and ``device``
(src/utils.js), check for check and in the same order, so that events from the server and from
the browser of the same visitor agree. The JavaScript semantics kept on purpose: substring
tests are case-sensitive unless the original regular expression has ``/i``; ``\\d`` is ASCII
only; the version is the capture group just before the last one (``matches[length - 2]``),
read as a float (``parseFloat``); empty results are not sent.

The SDK also reads two things a server never sees, and which are inferred from the user agent:

- ``navigator.vendor``, which only decides Safari against the checks after it: "Apple
  Computer, Inc." in every WebKit browser that is not Chromium-based (Safari on macOS, every
  iOS browser, WebKitGTK on Linux), "Google Inc." in Chromium and old Android browsers, empty
  in Firefox and Internet Explorer. So: Apple when the agent says ``AppleWebKit`` and not
  ``Android``.
- ``window.opera``, which only Presto-based Opera (version 12 and older) had: inferred from
  ``Presto/``.

tools/derive_browser_expectations.js evaluates the SDK itself over real user agents, with their
real vendor, into tests/data/browser_naming.jsonl, which the tests compare this module with.
"""

from __future__ import annotations

import math
import re
from typing import Any

MIXPANEL_JS_VERSION = "2.83.0"

_BLACKBERRY = re.compile(r"(BlackBerry|PlayBook|BB10)", re.IGNORECASE | re.ASCII)

# browserVersion()'s table: the version is the group before the last one.
_VERSION_PATTERNS = {
    browser: re.compile(pattern, re.ASCII)
    for browser, pattern in {
        "Internet Explorer Mobile": r"rv:(\d+(\.\d+)?)",
        "Microsoft Edge": r"Edge?\/(\d+(\.\d+)?)",
        "Chrome": r"Chrome\/(\d+(\.\d+)?)",
        "Chrome iOS": r"CriOS\/(\d+(\.\d+)?)",
        "UC Browser": r"(UCBrowser|UCWEB)\/(\d+(\.\d+)?)",
        "Safari": r"Version\/(\d+(\.\d+)?)",
        "Mobile Safari": r"Version\/(\d+(\.\d+)?)",
        "Opera": r"(Opera|OPR)\/(\d+(\.\d+)?)",
        "Firefox": r"Firefox\/(\d+(\.\d+)?)",
        "Firefox iOS": r"FxiOS\/(\d+(\.\d+)?)",
        "Konqueror": r"Konqueror:(\d+(\.\d+)?)",
        "BlackBerry": r"BlackBerry (\d+(\.\d+)?)",
        "Android Mobile": r"android\s(\d+(\.\d+)?)",
        "Samsung Internet": r"SamsungBrowser\/(\d+(\.\d+)?)",
        "Internet Explorer": r"(rv:|MSIE )(\d+(\.\d+)?)",
        "Mozilla": r"rv:(\d+(\.\d+)?)",
        "Whale Browser": r"Whale\/(\d+(\.\d+)?)",
    }.items()
}

# Checks before the vendor's, in mixpanel-js's order: (browser, any of these substrings).
_BEFORE_VENDOR = (
    ("Internet Explorer Mobile", ("IEMobile", "WPDesktop")),
    ("Samsung Internet", ("SamsungBrowser/",)),
    ("Microsoft Edge", ("Edge", "Edg/")),
    ("Facebook Mobile", ("FBIOS",)),
    ("Whale Browser", ("Whale/",)),
    ("Chrome", ("Chrome",)),
    ("Chrome iOS", ("CriOS",)),
    ("UC Browser", ("UCWEB", "UCBrowser")),
    ("Firefox iOS", ("FxiOS",)),
)
_AFTER_VENDOR = (
    ("Android Mobile", ("Android",)),
    ("Konqueror", ("Konqueror",)),
    ("Firefox", ("Firefox",)),
    ("Internet Explorer", ("MSIE", "Trident/")),
    ("Mozilla", ("Gecko",)),
)

_OS_CHECKS = (
    (re.compile(r"(iPhone|iPad|iPod)"), "iOS"),
    (re.compile(r"Android"), "Android"),
    (_BLACKBERRY, "BlackBerry"),
    (re.compile(r"Mac", re.IGNORECASE | re.ASCII), "Mac OS X"),
    (re.compile(r"Linux"), "Linux"),
    (re.compile(r"CrOS"), "Chrome OS"),
)
_WINDOWS = re.compile(r"Windows", re.IGNORECASE | re.ASCII)

_DEVICE_CHECKS = (
    (re.compile(r"iPad"), "iPad"),
    (re.compile(r"iPod"), "iPod Touch"),
    (re.compile(r"iPhone"), "iPhone"),
    (_BLACKBERRY, "BlackBerry"),
    (re.compile(r"Android"), "Android"),
)
_WINDOWS_PHONE = re.compile(r"Windows Phone", re.IGNORECASE | re.ASCII)


def inferred_vendor(user_agent: str) -> str:
    """``navigator.vendor`` as far as the user agent tells it; only "Apple" matters to the SDK."""
    if "AppleWebKit" in user_agent and "Android" not in user_agent:
        return "Apple Computer, Inc."
    return ""


def inferred_opera(user_agent: str) -> bool:
    """Whether ``window.opera`` exists: only in Presto-based Opera."""
    return "Presto/" in user_agent


def browser(user_agent: str, vendor: str, opera: bool) -> str:
    """mixpanel-js ``_.info.browser``: the order of the checks matters, as there."""
    if opera or " OPR/" in user_agent:
        return "Opera Mini" if "Mini" in user_agent else "Opera"
    if _BLACKBERRY.search(user_agent):
        return "BlackBerry"
    found = _first_containing(_BEFORE_VENDOR, user_agent)
    if found:
        return found
    if "Apple" in vendor:
        return "Mobile Safari" if "Mobile" in user_agent else "Safari"
    return _first_containing(_AFTER_VENDOR, user_agent)


def _first_containing(checks: tuple[tuple[str, tuple[str, ...]], ...], user_agent: str) -> str:
    for name, needles in checks:
        if any(needle in user_agent for needle in needles):
            return name
    return ""


def browser_version(user_agent: str, browser_name: str) -> float | None:
    """mixpanel-js ``_.info.browserVersion`` for the browser ``browser()`` named."""
    pattern = _VERSION_PATTERNS.get(browser_name)
    if pattern is None:
        return None
    match = pattern.search(user_agent)
    if match is None:
        return None
    version = float(match.group(pattern.groups - 1))
    # A forged thousand-digit version is infinite: not a number Mixpanel can store.
    return version if math.isfinite(version) else None


def operating_system(user_agent: str) -> str:
    """mixpanel-js ``_.info.os``."""
    if _WINDOWS.search(user_agent):
        return "Windows Phone" if "Phone" in user_agent or "WPDesktop" in user_agent else "Windows"
    for pattern, name in _OS_CHECKS:
        if pattern.search(user_agent):
            return name
    return ""


def device(user_agent: str) -> str:
    """mixpanel-js ``_.info.device``: phones and tablets only, nothing for desktops."""
    if _WINDOWS_PHONE.search(user_agent) or "WPDesktop" in user_agent:
        return "Windows Phone"
    for pattern, name in _DEVICE_CHECKS:
        if pattern.search(user_agent):
            return name
    return ""


def mixpanel_properties(user_agent: str) -> dict[str, Any]:
    """The four properties the web SDK would send for this user agent; empty ones left out."""
    name = browser(user_agent, inferred_vendor(user_agent), inferred_opera(user_agent))
    properties: dict[str, Any] = {
        "$browser": name,
        "$browser_version": browser_version(user_agent, name) if name else None,
        "$os": operating_system(user_agent),
        "$device": device(user_agent),
    }
    return {key: value for key, value in properties.items() if value not in ("", None)}
