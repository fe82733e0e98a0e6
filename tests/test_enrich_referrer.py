"""The referrer enrichment: $referrer, $referring_domain, $search_engine, redaction, bounded memory."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from otel_mixpanel.enrich.first_touch import js_referring_domain
from otel_mixpanel.enrich.referrer import _referrer_properties, referrer_properties

SENSITIVE = frozenset({"token", "code"})


def test_referrer_domain_and_search_engine():
    properties = referrer_properties("https://www.google.co.uk/search?q=shoes", SENSITIVE)
    assert properties == {"$referrer": "https://www.google.co.uk/search?q=shoes",
                          "$referring_domain": "www.google.co.uk", "$search_engine": "google", "mp_keyword": "shoes"}
    assert referrer_properties("https://blog.example.org/post", SENSITIVE) == {
        "$referrer": "https://blog.example.org/post", "$referring_domain": "blog.example.org"}


def test_secrets_in_the_referrer_are_redacted_and_credentials_dropped():
    properties = referrer_properties("https://user:pw@app.example.com/cb?code=abc&state=x", SENSITIVE)
    assert properties["$referrer"] == "https://app.example.com/cb?code=redacted&state=x"
    assert properties["$referring_domain"] == "app.example.com"


@pytest.mark.parametrize("referrer, engine", [
    ("https://www.google.com/", "google"),
    ("https://mail.google.com/mail/u/0/", "google"),
    ("https://googleads.g.doubleclick.net/pagead/ads", "google"),  # mixpanel-js's pattern is that loose
    ("http://www.bing.com/search?q=x", "bing"),
    ("https://r.search.yahoo.com/_ylt=abc", "yahoo"),
    ("https://duckduckgo.com/", "duckduckgo"),
    ("https://news.example.com/?q=google", None),
    ("android-app://com.google.android.googlequicksearchbox/", None),  # not http(s): not one for the SDK
    ("https://t.co/abc", None),
])
def test_search_engines_as_mixpanel_js_tells_them(referrer, engine):
    assert referrer_properties(referrer, SENSITIVE).get("$search_engine") == engine


@pytest.mark.parametrize("referrer, keyword", [
    ("https://www.bing.com/search?form=QBLH&q=running+shoes%20sale&qs=n", "running shoes sale"),
    ("https://search.yahoo.com/search?q=not-this&p=trail%2Bboots", "trail boots"),  # decoded, then + is a space
    ("https://duckduckgo.com/?t=h_&q=caf%C3%A9", "café"),
    ("https://www.google.com/search?q=100%25", "100%"),
    ("https://www.google.com/search?q=bad%zzescape", "bad%zzescape"),
])
def test_the_search_words_are_mp_keyword_as_mixpanel_js_reads_them(referrer, keyword):
    assert referrer_properties(referrer, SENSITIVE)["mp_keyword"] == keyword


@pytest.mark.parametrize("referrer", ["https://www.google.com/", "https://www.google.com/url?sa=t&q=",
                                      "https://blog.example.org/?q=not-a-search-engine"])
def test_no_mp_keyword_without_a_search_engine_and_its_words(referrer):
    assert "mp_keyword" not in referrer_properties(referrer, SENSITIVE)


def test_mp_keyword_is_redacted_with_the_referrer():
    properties = referrer_properties("https://www.bing.com/search?q=secret", frozenset({"q"}))
    assert properties["mp_keyword"] == "redacted" and properties["$referrer"] == "https://www.bing.com/search?q=redacted"


def test_referring_domain_keeps_the_port_as_mixpanel_js_and_the_initial_referring_domain_do():
    properties = referrer_properties("http://localhost:8080/search?q=shoes", SENSITIVE)
    assert properties["$referring_domain"] == "localhost:8080" == js_referring_domain("http://localhost:8080/")


def test_malformed_referrers_give_nothing_or_what_can_be_read():
    assert referrer_properties("http://[::1", SENSITIVE) == {}
    assert referrer_properties("not a url", SENSITIVE) == {"$referrer": "not a url"}


def test_huge_referrers_keep_the_cache_small():
    _referrer_properties.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for number in range(300):
            huge = f"https://news.example.com/{number}?" + "a=1&" * 250_000  # 1 MB each
            properties = referrer_properties(huge, SENSITIVE)
            assert properties["$referring_domain"] == "news.example.com"
            assert len(properties["$referrer"].encode()) <= 255
            del huge
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 300 cached referrers of 1 MB each would hold 300 MB; cut ones hold well under 2 MB.
    assert held - before < 2 * 1024 * 1024
