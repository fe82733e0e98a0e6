"""HTTP server spans from the real WSGI instrumentation become page views, in every semconv mode."""

from __future__ import annotations

import pytest

from conftest import DESKTOP_CHROME, GOOGLEBOT, IPHONE, SEMCONV_MODES, text_app, without_volatile

CAMPAIGN_URL = ("/shop/shoes?utm_source=newsletter&utm_medium=email&utm_campaign=winter&utm_content=hero"
                "&utm_term=boots&utm_id=42&gclid=g-1&fbclid=f-1&msclkid=m-1&ttclid=t-1&wbraid=w-1&color=red")
VISIT_HEADERS = {"Host": "shop.example.com", "User-Agent": IPHONE,
                 "Referer": "https://www.google.com/search?q=boots"}


def page_views(ingest, name="$mp_web_page_view"):
    return [e for e in ingest.events() if e["event"] == name]


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_page_view_carries_page_browser_referrer_and_campaign(site_factory, ingest, mode):
    site = site_factory(text_app, mode=mode, capture_headers="referer")
    assert site.request(CAMPAIGN_URL, headers=VISIT_HEADERS)[0] == 200
    site.flush()

    [view] = page_views(ingest)
    props = view["properties"]
    assert props["$current_url"] == "http://shop.example.com" + CAMPAIGN_URL
    assert props["current_url_path"] == "/shop/shoes"
    assert props["current_url_search"] == CAMPAIGN_URL[len("/shop/shoes"):]
    assert props["current_url_protocol"] == "http:"
    assert props["current_domain"] == "shop.example.com"
    assert (props["$browser"], props["$browser_version"], props["$os"], props["$device"]) == (
        "Mobile Safari", 17.1, "iOS", "iPhone")
    assert props["$referrer"] == "https://www.google.com/search?q=boots"
    assert props["$referring_domain"] == "www.google.com"
    assert props["$search_engine"] == "google"
    assert {k: props[k] for k in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "utm_id")} == {
        "utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "winter", "utm_content": "hero",
        "utm_term": "boots", "utm_id": "42"}
    assert {k: props[k] for k in ("gclid", "fbclid", "msclkid", "ttclid", "wbraid")} == {
        "gclid": "g-1", "fbclid": "f-1", "msclkid": "m-1", "ttclid": "t-1", "wbraid": "w-1"}
    assert "color" not in props
    assert props["ip"] == "127.0.0.1"
    assert isinstance(props["time"], int)


def test_same_request_gives_same_event_in_all_three_modes(site_factory, ingest):
    seen = []
    for mode in SEMCONV_MODES:
        site = site_factory(text_app, mode=mode, capture_headers="referer")
        site.request(CAMPAIGN_URL, headers={**VISIT_HEADERS, "Cookie": "a=b"})
        site.flush()
        [view] = page_views(ingest)[len(seen):]
        seen.append(view)
    first = without_volatile(seen[0]["properties"])
    for other in seen[1:]:
        assert without_volatile(other["properties"]) == first
        assert other["event"] == seen[0]["event"]


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_wsgiref_gives_the_path_even_where_the_instrumentation_records_none(site_factory, ingest, mode):
    # wsgiref passes no RAW_URI: the stable mode records no url.path, the old one writes http.url.
    site = site_factory(text_app, mode=mode, server="wsgiref")
    site.request("/docs/intro?utm_source=x", headers={"Host": "docs.example.com", "User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["current_url_path"] == "/docs/intro"
    assert view["properties"]["current_domain"] == "docs.example.com"
    if mode == "http":
        assert "utm_source" not in view["properties"], "the stable mode under wsgiref records no query"
    else:
        assert view["properties"]["utm_source"] == "x"
        assert view["properties"]["$current_url"] == "http://docs.example.com/docs/intro?utm_source=x"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_only_get_requests_are_page_views(site_factory, ingest, method):
    site = site_factory(text_app)
    site.request("/form", method=method, headers={"User-Agent": DESKTOP_CHROME}, body=b"x=1")
    site.request("/form", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    views = page_views(ingest)
    assert len(views) == 1


def test_failed_responses_and_static_assets_are_not_page_views(site_factory, ingest):
    site = site_factory(text_app)
    for path in ("/missing/page", "/static/app.js", "/img/logo.PNG", "/favicon.ico", "/fonts/a.woff2", "/pricing"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert [v["properties"]["current_url_path"] for v in page_views(ingest)] == ["/pricing"]


def test_include_and_exclude_rules_and_event_name_are_configurable(site_factory, ingest):
    site = site_factory(text_app, page_view_include=["/app/*", "/"], page_view_exclude=["/app/health*"],
                        page_view_event="Page Viewed")
    for path in ("/", "/app/home", "/app/healthz", "/blog/post"):
        site.request(path, headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert sorted(v["properties"]["current_url_path"] for v in page_views(ingest, "Page Viewed")) == ["/", "/app/home"]
    assert page_views(ingest) == []


def test_page_views_can_be_turned_off(site_factory, ingest):
    site = site_factory(text_app, page_views=False)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert ingest.events() == []


def test_route_is_carried_when_the_framework_knows_it(site_factory, ingest):
    from opentelemetry import trace

    def routed_app(environ, start_response):
        trace.get_current_span().set_attribute("http.route", "/users/<id>")
        return text_app(environ, start_response)

    site = site_factory(routed_app)
    site.request("/users/17", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["http_route"] == "/users/<id>"
    assert view["event"] == "$mp_web_page_view", "the page is a property, never the event name"


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, "AlwaysOn-Monitor/1.0"])
def test_bots_produce_no_events_unless_asked(site_factory, ingest, user_agent):
    from opentelemetry import trace

    def app(environ, start_response):
        trace.get_current_span().add_event("Searched", {"q": "x"})
        return text_app(environ, start_response)

    site = site_factory(app)
    site.request("/", headers={"User-Agent": user_agent})
    site.flush()
    assert ingest.events() == []

    tracking = site_factory(app, track_bots=True)
    tracking.request("/", headers={"User-Agent": user_agent})
    tracking.flush()
    assert sorted(e["event"] for e in ingest.events()) == ["$mp_web_page_view", "Searched"]


def test_unknown_user_agent_fields_are_left_out(site_factory, ingest):
    site = site_factory(text_app)
    site.request("/", headers={"User-Agent": "Xyzzy/3.2"})
    site.request("/second", headers={})
    site.flush()
    for view in page_views(ingest):
        props = view["properties"]
        assert not {"$browser", "$os", "$device", "$browser_version"} & props.keys()
        assert "Other" not in props.values()


def test_works_under_simple_span_processor(site_factory, ingest):
    site = site_factory(text_app, processor="simple")
    site.request("/simple", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [view] = page_views(ingest)
    assert view["properties"]["$browser"] == "Chrome"
    assert view["properties"]["$os"] == "Windows"
