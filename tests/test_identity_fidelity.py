"""Identity as Mixpanel's web SDK has it: placeholder ids, both ID Merge modes, profiles of known users."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import otel_mixpanel
from conftest import DESKTOP_CHROME, text_app
from otel_mixpanel.enrich.identity import distinct_id, identify_properties, identity_properties
from otel_mixpanel.placeholder_ids import PLACEHOLDER_IDS, is_placeholder_id
from otel_mixpanel.spans import identity_text
from otel_mixpanel.web.device_id import valid_device_id
from test_business_events_identity import by_name, serve

DEVICE = "5b9a1f4e-3c2d-4a8b-9f1e-2d3c4b5a6f70"


@pytest.mark.parametrize("placeholder", ["n/a", "NA", "N/A", " null ", "Undefined",
                                         "00000000-0000-0000-0000-000000000000"])
def test_placeholder_user_ids_are_no_user(site_factory, ingest, placeholder):
    def handler(tracer, environ):
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", DEVICE)
        span.set_attribute("enduser.id", placeholder)

    site = serve(site_factory, handler)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = by_name(ingest, "$mp_web_page_view")
    assert view["properties"]["distinct_id"] == f"$device:{DEVICE}"
    assert "$user_id" not in view["properties"]
    assert ingest.rejected == []


def test_one_placeholder_list_for_user_ids_device_ids_and_the_ingest_server():
    for placeholder in PLACEHOLDER_IDS:
        assert identity_text(placeholder) is None
        assert identity_text(placeholder.upper()) is None
        assert valid_device_id(placeholder) is None
    assert is_placeholder_id("n/a") and is_placeholder_id("NA") and not is_placeholder_id("nathalie")
    assert identity_text("nathalie") == "nathalie"


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.sampled_from(sorted(PLACEHOLDER_IDS)).flatmap(
    lambda word: st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper)))),
    st.text(max_size=40), st.text(alphabet="0-abcdefABCDEF\u0130\u212a", max_size=40)))
def test_placeholders_are_told_as_lowering_every_id_would(text):
    assert is_placeholder_id(text) == (text.lower() in PLACEHOLDER_IDS)


def mixpanel_js_cookie(device: str) -> str:
    """The cookie mixpanel-browser 2.83.0 writes at init for a new anonymous browser (encodeURIComponent JSON)."""
    state = {"distinct_id": f"$device:{device}", "$device_id": device, "$initial_referrer": "$direct",
             "$initial_referring_domain": "$direct"}
    return f"mp_test-token_mixpanel={quote(json.dumps(state, separators=(',', ':')), safe='')}"


@pytest.mark.parametrize("id_merge", ["simplified", "original"])
def test_a_browser_running_mixpanel_js_is_one_user_with_the_servers_events(site_factory, ingest, id_merge):
    from otel_mixpanel.web import MixpanelMiddleware

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/login":
            otel_mixpanel.identify("alice")
        return text_app(environ, start_response)

    site = site_factory(MixpanelMiddleware(app, mixpanel_token="test-token"), id_merge=id_merge)
    cookie = mixpanel_js_cookie(DEVICE)
    for path in ("/", "/login"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME, "Cookie": cookie})
    site.flush()
    views = {e["properties"]["current_url_path"]: e["properties"] for e in by_name(ingest, "$mp_web_page_view")}
    # The SDK's own anonymous events say distinct_id "$device:<id>", $device_id "<id>": so do the server's.
    assert (views["/"]["distinct_id"], views["/"]["$device_id"]) == (f"$device:{DEVICE}", DEVICE)
    assert (views["/login"]["distinct_id"], views["/login"]["$user_id"]) == ("alice", "alice")
    identifies = by_name(ingest, "$identify")
    if id_merge == "simplified":
        assert identifies == []
    else:
        [identify] = identifies
        props = identify["properties"]
        # mixpanel-js's identify() sends {distinct_id: user, $anon_distinct_id: previous distinct_id}.
        assert (props["distinct_id"], props["$anon_distinct_id"]) == ("alice", f"$device:{DEVICE}")
        assert (props["$identified_id"], props["$anon_id"]) == ("alice", f"$device:{DEVICE}")
        assert ingest.geolocation_ip(identify) == "127.0.0.1"


def test_identity_functions_follow_mixpanel_js():
    assert distinct_id(DEVICE, None) == f"$device:{DEVICE}"
    assert distinct_id(DEVICE, "alice") == distinct_id(None, "alice") == "alice"
    assert distinct_id(None, None) == ""
    assert identity_properties(DEVICE, None) == {"distinct_id": f"$device:{DEVICE}", "$device_id": DEVICE}
    assert identity_properties(None, "alice") == {"distinct_id": "alice", "$user_id": "alice"}
    assert identity_properties(None, None) == {"distinct_id": ""}
    assert identify_properties(DEVICE, "alice") == {
        "distinct_id": "alice", "$device_id": DEVICE, "$user_id": "alice",
        "$anon_distinct_id": f"$device:{DEVICE}", "$identified_id": "alice", "$anon_id": f"$device:{DEVICE}",
    }


def profile_site(site_factory, **settings):
    def app(environ, start_response):
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", DEVICE)
        otel_mixpanel.set_profile({"plan": "pro"})
        if environ["PATH_INFO"] == "/login":
            # Later in the request than set_profile(): the whole request is the user's.
            otel_mixpanel.identify("alice")
        elif environ["PATH_INFO"] == "/account":
            otel_mixpanel.set_user("alice")
        return text_app(environ, start_response)

    return site_factory(app, **settings)


def test_profile_updates_go_out_for_identified_users_only(site_factory, ingest):
    site = profile_site(site_factory)
    for path in ("/", "/pricing", "/login", "/account"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    updates = ingest.profile_updates()
    # The two anonymous requests make no profile, as mixpanel-js holds people updates until identify().
    assert [u["$distinct_id"] for u in updates] == ["alice", "alice"]
    assert all(u["$set"] == {"plan": "pro"} for u in updates)
    assert len(by_name(ingest, "$mp_web_page_view")) == 4, "events of anonymous visitors are still sent"


def test_anonymous_profiles_can_be_turned_on(site_factory, ingest):
    site = profile_site(site_factory, anonymous_profiles=True)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.request("/account", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(u["$distinct_id"] for u in ingest.profile_updates()) == [f"$device:{DEVICE}", "alice"]
