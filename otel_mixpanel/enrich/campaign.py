"""Marketing parameters from the page's query string, as Mixpanel's web SDK collects them."""

from __future__ import annotations

import re
from typing import Any

from otel_mixpanel.enrich.url import query_pairs

CAMPAIGN_PARAMETERS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "utm_id",
    "utm_source_platform", "utm_campaign_id", "utm_creative_format", "utm_marketing_tactic",
)
CLICK_ID_PARAMETERS = (
    "dclid", "fbclid", "gclid", "ko_click_id", "li_fat_id", "msclkid", "sccid", "ttclid", "twclid", "wbraid",
)
MARKETING_PARAMETERS = frozenset(CAMPAIGN_PARAMETERS + CLICK_ID_PARAMETERS)


def campaign_properties(query_pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The first non-empty value of each marketing parameter, as the web SDK sends it."""
    properties: dict[str, Any] = {}
    for name, value in query_pairs:
        key = name.lower()
        if key in MARKETING_PARAMETERS and value and key not in properties:
            properties[key] = value
    return properties


# Any marketing parameter's name, anywhere in a lower-cased query's text: a superset of what
# campaign_properties picks once the query is decoded, as long as nothing in it is %-escaped (str.lower
# maps character by character, so a name that lower-cases to one is found in the lower-cased query).
# Searching the lower-cased text is several times faster than an IGNORECASE search of the text.
_MARKETING_NAME = re.compile("|".join(sorted(MARKETING_PARAMETERS)))


def query_campaign_properties(query: str | None) -> dict[str, Any]:
    """``campaign_properties`` of a raw query string. Most queries (searches, pages, API arguments)
    name no marketing parameter; those are answered without parsing, which costs far more."""
    if not query or ("%" not in query and _MARKETING_NAME.search(query.lower()) is None):
        return {}
    return campaign_properties(query_pairs(query))
