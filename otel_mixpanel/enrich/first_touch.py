"""First-touch attribution: where a browser first came from, as Mixpanel's web SDK keeps it.

Followed: mixpanel-browser 2.83.0 (mixpanel-js). ``MixpanelPersistence.update_referrer_info``
registers, once per browser, ``$initial_referrer`` (the first page's ``document.referrer``,
``"$direct"`` when empty) and ``$initial_referring_domain`` (the referrer's third
``/``-separated part, i.e. host and port, ``"$direct"`` when none) as super properties,
so every later event carries them. At load the SDK also sends them to the profile with
``people.set_once``, and, when the page's URL has any UTM parameter, all ten of them as
``initial_utm_*`` (``null`` for those missing: they count as one tuple).

The web middleware records a browser's first touch on each server span; this module
names those attributes and turns them into event and profile properties.
"""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final, Mapping, NamedTuple

from otel_mixpanel.enrich.campaign import CAMPAIGN_PARAMETERS
from otel_mixpanel.enrich.url import REDACTED, redact_url
from otel_mixpanel.limits import safe_properties, safe_text_properties

MIXPANEL_JS_VERSION = "2.83.0"
DIRECT = "$direct"
INITIAL_REFERRER = "$initial_referrer"
INITIAL_REFERRING_DOMAIN = "$initial_referring_domain"
INITIAL_UTM_PREFIX = "initial_"
INITIAL_UTM_KEYS = tuple(INITIAL_UTM_PREFIX + name for name in CAMPAIGN_PARAMETERS)

# Span attributes written by the web middleware: the referrer and domain as mixpanel-js
# keeps them, and one attribute per initial UTM parameter that had a value.
REFERRER_ATTRIBUTE = "otel_mixpanel.initial_referrer"
REFERRING_DOMAIN_ATTRIBUTE = "otel_mixpanel.initial_referring_domain"
UTM_ATTRIBUTES = tuple((f"otel_mixpanel.{key}", key) for key in INITIAL_UTM_KEYS)
# The browser's current campaign, as mixpanel-js keeps its utm_* super properties: one attribute per
# CAMPAIGN_PARAMETERS name that has a stored value (the request's own URL parameters are merged in).
CAMPAIGN_ATTRIBUTES = tuple(f"otel_mixpanel.campaign.{name}" for name in CAMPAIGN_PARAMETERS)
# The browser's last search engine and search words, as mixpanel-js keeps them as super properties.
SEARCH_PROPERTIES = ("$search_engine", "mp_keyword")
SEARCH_ATTRIBUTES = ("otel_mixpanel.campaign.search_engine", "otel_mixpanel.campaign.mp_keyword")
_STORED_ATTRIBUTES = tuple(zip(CAMPAIGN_ATTRIBUTES + SEARCH_ATTRIBUTES, CAMPAIGN_PARAMETERS + SEARCH_PROPERTIES))
# Where the search's words come from (see enrich.referrer): when one is sensitive, so is mp_keyword.
_SEARCH_WORD_PARAMETERS = frozenset({"p", "q"})


def js_referring_domain(referrer: str) -> str:
    """mixpanel-js's ``_.info.referringDomain``: the third ``/``-separated part, or ``""``.

    Less a ``user:password@`` prefix: browsers never send one in a Referer, so only a forged
    header has it, and credentials must not become a property.
    """
    parts = referrer.split("/")
    return parts[2].rpartition("@")[2] if len(parts) >= 3 else ""


def initial_referrer(referrer: str | None) -> tuple[str, str]:
    """``($initial_referrer, $initial_referring_domain)`` of a first page whose Referer is ``referrer``."""
    referrer = (referrer or "").strip()
    return referrer or DIRECT, js_referring_domain(referrer) or DIRECT


class FirstTouchProperties(NamedTuple):
    """What a request's first touch adds: to every event, and to the profile with ``$set_once``;
    ``campaign``: the stored ``utm_*``, ``$search_engine`` and ``mp_keyword``, under the request's own URL
    parameters and Referer on every event.

    ``every_event`` and ``campaign`` are plain dicts, which merge into the request's properties at C
    speed: they are shared with the caches here, so never change them."""

    every_event: dict[str, Any]
    profile: Mapping[str, Any]
    campaign: dict[str, Any] = {}


NO_FIRST_TOUCH = FirstTouchProperties({}, MappingProxyType({}))
# Initial UTM parameters and a stored campaign: what a campaign's visitors have on every span, and
# most spans have neither.
_OPTIONAL_ATTRIBUTE_NAMES: Final = tuple(attribute for attribute, _ in UTM_ATTRIBUTES + _STORED_ATTRIBUTES)
# The stored utm_source first: every campaign link has one, so a campaign's visitors nearly always carry it.
_STORED_SOURCE: Final = CAMPAIGN_ATTRIBUTES[CAMPAIGN_PARAMETERS.index("utm_source")]
_PRESENCE_ORDER: Final = (_STORED_SOURCE, *(name for name in _OPTIONAL_ATTRIBUTE_NAMES if name != _STORED_SOURCE))


def _optional_values(attributes: dict[str, Any]) -> tuple[Any, ...] | None:
    """The values of ``_OPTIONAL_ATTRIBUTE_NAMES`` in order, or None when the span has none of them.

    Compiled (otel_mixpanel/compiled.py), each test and look-up in the dict is a direct call of its C function,
    cheaper than a keys view's isdisjoint() over spans with a few dozen attributes.
    """
    for present in _PRESENCE_ORDER:
        if present in attributes:
            return tuple([attributes.get(name) for name in _OPTIONAL_ATTRIBUTE_NAMES])
    return None


def read_first_touch(attributes: Mapping[str, Any], sensitive: frozenset[str]) -> FirstTouchProperties:
    """The first-touch properties recorded on a span, or empty ones when it has none."""
    # The SDK's spans give a dict (span_reads.ended_span_attributes); anything else is read as one.
    plain: dict[str, Any] = attributes if type(attributes) is dict else dict(attributes)
    referrer = plain.get(REFERRER_ATTRIBUTE)
    if type(referrer) is not str or not referrer:
        return NO_FIRST_TOUCH
    domain = plain.get(REFERRING_DOMAIN_ATTRIBUTE)
    values = _optional_values(plain)
    if values is None:
        return _first_touch(referrer, domain if type(domain) is str and domain else None, (), sensitive)
    if type(domain) is str or domain is None:
        for value in values:
            if type(value) is not str and value is not None:
                break
        else:
            return _campaign_touch(sensitive, referrer, domain, values)
    # A value of another type (a str subclass equal to a cached str must not hit): read without the cache.
    return _campaign_touch.__wrapped__(sensitive, referrer, domain, values)


# A campaign link brings many browsers: each campaign's properties are made once, keyed on the
# attributes' raw values, which are all str or None (read_first_touch), so the key needs no types.
@lru_cache(maxsize=1024)
def _campaign_touch(sensitive: frozenset[str], referrer: str, domain: Any, values: tuple[Any, ...]
                    ) -> FirstTouchProperties:
    """A first touch with UTM parameters or a stored campaign; ``values``: ``_OPTIONAL_ATTRIBUTE_NAMES``'s."""
    utm = tuple((key, value) for (_, key), value in zip(UTM_ATTRIBUTES, values) if type(value) is str and value)
    touch = _first_touch(referrer, domain if type(domain) is str and domain else None, utm, sensitive)
    stored = values[len(UTM_ATTRIBUTES):]
    campaign = {name: value for (_, name), value in zip(_STORED_ATTRIBUTES, stored) if type(value) is str and value}
    if "mp_keyword" in campaign and not _SEARCH_WORD_PARAMETERS.isdisjoint(sensitive):
        # As the request's own mp_keyword is read from the redacted referrer.
        campaign["mp_keyword"] = REDACTED
    return FirstTouchProperties(touch.every_event, touch.profile, safe_text_properties(campaign))


# First touches repeat ("$direct", a search engine's home page): the properties are built once each.
@lru_cache(maxsize=1024)
def _first_touch(referrer: str, domain: str | None, utm: tuple[tuple[str, str], ...],
                 sensitive: frozenset[str]) -> FirstTouchProperties:
    shown = referrer if referrer == DIRECT else redact_url(referrer, sensitive)
    every_event: dict[str, Any] = {}
    if shown:
        every_event[INITIAL_REFERRER] = shown
    every_event[INITIAL_REFERRING_DOMAIN] = domain or js_referring_domain(referrer) or DIRECT
    every_event = safe_properties(every_event)
    profile = dict(every_event)
    if utm:
        given = dict(utm)
        profile.update(safe_properties({key: given.get(key) for key in INITIAL_UTM_KEYS}))
    return FirstTouchProperties(every_event, MappingProxyType(profile))
