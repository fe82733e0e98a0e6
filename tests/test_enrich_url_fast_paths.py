"""The URL and campaign helpers' shortcuts give what the general code gives, for every kind of text."""

from __future__ import annotations

import random
from urllib.parse import quote, urlunsplit

import pytest

from otel_mixpanel.enrich.campaign import campaign_properties, query_campaign_properties
from otel_mixpanel.enrich.url import join_url, page_properties, query_pairs, redact_query

SENSITIVE = frozenset({"token", "key", "code", "session"})
PIECES = [*"abcdefkKuUtTmM_=&;%+ /?#:@!$'()*,~.-0123456789", "utm_", "gclid", "UTM_SOURCE", "\u212a", "ko_clic",
          "é", "%5F", "%20", "%74", "%6B", "%6b", "\ud800", "token", "TOKEN", "key", "utm_source=x", "Gclid=y"]


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25))) for _ in range(count)]


@pytest.mark.parametrize("query", [
    "", "q=shoes", "utm_source=google&utm_medium=cpc", "UTM_Source=x", "utm%5Fsource=escaped", "gclid=abc",
    "\u212ao_clic\u212a_id=kelvin", "ko_click_id=k", "x=utm_source", "utm_source=&utm_source=second", "page=2",
])
def test_campaign_from_a_raw_query_is_the_parsed_querys(query):
    assert query_campaign_properties(query) == campaign_properties(query_pairs(query))


def test_campaign_and_redaction_shortcuts_agree_with_parsing_on_random_text():
    for text in random_texts(20_000, seed=4):
        assert query_campaign_properties(text) == campaign_properties(query_pairs(text)), text
        pairs = query_pairs(text)
        if any(name.lower() in SENSITIVE for name, _ in pairs):
            assert "redacted" in redact_query(text, SENSITIVE), text
        else:
            assert redact_query(text, SENSITIVE) == text
        assert redact_query(text, frozenset()) == text


def test_join_url_is_urlunsplit():
    for text in random_texts(5_000, seed=5):
        for scheme in ("https", "", "http"):
            for netloc in ("shop.example.com", "", "[::1]:8080"):
                for path in ("/" + text, text, ""):
                    assert join_url(scheme, netloc, path, text) == urlunsplit((scheme, netloc, path, text, ""))


def test_page_paths_are_quoted_as_quote_does():
    for text in random_texts(5_000, seed=6):
        path = "/" + text
        properties = page_properties("https", "shop.example.com", path, None, SENSITIVE)
        assert properties["current_url_path"] == quote(path, safe="/%:@!$&'()*+,;=-._~", errors="replace")
