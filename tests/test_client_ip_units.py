"""The client-IP functions on their own: address parsing and the walk over proxy hops."""

from __future__ import annotations

import ipaddress

import pytest

from otel_mixpanel.config import TrustedProxies
from otel_mixpanel.enrich.client_ip import address_text, client_ip, geolocation_ip, parse_address


@pytest.mark.parametrize(("text", "expected"), [
    ("::ffff:72.229.28.186", "72.229.28.186"),
    ("[::ffff:72.229.28.186]:4711", "72.229.28.186"),
    ('"[::FFFF:7.7.7.7]"', "7.7.7.7"),
    ("72.229.28.186:8080", "72.229.28.186"),
    ("2001:db8::1", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("unknown", None),
    ("_hidden", None),
    ("", None),
    (None, None),
])
def test_addresses_are_parsed_and_normalised(text, expected):
    assert address_text(text) == expected
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


def test_trusted_ranges_match_ipv4_mapped_peers_and_hops():
    trusted = TrustedProxies(networks=(ipaddress.ip_network("10.0.0.0/8"),))
    assert client_ip("::ffff:10.1.2.3", ("::ffff:203.0.113.5, ::ffff:10.9.9.9",), (), trusted) == "203.0.113.5"
    # An untrusted mapped peer is the client itself, as IPv4.
    assert client_ip("::ffff:198.51.100.4", ("203.0.113.5",), (), trusted) == "198.51.100.4"


@pytest.mark.parametrize(("value", "mode", "expected"), [
    ("203.0.113.9", "full", "203.0.113.9"),
    ("203.0.113.9", "truncate", "203.0.113.0"),
    ("203.0.113.9", "off", "0"),
    ("::ffff:203.0.113.9", "full", "203.0.113.9"),
    ("2001:db8:1:2:3:4:5:6", "truncate", "2001:db8:1::"),
    (None, "full", "0"),
    ("", "full", "0"),
    ("0", "full", "0"),
    ("not an address", "full", "0"),
    (3405803785, "full", "0"),
])
def test_geolocation_ip_is_the_client_or_zero(value, mode, expected):
    assert geolocation_ip(value, mode) == expected
