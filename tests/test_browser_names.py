"""$browser, $browser_version, $os and $device as mixpanel-js names them, checked against mixpanel-js itself.

tests/data/browser_naming.jsonl holds what mixpanel-js's own code says for real user agents (written by
tools/derive_browser_expectations.js, see its header): the first line names the mixpanel-js version and the
sample, every other line a user agent, its real navigator.vendor, its share of traffic and the properties.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from conftest import text_app
from otel_mixpanel.enrich.browser_names import MIXPANEL_JS_VERSION, inferred_vendor, mixpanel_properties
from otel_mixpanel.enrich.user_agent import parse_user_agent

DATA = Path(__file__).parent / "data" / "browser_naming.jsonl"
NAMED = ("$browser", "$browser_version", "$os", "$device")


def _load() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *rows = (json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines())
    return header, rows


HEADER, ROWS = _load()
SAMPLE = [row for row in ROWS if row["source"] != "extra"]
EXTRA = [row for row in ROWS if row["source"] == "extra"]


def _named(properties: Any) -> dict[str, Any]:
    return {key: properties[key] for key in NAMED if key in properties}


def _agrees(row: dict[str, Any]) -> bool:
    return _named(parse_user_agent(row["ua"]).properties) == row["expected"]


def test_expectations_come_from_the_pinned_mixpanel_js():
    assert HEADER["mixpanel_js"] == MIXPANEL_JS_VERSION
    assert len(SAMPLE) > 900 and math.isclose(sum(row["weight"] for row in SAMPLE), 1.0, rel_tol=1e-6)


def test_weighted_agreement_with_mixpanel_js_over_real_traffic():
    disagreements = [row for row in SAMPLE if not _agrees(row)]
    agreement = 1 - sum(row["weight"] for row in disagreements)
    listed = "\n".join(
        f"{row['weight']:.5f} vendor={row['vendor']!r} {row['ua']}\n"
        f"    mixpanel-js {row['expected']}\n    exporter    {_named(parse_user_agent(row['ua']).properties)}"
        for row in disagreements)
    assert agreement >= 0.99, f"weighted agreement {agreement:.4f}; disagreements:\n{listed}"
    # What is left is a desktop browser emulating an iPhone (Chrome's device mode: an iPhone
    # Safari user agent with Google's vendor), which no user agent can tell apart.
    assert all(row["vendor"] == "Google Inc." and "iPhone" in row["ua"] for row in disagreements), listed


@pytest.mark.parametrize("row", EXTRA, ids=[row["ua"][:90] for row in EXTRA])
def test_agrees_with_mixpanel_js_on_browsers_the_sample_lacks(row):
    assert _named(parse_user_agent(row["ua"]).properties) == row["expected"]


def test_vendor_inferred_from_the_user_agent_matches_the_real_one_where_mixpanel_js_reads_it():
    # Only "Apple" in the vendor changes mixpanel-js's answer.
    wrong = [row for row in ROWS
             if ("Apple" in inferred_vendor(row["ua"])) != ("Apple" in row["vendor"])
             and "Chrome" not in row["ua"] and "CriOS" not in row["ua"] and "FxiOS" not in row["ua"]]
    assert sum(row["weight"] for row in wrong) < 0.001, [row["ua"] for row in wrong]


IPHONE_CHROME = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                 "CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1")
ANDROID_CHROME = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Mobile Safari/537.36")
WINDOWS_EDGE = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70")
MAC_CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")
MAC_SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/18.1 Safari/605.1.15")
IPHONE_GOOGLE_APP = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko) GSA/343.0.695551749 Mobile/15E148 Safari/604.1")
ANDROID_FIREFOX = "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0"
IPHONE_FACEBOOK = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                   "Mobile/22B83 [FBAN/FBIOS;FBAV/489.0.0.47.107;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/18.1]")
SAMSUNG = ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
           "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36")


@pytest.mark.parametrize(("user_agent", "expected"), [
    # ua-parser: Chrome Mobile, device K.
    (ANDROID_CHROME, {"$browser": "Chrome", "$browser_version": 131, "$os": "Android", "$device": "Android"}),
    # ua-parser: Chrome Mobile iOS.
    (IPHONE_CHROME, {"$browser": "Chrome iOS", "$browser_version": 131, "$os": "iOS", "$device": "iPhone"}),
    # ua-parser: Edge.
    (WINDOWS_EDGE, {"$browser": "Microsoft Edge", "$browser_version": 131, "$os": "Windows"}),
    # ua-parser: device Mac. mixpanel-js names no desktop device.
    (MAC_CHROME, {"$browser": "Chrome", "$browser_version": 131, "$os": "Mac OS X"}),
    (MAC_SAFARI, {"$browser": "Safari", "$browser_version": 18.1, "$os": "Mac OS X"}),
    # ua-parser: Google. mixpanel-js sees Apple's vendor and "Mobile", and finds no Version/.
    (IPHONE_GOOGLE_APP, {"$browser": "Mobile Safari", "$os": "iOS", "$device": "iPhone"}),
    # mixpanel-js checks "Android" before "Firefox"; its version pattern wants a lower-case "android".
    (ANDROID_FIREFOX, {"$browser": "Android Mobile", "$os": "Android", "$device": "Android"}),
    (IPHONE_FACEBOOK, {"$browser": "Facebook Mobile", "$os": "iOS", "$device": "iPhone"}),
    (SAMSUNG, {"$browser": "Samsung Internet", "$browser_version": 26, "$os": "Android", "$device": "Android"}),
])
def test_names_as_mixpanel_js_gives_them(user_agent, expected):
    assert _named(parse_user_agent(user_agent).properties) == expected
    assert mixpanel_properties(user_agent) == expected


@pytest.mark.parametrize(("user_agent", "expected"), [
    (ANDROID_CHROME, {"$browser": "Chrome Mobile", "$browser_version": 131, "$os": "Android", "$device": "K"}),
    (MAC_CHROME, {"$browser": "Chrome", "$browser_version": 131, "$os": "Mac OS X", "$device": "Mac"}),
    (WINDOWS_EDGE, {"$browser": "Edge", "$browser_version": 131, "$os": "Windows"}),
])
def test_ua_parser_names_on_request(user_agent, expected):
    assert _named(parse_user_agent(user_agent, "ua-parser").properties) == expected


@pytest.mark.parametrize("user_agent", ["", "Xyzzy/3.2", "curl/8.4.0", "\x00\xff", "Chrome/" + "9" * 1000])
def test_nothing_is_sent_for_what_mixpanel_js_cannot_name(user_agent):
    properties = parse_user_agent(user_agent).properties
    assert "Other" not in properties.values() and "" not in properties.values()
    version = properties.get("$browser_version")
    assert version is None or math.isfinite(version)


def _searching_app(environ, start_response):
    trace.get_current_span().add_event("Searched", {"q": "boots"})
    return text_app(environ, start_response)


@pytest.mark.parametrize(("names", "expected"), [
    (None, ("Chrome", "Android", "Android")),
    ("ua-parser", ("Chrome Mobile", "Android", "K")),
])
def test_the_setting_chooses_the_names_on_every_event(site_factory, ingest, names, expected):
    site = site_factory(_searching_app, **({"browser_names": names} if names else {}))
    site.request("/search", headers={"User-Agent": ANDROID_CHROME})
    site.flush()
    events = ingest.events()
    assert events and any(event["event"] == "Searched" for event in events)
    for event in events:
        properties = event["properties"]
        assert (properties["$browser"], properties["$os"], properties.get("$device")) == expected
