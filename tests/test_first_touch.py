"""First-touch attribution, end to end: a Flask site behind the real OpenTelemetry WSGI
middleware, a cookie-keeping client over loopback HTTP, and what the local Mixpanel
look-alike receives. Property names and values follow mixpanel-browser 2.83.0.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

import flask
import pytest
from hypothesis import given, settings, strategies as st

from otel_mixpanel import api
from otel_mixpanel.enrich.campaign import CAMPAIGN_PARAMETERS
from otel_mixpanel.enrich.first_touch import js_referring_domain, read_first_touch
from otel_mixpanel.web import current_device_id, reset_device_id
from otel_mixpanel.web.device_id import DeviceIdOptions, DeviceState
from otel_mixpanel.web.first_touch import (
    MAX_REFERRER_CHARS,
    encode_first_touch,
    first_touch_cookies,
    resolve_first_touch,
)
from otel_mixpanel.web.flask import MixpanelFlask

from conftest import DESKTOP_CHROME, NAVIGATION, Site

FIRST_TOUCH_COOKIE = "otel_mp_first_touch"
GOOGLE_SEARCH = "https://www.google.com/search?q=running+shoes"
LANDING = "/?utm_source=google&utm_medium=cpc&utm_campaign=spring&gclid=abc"
INITIAL_UTM = {f"initial_{name}": None for name in CAMPAIGN_PARAMETERS}


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def stored_first_touch(value: str | None) -> dict[str, Any]:
    """The first-touch cookie's value: base64url (unpadded) JSON."""
    assert value
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def _next_millisecond() -> None:
    """Mixpanel's event times are milliseconds and received() orders events by them: the next request starts
    in a later millisecond than this one ended, so that the events of two requests never tie."""
    ended = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == ended:
        time.sleep(0.0002)


class Client:
    """A browser as the server sees it: a User-Agent and a page load's headers, the cookies it was given,
    the Referer it is told to send."""

    def __init__(self, site: Site) -> None:
        self.base = f"http://127.0.0.1:{site.port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def open(self, path: str, referer: str | None = None, form: dict[str, str] | None = None,
             cookie: str | None = None) -> tuple[str, list[str]]:
        headers = {"User-Agent": DESKTOP_CHROME, **NAVIGATION}
        if referer:
            headers["Referer"] = referer
        if cookie:
            headers["Cookie"] = cookie
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        with self.opener.open(request, timeout=10) as response:
            answer = response.read().decode(), response.headers.get_all("Set-Cookie") or []
        _next_millisecond()
        return answer

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def shop(**options: Any) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/")
    @app.get("/pricing")
    def page() -> str:
        return current_device_id() or ""

    @app.post("/login")
    def login() -> str:
        api.identify(flask.request.form["user"])
        api.track("Logged In")
        return "welcome"

    @app.get("/logout")
    def logout() -> str:
        reset_device_id()
        return "bye"

    MixpanelFlask(app, **options)
    return app


@pytest.fixture
def site(site_factory: Callable[..., Site]) -> Callable[..., Site]:
    def make(**options: Any) -> Site:
        return site_factory(shop(**options), events_api="track")
    return make


def received(site: Site, ingest: Any, events: int, profiles: int = 0) -> tuple[list[dict], list[dict]]:
    site.flush()
    got = sorted(ingest.wait_for(events), key=lambda e: (e["properties"]["time"], e["event"]))
    assert len(got) == events, got
    updates = ingest.wait_for(profiles, what="profiles")
    assert len(updates) == profiles, updates
    return got, updates


def test_search_landing_is_the_first_touch_of_every_event_and_of_the_profile_at_login(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open(LANDING, referer=GOOGLE_SEARCH)
    client.open("/pricing", referer=client.base + "/")
    client.open("/?utm_source=newsletter", referer="https://mail.example.org/")
    assert client.open("/login", form={"user": "u-42"}, referer=client.base + "/pricing")[0] == "welcome"

    events, profiles = received(shop_site, ingest, events=4, profiles=1)
    assert [e["event"] for e in events] == ["$mp_web_page_view"] * 3 + ["Logged In"]
    for event in events:
        assert event["properties"]["$initial_referrer"] == GOOGLE_SEARCH, event
        assert event["properties"]["$initial_referring_domain"] == "www.google.com", event
    (update,) = profiles
    assert update["$distinct_id"] == "u-42" and update["$token"] == "test-token" and update["$ip"] == "127.0.0.1"
    assert update["$set_once"] == {
        "$initial_referrer": GOOGLE_SEARCH, "$initial_referring_domain": "www.google.com",
        **INITIAL_UTM, "initial_utm_source": "google", "initial_utm_medium": "cpc", "initial_utm_campaign": "spring",
    }


def test_a_direct_first_visit_is_direct_and_a_later_campaign_gives_the_initial_utm(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open("/pricing")
    client.open("/?utm_source=newsletter&utm_content=hero", referer="https://mail.example.org/inbox")
    client.open("/?utm_source=twitter")
    client.open("/login", form={"user": "u-7"})

    events, (update,) = received(shop_site, ingest, events=4, profiles=1)
    for event in events:
        assert event["properties"]["$initial_referrer"] == "$direct"
        assert event["properties"]["$initial_referring_domain"] == "$direct"
    assert update["$set_once"] == {"$initial_referrer": "$direct", "$initial_referring_domain": "$direct",
                                   **INITIAL_UTM, "initial_utm_source": "newsletter", "initial_utm_content": "hero"}


def test_no_campaign_ever_sets_no_initial_utm(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open("/", referer="http://blog.example.net:8080/post/1")
    client.open("/login", form={"user": "u-8"})
    events, (update,) = received(shop_site, ingest, events=2, profiles=1)
    assert update["$set_once"] == {"$initial_referrer": "http://blog.example.net:8080/post/1",
                                   "$initial_referring_domain": "blog.example.net:8080"}
    assert all(e["properties"]["$initial_referring_domain"] == "blog.example.net:8080" for e in events)


def _js_cookie(properties: dict[str, Any]) -> str:
    # As mixpanel-js writes it: encodeURIComponent(JSON.stringify(props)).
    return "mp_test-token_mixpanel=" + urllib.parse.quote(json.dumps(properties), safe="-_.!~*'()")


def test_the_mixpanel_js_cookie_first_touch_wins(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    js = _js_cookie({
        "distinct_id": "$device:0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b", "$device_id": "0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b",
        "$initial_referrer": "https://duckduckgo.com/", "$initial_referring_domain": "duckduckgo.com",
        "__mpso": {"$initial_referrer": "https://duckduckgo.com/", "$initial_referring_domain": "duckduckgo.com",
                   "initial_utm_source": "ddg", "initial_utm_medium": None},
    })
    client.open(LANDING, referer=GOOGLE_SEARCH, cookie=js)
    # Our cookie now holds the SDK's first touch, which stays when the SDK's cookie is gone.
    assert stored_first_touch(client.cookie(FIRST_TOUCH_COOKIE))["$initial_referrer"] == "https://duckduckgo.com/"
    client.open("/login", form={"user": "u-9"})
    events, (update,) = received(shop_site, ingest, events=2, profiles=1)
    assert {e["properties"]["$initial_referrer"] for e in events} == {"https://duckduckgo.com/"}
    assert update["$set_once"] == {"$initial_referrer": "https://duckduckgo.com/",
                                   "$initial_referring_domain": "duckduckgo.com", **INITIAL_UTM,
                                   "initial_utm_source": "ddg"}


def test_sensitive_parameters_of_the_referrer_are_redacted(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open("/", referer="https://partner.example.com/welcome?token=s3cr3t&ref=7")
    (event,), _ = received(shop_site, ingest, events=1)
    assert event["properties"]["$initial_referrer"] == "https://partner.example.com/welcome?token=redacted&ref=7"
    assert "s3cr3t" not in urllib.parse.unquote(json.dumps(event))


def test_logout_starts_a_new_first_touch(site, ingest):
    shop_site = site()
    client = Client(shop_site)
    client.open(LANDING, referer=GOOGLE_SEARCH)
    _, set_cookies = client.open("/logout")
    assert any(c.startswith(f"{FIRST_TOUCH_COOKIE}=;") and "Max-Age=0" in c for c in set_cookies), set_cookies
    assert client.cookie(FIRST_TOUCH_COOKIE) is None
    client.open("/pricing", referer=client.base + "/logout")
    events, _ = received(shop_site, ingest, events=3)
    # The logout request itself still belongs to the user who left.
    assert [e["properties"]["$initial_referrer"] for e in events] == [GOOGLE_SEARCH, GOOGLE_SEARCH,
                                                                       client.base + "/logout"]


def test_turned_off_it_sets_no_cookie_and_sends_nothing(site, ingest):
    shop_site = site(first_touch=False)
    client = Client(shop_site)
    _, set_cookies = client.open(LANDING, referer=GOOGLE_SEARCH)
    assert [c.split("=")[0] for c in set_cookies] == ["otel_mp_device_id"]
    client.open("/login", form={"user": "u-1"})
    events, _ = received(shop_site, ingest, events=2)
    assert not [k for e in events for k in e["properties"] if k.startswith("$initial")]


# --- cookie decisions, without a server -------------------------------------------------------


OPTIONS = DeviceIdOptions.build(environ={}, mixpanel_token="tok")


def test_first_visit_cookie_round_trips_and_only_new_utm_rewrites_it():
    first = resolve_first_touch("", "https://www.bing.com/search?q=x", "utm_source=bing&utm_term=x", OPTIONS)
    assert first.source == "new" and first.write_cookie
    assert (first.touch.referrer, first.touch.referring_domain) == ("https://www.bing.com/search?q=x", "www.bing.com")
    header = f"{FIRST_TOUCH_COOKIE}={encode_first_touch(first.touch)}"
    same = resolve_first_touch(header, "https://elsewhere.example/", "utm_term=x", OPTIONS)
    assert same.source == "cookie" and same.touch == first.touch and not same.write_cookie
    again = resolve_first_touch(header, "https://elsewhere.example/", "utm_source=other", OPTIONS)
    # The first touch stays; the current campaign takes the new source and keeps the stored term.
    assert again.touch._replace(campaign=()) == first.touch._replace(campaign=()) and again.write_cookie
    assert again.touch.campaign == (("utm_source", "other"), ("utm_term", "x"))

    no_utm = resolve_first_touch("", None, "", OPTIONS)
    header = f"{FIRST_TOUCH_COOKIE}={encode_first_touch(no_utm.touch)}"
    grown = resolve_first_touch(header, None, "utm_campaign=later", OPTIONS)
    assert grown.write_cookie and grown.touch.referrer == "$direct"
    assert grown.touch.utm == (("initial_utm_campaign", "later"),)


def test_cookies_for_the_response():
    state = resolve_first_touch("", None, None, OPTIONS)
    device = DeviceState("0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b", "new", True, secure_request=True)
    (cookie,) = first_touch_cookies(state, device, OPTIONS)
    name, _, value = cookie.header().partition("=")
    assert name == FIRST_TOUCH_COOKIE and re.fullmatch(r"[A-Za-z0-9_-]+", value.split(";")[0])
    assert stored_first_touch(value.split(";")[0]) == {"$initial_referrer": "$direct",
                                                       "$initial_referring_domain": "$direct"}
    assert "; Secure; HttpOnly; SameSite=Lax" in cookie.header()
    device.device_id = "another"
    (deleted,) = first_touch_cookies(state, device, OPTIONS)
    assert deleted.value == "" and deleted.max_age == 0
    assert first_touch_cookies(None, device, OPTIONS) == []


@pytest.mark.parametrize("character", ["a", "é", "😀", "\x00"])
def test_a_huge_first_touch_is_cut_to_fit_a_cookie_and_reads_back(character):
    state = resolve_first_touch("", "https://x.example/" + character * 3000,
                                "&".join(f"{n}={character * 500}" for n in CAMPAIGN_PARAMETERS), OPTIONS)
    assert len(state.touch.referrer) == MAX_REFERRER_CHARS and len(state.touch.utm) == len(CAMPAIGN_PARAMETERS)
    value = encode_first_touch(state.touch)
    assert len(value) <= 3500
    again = resolve_first_touch(f"{FIRST_TOUCH_COOKIE}={value}", None, None, OPTIONS)
    assert again.source == "cookie" and again.touch.referrer.startswith("https://x.example/" + character)
    assert [key for key, _ in again.touch.utm] == [f"initial_{n}" for n in CAMPAIGN_PARAMETERS]


@pytest.mark.parametrize("cookie", [
    f"{FIRST_TOUCH_COOKIE}=%7Bbroken",
    f"{FIRST_TOUCH_COOKIE}=e30",  # {} in base64url
    f"{FIRST_TOUCH_COOKIE}=!!!",
    f"{FIRST_TOUCH_COOKIE}=%5B1%2C2%5D",
    f"{FIRST_TOUCH_COOKIE}=" + b64(json.dumps({"$initial_referrer": 5})),
    f"{FIRST_TOUCH_COOKIE}=" + b64(json.dumps({"$initial_referrer": "  "})),
    f"{FIRST_TOUCH_COOKIE}=" + b64("[1, 2]"),
    "mp_tok_mixpanel=" + urllib.parse.quote(json.dumps({"$initial_referrer": ["x"], "__mpso": 3})),
])
def test_unusable_cookies_mean_a_new_first_touch(cookie):
    state = resolve_first_touch(cookie, "https://a.example/", None, OPTIONS)
    assert state.source == "new" and state.touch.referrer == "https://a.example/"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=200), st.text(max_size=200))
def test_any_request_gives_a_first_touch_the_exporter_can_read(cookie, referer, query):
    state = resolve_first_touch(cookie, referer, query, OPTIONS)
    assert state.touch.referrer and state.touch.referring_domain
    encoded = encode_first_touch(state.touch)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", encoded) and len(encoded) <= 3500
    attributes = {"otel_mixpanel.initial_referrer": state.touch.referrer,
                  "otel_mixpanel.initial_referring_domain": state.touch.referring_domain}
    attributes.update({f"otel_mixpanel.{k}": v for k, v in state.touch.utm})
    properties = read_first_touch(attributes, frozenset({"token"}))
    assert properties.every_event["$initial_referring_domain"]
    json.dumps(dict(properties.profile))


@pytest.mark.parametrize("referrer, domain", [
    ("https://www.google.com/search?q=1", "www.google.com"),
    ("http://127.0.0.1:8000/x", "127.0.0.1:8000"),
    ("android-app://com.google.android.gm/", "com.google.android.gm"),
    ("https:", ""),
    ("no-slashes", ""),
    ("https://alice:s3cret@partner.example:8443/x", "partner.example:8443"),  # forged: no browser sends it
])
def test_referring_domain_as_mixpanel_js_derives_it(referrer, domain):
    assert js_referring_domain(referrer) == domain
