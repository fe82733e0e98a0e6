"""The page URL and campaign enrichments: the web SDK's current_url_* properties, UTM tags, redaction."""

from __future__ import annotations

import pytest

from otel_mixpanel.enrich.campaign import campaign_properties
from otel_mixpanel.enrich.url import page_properties, query_pairs, redact_query, redact_url, split_host

SENSITIVE = frozenset({"token", "password"})


def test_page_properties_as_the_web_sdk_names_them():
    assert page_properties("https", "Shop.Example.com", "/shoes", "size=42", SENSITIVE) == {
        "$current_url": "https://shop.example.com/shoes?size=42", "current_url_path": "/shoes",
        "current_url_search": "?size=42", "current_url_protocol": "https:", "current_domain": "shop.example.com"}


@pytest.mark.parametrize(("scheme", "host", "url"), [
    ("http", "a.example:80", "http://a.example/"),
    ("https", "a.example:443", "https://a.example/"),
    ("https", "a.example:8443", "https://a.example:8443/"),
    ("http", "[2001:db8::1]:8080", "http://[2001:db8::1]:8080/"),
    (None, "a.example", "http://a.example/"),
])
def test_default_ports_are_dropped_and_ipv6_hosts_bracketed(scheme, host, url):
    assert page_properties(scheme, host, "/", None, SENSITIVE)["$current_url"] == url


def test_paths_are_escaped_as_an_address_bar_shows_them():
    properties = page_properties("https", "a.example", "/caf\u00e9 menu", None, SENSITIVE)
    assert properties["current_url_path"] == "/caf%C3%A9%20menu"


def test_sensitive_query_values_are_redacted_everywhere():
    assert redact_query("token=abc&q=shoes&Password=x", SENSITIVE) == "token=redacted&q=shoes&Password=redacted"
    assert redact_query("q=tokens", SENSITIVE) == "q=tokens"
    assert redact_url("https://u:p@a.example:8443/x?token=1#frag", SENSITIVE) == "https://a.example:8443/x?token=redacted"
    assert redact_url("http://[::1", SENSITIVE) is None


def test_split_host_tolerates_odd_hosts():
    assert split_host("A.example:8080") == ("a.example", "8080")
    assert split_host("[::1]:443") == ("::1", "443")
    assert split_host("a.example:port") == ("a.example:port", None)
    assert split_host("") == (None, None)


def test_campaign_takes_the_first_non_empty_value_of_each_marketing_parameter():
    pairs = query_pairs("UTM_Source=google&utm_source=bing&utm_medium=&utm_medium=cpc&gclid=abc&other=1")
    assert campaign_properties(pairs) == {"utm_source": "google", "utm_medium": "cpc", "gclid": "abc"}
    assert campaign_properties(query_pairs(None)) == {}
