"""The client IP behind proxies, IP privacy, URL redaction and headers that never leave."""

from __future__ import annotations

import pytest
from opentelemetry import trace

import otel_mixpanel
from conftest import DESKTOP_CHROME, SEMCONV_MODES, text_app


def only_view(ingest):
    [view] = [e for e in ingest.events() if e["event"] == "$mp_web_page_view"]
    return view["properties"]


def test_default_client_ip_is_the_socket_peer_even_with_forwarded_headers(site_factory, ingest):
    site = site_factory(text_app, capture_headers="x-forwarded-for,forwarded")
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": "203.0.113.9",
                               "Forwarded": "for=198.51.100.1"})
    site.flush()
    assert only_view(ingest)["ip"] == "127.0.0.1"


@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_trusted_hop_count_reads_x_forwarded_for_from_the_right(site_factory, ingest, mode):
    site = site_factory(text_app, mode=mode, trusted_proxies="1", capture_headers="x-forwarded-for")
    # The client wrote the left entry itself; only the one our proxy appended is believed.
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
    site.flush()
    assert only_view(ingest)["ip"] == "203.0.113.9"


@pytest.mark.parametrize(("trusted", "header", "value", "client"), [
    # Trusted proxies are skipped from the right; the first address no trusted proxy vouches for is the client.
    ("127.0.0.0/8, 10.0.0.0/8", "X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.1.2.3", "198.51.100.7"),
    # RFC 7239: quoted, bracketed IPv6 with a port.
    ("1", "Forwarded", 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https', "2001:db8:cafe::17"),
    # An obfuscated hop cannot be believed, nor anything left of it.
    ("127.0.0.1", "Forwarded", "for=203.0.113.1, for=_hidden", "0"),
], ids=["trusted-networks", "forwarded-ipv6", "forwarded-obfuscated"])
def test_proxy_headers_read_from_the_right(site_factory, ingest, trusted, header, value, client):
    site = site_factory(text_app, trusted_proxies=trusted, capture_headers=header.lower(),
                        client_ip_header=header.lower())
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, header: value})
    site.flush()
    assert only_view(ingest)["ip"] == client


def test_header_attributes_in_both_spellings_and_as_sequences(site_factory, ingest):
    def app(environ, start_response):
        span = trace.get_current_span()
        span.set_attribute("http.request.header.x-forwarded-for", ["6.6.6.6", "203.0.113.5"])
        span.set_attribute("http.request.header.referer", "https://news.example.org/story")
        return text_app(environ, start_response)

    site = site_factory(app, trusted_proxies="1")
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    props = only_view(ingest)
    assert props["ip"] == "203.0.113.5"
    assert props["$referring_domain"] == "news.example.org"


@pytest.mark.parametrize(("mode", "expected"), [("truncate", "127.0.0.0"), ("off", "0")])
def test_ip_can_be_truncated_or_turned_off(site_factory, ingest, mode, expected):
    site = site_factory(text_app, ip_mode=mode)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert only_view(ingest)["ip"] == expected


def test_sensitive_query_parameters_are_redacted_from_every_url_property(site_factory, ingest):
    site = site_factory(text_app, capture_headers="referer")
    site.request("/reset?token=s3cr3t&email=a%40b.c&Password=hunter2&utm_source=mail",
                 headers={"User-Agent": DESKTOP_CHROME,
                          "Referer": "https://auth.example.com/cb?code=abc123&state=ok&api_key=k"})
    site.flush()
    props = only_view(ingest)
    every_value = " ".join(str(v) for v in props.values())
    for secret in ("s3cr3t", "hunter2", "abc123"):
        assert secret not in every_value
    assert props["current_url_search"] == "?token=redacted&email=a%40b.c&Password=redacted&utm_source=mail"
    assert props["$current_url"].endswith("/reset?token=redacted&email=a%40b.c&Password=redacted&utm_source=mail")
    assert props["$referrer"] == "https://auth.example.com/cb?code=redacted&state=ok&api_key=redacted"


def test_a_sensitive_parameter_is_redacted_whatever_escaping_spells_its_name(site_factory, ingest):
    site = site_factory(text_app)
    site.request("/reset?%74oken=s3cr3t&PASS%57ORD=hunter2&q=a%20b", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    props = only_view(ingest)
    assert props["current_url_search"] == "?token=redacted&PASSWORD=redacted&q=a+b"
    assert "s3cr3t" not in str(props) and "hunter2" not in str(props)


def test_redacted_parameters_are_configurable(site_factory, ingest):
    site = site_factory(text_app, redact_query_params=["ref"])
    site.request("/?ref=partner-7&token=visible", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert only_view(ingest)["current_url_search"] == "?ref=redacted&token=visible"


def test_cookie_and_authorization_never_reach_mixpanel(site_factory, ingest):
    site = site_factory(text_app, capture_headers=".*")
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "Cookie": "session=COOKIEVALUE",
                               "Authorization": "Bearer AUTHVALUE"})
    site.flush()
    raw = str(ingest.events())
    assert "COOKIEVALUE" not in raw and "AUTHVALUE" not in raw


def test_web_middleware_records_what_the_proxy_rule_needs_without_header_capture(site_factory, ingest):
    from otel_mixpanel.web import MixpanelMiddleware

    # No OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* here: the middleware records Referer and the proxy headers.
    site = site_factory(MixpanelMiddleware(text_app), trusted_proxies="1", mode="http", server="wsgiref")
    site.request("/landing?utm_source=ads", headers={"User-Agent": DESKTOP_CHROME, "Referer": "https://www.bing.com/",
                                                    "X-Forwarded-For": "6.6.6.6, 203.0.113.77"})
    site.flush()
    props = only_view(ingest)
    assert props["ip"] == "203.0.113.77"
    assert props["$referring_domain"] == "www.bing.com" and props["$search_engine"] == "bing"
    assert props["utm_source"] == "ads" and props["current_url_path"] == "/landing"
    assert props["$device_id"] and props["distinct_id"] == f"$device:{props['$device_id']}"


def test_ipv4_mapped_peer_is_sent_as_ipv4(site_factory, ingest):
    # A dual-stack server sees an IPv4 client as ::ffff:127.0.0.1.
    site = site_factory(text_app, server="dual-stack")
    site.request("/", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    assert only_view(ingest)["ip"] == "127.0.0.1"


def test_ipv4_mapped_addresses_are_matched_and_sent_as_ipv4_behind_proxies(site_factory, ingest):
    # The peer ::ffff:127.0.0.1 is in the trusted 127.0.0.0/8; the proxy wrote the client in mapped form.
    site = site_factory(text_app, server="dual-stack", trusted_proxies="127.0.0.0/8", capture_headers="x-forwarded-for")
    site.request("/", headers={"User-Agent": DESKTOP_CHROME,
                               "X-Forwarded-For": "6.6.6.6, ::ffff:72.229.28.186, ::ffff:127.0.0.2"})
    site.flush()
    assert only_view(ingest)["ip"] == "72.229.28.186"


# Geolocation: Mixpanel places a record without an ip at the address that sent it, the server's.

@pytest.mark.parametrize("events_api", ["import", "track"])
def test_background_job_events_are_not_geolocated_at_the_server(ingest, pipeline, events_api):
    exporter, tracer = pipeline(events_api=events_api)
    with tracer.start_as_current_span("nightly-billing") as job:
        job.set_attribute("enduser.id", "customer-9")
        otel_mixpanel.track("Invoice Sent")
    assert exporter.force_flush(5000)
    [invoice] = ingest.events()
    assert invoice["properties"]["ip"] == "0"
    assert ingest.geolocation_ip(invoice) is None


def test_application_given_ip_on_a_background_event_is_used_under_the_privacy_setting(ingest, pipeline):
    exporter, tracer = pipeline(ip_mode="truncate")
    with tracer.start_as_current_span("webhook") as job:
        job.set_attribute("enduser.id", "customer-9")
        otel_mixpanel.track("Payment Received", {"ip": "::ffff:72.229.28.186"})
        otel_mixpanel.track("Payment Failed", {"ip": "not an address"})
    assert exporter.force_flush(5000)
    located = {e["event"]: ingest.geolocation_ip(e) for e in ingest.events()}
    assert located == {"Payment Received": "72.229.28.0", "Payment Failed": None}


def test_with_the_ip_off_nothing_is_geolocated_at_the_server(site_factory, ingest):
    def app(environ, start_response):
        span = trace.get_current_span()
        span.set_attribute("enduser.pseudo.id", "5b9a1f4e-3c2d-4a8b-9f1e-2d3c4b5a6f70")
        otel_mixpanel.identify("alice")
        otel_mixpanel.track("Logged In")
        otel_mixpanel.set_profile({"plan": "pro"})
        return text_app(environ, start_response)

    site = site_factory(app, ip_mode="off", id_merge="original")
    site.request("/login", headers={"User-Agent": DESKTOP_CHROME})
    site.flush()
    [update] = ingest.wait_for(1, what="profiles")
    records = ingest.events() + [update]
    assert sorted(e["event"] for e in ingest.events()) == ["$identify", "$mp_web_page_view", "Logged In"]
    assert [ingest.geolocation_ip(r) for r in records] == [None] * 4
    assert update["$ip"] == "0"


def test_events_identify_and_profiles_are_geolocated_at_the_client(site_factory, ingest):
    def app(environ, start_response):
        trace.get_current_span().set_attribute("enduser.pseudo.id", "5b9a1f4e-3c2d-4a8b-9f1e-2d3c4b5a6f70")
        otel_mixpanel.identify("alice")
        otel_mixpanel.set_profile({"plan": "pro"})
        return text_app(environ, start_response)

    site = site_factory(app, id_merge="original", trusted_proxies="1", capture_headers="x-forwarded-for")
    site.request("/login", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": "203.0.113.9"})
    site.flush()
    [update] = ingest.wait_for(1, what="profiles")
    assert {ingest.geolocation_ip(r) for r in ingest.events() + [update]} == {"203.0.113.9"}


# Spoofing: the client never chooses its own address.

@pytest.mark.parametrize("recorded_by", ["middleware", "instrumentation"])
def test_a_client_sent_forwarded_header_does_not_beat_the_proxys_x_forwarded_for(site_factory, ingest, recorded_by):
    from otel_mixpanel.web import MixpanelMiddleware

    # nginx and AWS ALB append to X-Forwarded-For and pass the client's own Forwarded on untouched.
    app, capture = (MixpanelMiddleware(text_app), None) if recorded_by == "middleware" else (
        text_app, "x-forwarded-for,forwarded")
    site = site_factory(app, trusted_proxies="127.0.0.1", capture_headers=capture)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "Forwarded": "for=6.6.6.6;proto=https",
                               "X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
    site.flush()
    assert only_view(ingest)["ip"] == "203.0.113.9"


def test_padding_x_forwarded_for_cannot_push_the_proxys_entry_out(site_factory, ingest):
    from otel_mixpanel.web import MixpanelMiddleware

    site = site_factory(MixpanelMiddleware(text_app), trusted_proxies="1")
    padding = ", ".join(["6.6.6.6"] * 1500)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": f"{padding}, 203.0.113.9"})
    site.flush()
    assert only_view(ingest)["ip"] == "203.0.113.9"


def test_a_proxy_that_sets_x_real_ip(site_factory, ingest):
    from otel_mixpanel.web import MixpanelMiddleware

    site = site_factory(MixpanelMiddleware(text_app), trusted_proxies="127.0.0.0/8", client_ip_header="x-real-ip")
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Real-IP": "203.0.113.9",
                               "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6"})
    site.flush()
    assert only_view(ingest)["ip"] == "203.0.113.9"


# Scheme and host behind a TLS-terminating proxy.

@pytest.mark.parametrize("mode", SEMCONV_MODES)
def test_scheme_from_a_trusted_proxy(site_factory, ingest, mode):
    from otel_mixpanel.web import MixpanelMiddleware

    site = site_factory(MixpanelMiddleware(text_app), mode=mode, trusted_proxies="1")
    site.request("/cart?step=2", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-For": "203.0.113.9",
                                          "X-Forwarded-Proto": "https"})
    site.flush()
    props = only_view(ingest)
    assert props["current_url_protocol"] == "https:"
    assert props["$current_url"] == f"https://127.0.0.1:{site.port}/cart?step=2"
    assert props["ip"] == "203.0.113.9"


def test_scheme_and_host_headers_are_ignored_without_a_trusted_proxy(site_factory, ingest):
    from otel_mixpanel.web import MixpanelMiddleware

    site = site_factory(MixpanelMiddleware(text_app), forwarded_host=True)
    site.request("/", headers={"User-Agent": DESKTOP_CHROME, "X-Forwarded-Proto": "https",
                               "X-Forwarded-Host": "evil.example"})
    site.flush()
    props = only_view(ingest)
    assert props["current_url_protocol"] == "http:" and props["current_domain"] == "127.0.0.1"


@pytest.mark.parametrize(("settings", "headers"), [
    ({}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example"}),
    ({"client_ip_header": "forwarded"},
     {"Forwarded": "for=6.6.6.6;proto=http;host=evil.example, for=203.0.113.9;proto=https;host=shop.example",
      "X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}),
], ids=["x-forwarded", "forwarded"])
def test_host_from_a_trusted_proxy_when_it_sets_one(site_factory, ingest, settings, headers):
    from otel_mixpanel.web import MixpanelMiddleware

    site = site_factory(MixpanelMiddleware(text_app), trusted_proxies="127.0.0.1", forwarded_host=True, **settings)
    site.request("/pricing", headers={"User-Agent": DESKTOP_CHROME, **headers})
    site.flush()
    props = only_view(ingest)
    assert props["$current_url"] == "https://shop.example/pricing"
    assert props["current_domain"] == "shop.example" and props["current_url_protocol"] == "https:"


@pytest.mark.parametrize(("recorded_by", "client"), [("middleware", "203.0.113.9"), ("instrumentation", "0")])
def test_an_attribute_length_limit_cannot_let_padding_choose_the_address(site_factory, ingest, monkeypatch,
                                                                         recorded_by, client):
    from otel_mixpanel.web import MixpanelMiddleware

    # The SDK cuts a longer attribute value to its first characters: the end of X-Forwarded-For the client wrote.
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "1000")
    app, capture = (MixpanelMiddleware(text_app), None) if recorded_by == "middleware" else (
        text_app, "x-forwarded-for")
    site = site_factory(app, trusted_proxies="1", capture_headers=capture)
    # Padded so that the first 1,000 characters end with the address the client wants.
    forged = "9" * 990 + ", 1.2.3.4"
    site.request("/", headers={"User-Agent": DESKTOP_CHROME,
                               "X-Forwarded-For": forged + ", 6.6.6.6" * 300 + ", 203.0.113.9"})
    site.flush()
    # The middleware records the right end within the limit; a value cut by the SDK names nobody.
    assert only_view(ingest)["ip"] == client
