"""Marketing parameters from the page's query string, as Mixpanel's web SDK collects them."""

from __future__ import annotations

from typing import Any, Final

from otel_mixpanel.enrich.url import query_pairs

CAMPAIGN_PARAMETERS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "utm_id",
    "utm_source_platform", "utm_campaign_id", "utm_creative_format", "utm_marketing_tactic",
)
CLICK_ID_PARAMETERS = (
    "dclid", "fbclid", "gclid", "ko_click_id", "li_fat_id", "msclkid", "sccid", "ttclid", "twclid", "wbraid",
)
MARKETING_PARAMETERS: Final = frozenset(CAMPAIGN_PARAMETERS + CLICK_ID_PARAMETERS)


def campaign_properties(query_pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The first non-empty value of each marketing parameter, as the web SDK sends it."""
    properties: dict[str, Any] = {}
    for name, value in query_pairs:
        key = name.lower()
        if key in MARKETING_PARAMETERS and value and key not in properties:
            properties[key] = value
    return properties


def query_campaign_properties(query: str | None) -> dict[str, Any]:
    """``campaign_properties`` of a raw query string."""
    # No pre-check of the names: a query with nothing to decode is split without parse_qsl (query_pairs), which
    # costs about what a regular-expression search of the names would.
    return campaign_properties(query_pairs(query)) if query else {}
