"""The browser's current campaign, kept as mixpanel-browser 2.83.0 keeps its ``utm_*`` super properties
with its defaults (``store_google: true``, ``stop_utm_persistence: false``): a Flask site behind the real
OpenTelemetry WSGI middleware, a cookie-keeping client over loopback HTTP, and what the local Mixpanel
look-alike receives.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from otel_mixpanel.enrich.campaign import CAMPAIGN_PARAMETERS
from otel_mixpanel.enrich.first_touch import read_first_touch
from otel_mixpanel.web.device_id import DeviceIdOptions
from otel_mixpanel.web.first_touch import MAX_UTM_CHARS, FirstTouch, encode_first_touch, resolve_first_touch

from test_first_touch import (
    FIRST_TOUCH_COOKIE,
    GOOGLE_SEARCH,
    LANDING,
    Client,
    b64,
    received,
    site,  # noqa: F401 (fixture)
    stored_first_touch,
)

SPRING = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}


def campaign_of(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event["properties"].items() if k.startswith("utm_")}


def search_of(event: dict[str, Any]) -> tuple[str | None, str | None]:
    return event["properties"].get("$search_engine"), event["properties"].get("mp_keyword")


def test_a_landings_campaign_is_on_every_later_event_of_the_browser(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open(LANDING, referer=GOOGLE_SEARCH)
    assert {k: v for k, v in stored_first_touch(client.cookie(FIRST_TOUCH_COOKIE)).items()
            if k.startswith("utm_")} == SPRING
    client.open("/pricing", referer=client.base + "/")
    client.open("/login", form={"user": "u-1"}, referer=client.base + "/pricing")

    events, _ = received(shop_site, ingest, events=3, profiles=1)
    assert [e["event"] for e in events] == ["$mp_web_page_view", "$mp_web_page_view", "Logged In"]
    assert [campaign_of(e) for e in events] == [SPRING] * 3
    # Click ids are the landing page's only, as the SDK registers none.
    assert events[0]["properties"]["gclid"] == "abc" and "gclid" not in events[1]["properties"]


def test_a_new_campaign_replaces_the_values_it_has_and_the_pages_own_win(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open(LANDING, referer=GOOGLE_SEARCH)
    # register(campaignParams()) in the SDK: the page's values replace those stored, the others stay.
    client.open("/?utm_source=newsletter&utm_content=hero", referer="https://mail.example.org/")
    client.open("/pricing?utm_medium=", referer=client.base + "/")

    events, _ = received(shop_site, ingest, events=3)
    merged = {**SPRING, "utm_source": "newsletter", "utm_content": "hero"}
    assert [campaign_of(e) for e in events] == [SPRING, merged, merged]


def test_the_search_engine_and_words_stay_until_another_search_engine_sends_the_browser(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open("/", referer=GOOGLE_SEARCH)
    client.open("/pricing", referer=client.base + "/")
    client.open("/login", form={"user": "u-2"}, referer=client.base + "/pricing")
    # register(searchInfo(referrer)) in the SDK: a search without words keeps the older words.
    client.open("/", referer="https://www.bing.com/")
    client.open("/pricing", referer="https://mail.example.org/")

    events, _ = received(shop_site, ingest, events=5, profiles=1)
    assert [search_of(e) for e in events] == [("google", "running shoes")] * 3 + [("bing", "running shoes")] * 2


def test_stored_search_words_are_redacted_when_the_referrers_are():
    attributes = {"otel_mixpanel.initial_referrer": "$direct", "otel_mixpanel.campaign.search_engine": "bing",
                  "otel_mixpanel.campaign.mp_keyword": "my secret", "otel_mixpanel.campaign.utm_source": "x"}
    assert dict(read_first_touch(attributes, frozenset({"q"})).campaign) == {
        "$search_engine": "bing", "mp_keyword": "redacted", "utm_source": "x"}
    assert read_first_touch(attributes, frozenset({"token"})).campaign["mp_keyword"] == "my secret"


def test_the_mixpanel_js_cookies_stored_campaign_is_used_in_hybrid(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    # As mixpanel-js writes its cookie: encodeURIComponent(JSON.stringify(props)), utm_* registered at the top.
    js = "mp_test-token_mixpanel=" + urllib.parse.quote(json.dumps({
        "distinct_id": "$device:0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b", "$device_id": "0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b",
        "$initial_referrer": "$direct", "$initial_referring_domain": "$direct",
        "utm_source": "facebook", "utm_medium": "social", "utm_term": None, "utm_bogus": "x",
        "$search_engine": "duckduckgo", "mp_keyword": "red shoes",
    }), safe="-_.!~*'()")
    client.open("/pricing", cookie=js)
    # Our cookie starts from the SDK's, for requests the SDK's cookie does not reach.
    assert stored_first_touch(client.cookie(FIRST_TOUCH_COOKIE))["utm_source"] == "facebook"
    client.open("/?utm_campaign=summer", cookie=js)

    events, _ = received(shop_site, ingest, events=2)
    stored = {"utm_source": "facebook", "utm_medium": "social"}
    assert [campaign_of(e) for e in events] == [stored, {**stored, "utm_campaign": "summer"}]
    assert [search_of(e) for e in events] == [("duckduckgo", "red shoes")] * 2


def test_logout_clears_the_campaign_as_mixpanel_reset_does(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open(LANDING, referer=GOOGLE_SEARCH)
    client.open("/logout")
    client.open("/pricing")

    events, _ = received(shop_site, ingest, events=3)
    # The logout request itself still belongs to the visit that had the campaign.
    assert [campaign_of(e) for e in events] == [SPRING, SPRING, {}]
    assert [search_of(e) for e in events] == [("google", "running shoes")] * 2 + [(None, None)]


def test_stop_utm_persistence_keeps_the_campaign_on_its_own_page_only(site, ingest):
    shop_site = site(stop_utm_persistence=True)
    client = Client(shop_site)
    # A cookie stored while persistence was on is cleared, as the SDK unregisters the utm_* at load.
    earlier = FirstTouch("$direct", "$direct", (), (("utm_source", "old"),))
    client.open(LANDING, referer=GOOGLE_SEARCH,
                cookie=f"{FIRST_TOUCH_COOKIE}={encode_first_touch(earlier)}")
    assert not [k for k in stored_first_touch(client.cookie(FIRST_TOUCH_COOKIE)) if k.startswith("utm_")]
    client.open("/pricing")

    events, _ = received(shop_site, ingest, events=2)
    assert [campaign_of(e) for e in events] == [SPRING, {}]
    # The SDK keeps the search engine whatever stop_utm_persistence says.
    assert [search_of(e) for e in events] == [("google", "running shoes")] * 2


# --- cookie decisions, without a server -------------------------------------------------------


OPTIONS = DeviceIdOptions.build(environ={}, mixpanel_token="tok")


@pytest.mark.parametrize("stored", [
    {"utm_source": 5, "utm_medium": ["x"], "utm_campaign": {"a": 1}, "utm_term": "  ", "utm_content": None},
    {"utm_evil": "x", "UTM_SOURCE": "y", "gclid": "z", "$search_engine": ["google"], "mp_keyword": 3},
])
def test_odd_stored_values_are_left_out(stored):
    value = b64(json.dumps({"$initial_referrer": "$direct", **stored}))
    state = resolve_first_touch(f"{FIRST_TOUCH_COOKIE}={value}", None, None, OPTIONS)
    assert state.source == "cookie" and state.touch.campaign == () == state.touch.search
    js = "mp_tok_mixpanel=" + urllib.parse.quote(json.dumps({"$initial_referrer": "$direct", **stored}))
    assert resolve_first_touch(js, None, None, OPTIONS).touch[3:] == ((), ())


@pytest.mark.parametrize("character", ["a", "é", "😀", "\x00"])
def test_a_huge_campaign_is_cut_to_fit_the_cookie_and_reads_back(character):
    query = "&".join(f"{name}={urllib.parse.quote(character * 5000)}" for name in CAMPAIGN_PARAMETERS)
    referrer = "https://www.google.com/search?q=" + urllib.parse.quote(character * 3000)
    state = resolve_first_touch("", referrer, query, OPTIONS)
    assert [len(value) for _, value in state.touch.campaign] == [MAX_UTM_CHARS] * len(CAMPAIGN_PARAMETERS)
    # The words of a referrer cut at 1024 characters.
    assert state.touch.search[0] == ("$search_engine", "google") and state.touch.search[1][1].startswith(character * 50)
    value = encode_first_touch(state.touch)
    assert len(value) <= 3500
    again = resolve_first_touch(f"{FIRST_TOUCH_COOKIE}={value}", None, None, OPTIONS)
    assert [key for key, _ in again.touch.campaign] == list(CAMPAIGN_PARAMETERS)
    assert all(text and set(text) == {character} for _, text in again.touch.campaign)
    assert again.touch.search[0] == ("$search_engine", "google") and again.touch.search[1][1].startswith(character)


def test_a_stored_campaign_unchanged_by_the_page_is_not_written_again():
    first = resolve_first_touch("", None, "utm_source=a&utm_medium=b", OPTIONS)
    header = f"{FIRST_TOUCH_COOKIE}={encode_first_touch(first.touch)}"
    assert not resolve_first_touch(header, None, "utm_medium=b&q=1", OPTIONS).write_cookie
    changed = resolve_first_touch(header, None, "utm_medium=c", OPTIONS)
    assert changed.write_cookie and changed.touch.campaign == (("utm_source", "a"), ("utm_medium", "c"))
    with pytest.raises(ValueError, match="stop_utm_persistence"):
        DeviceIdOptions.build(environ={}, stop_utm_persistence="yes")
