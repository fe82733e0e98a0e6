"""The client-IP functions on their own: address parsing and the walk over proxy hops."""

from __future__ import annotations

import ipaddress
import random
import sys

import pytest

from otel_mixpanel.config import Settings
from otel_mixpanel.enrich import client_ip
from otel_mixpanel.enrich.client_ip import (
    MAX_FORWARDING_CHARS,
    ProxiedRequest,
    address_text,
    geolocation_ip,
    parse_address,
    proxied_request,
    right_end,
)


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


def _ipaddress_text(text):
    """What the ``ipaddress`` module alone makes of a plain address, for comparison."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@pytest.mark.parametrize("text", [
    "2001:DB8:0:0:0:0:0:1", "1:0:0:1:0:0:0:1", "1:0:1:0:1:0:1:0", "::", "::1", "1::", "0:0::0:1",
    "::102:304", "::ffff:102:304", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8::", "1::2::3",
    "12345::1", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0", "g::1", "0001:02:003::",
])
def test_ipv6_text_is_normalised_as_ipaddress_writes_it(text):
    assert address_text(text) == _ipaddress_text(text.split("%")[0])


def test_random_ipv6_texts_are_normalised_as_ipaddress_writes_them():
    rng = random.Random(12)
    groups = ("0", "0", "0000", "1", "ffff", "ABCD", "00000", "g", "")
    for _ in range(20_000):
        words = [rng.choice(groups + (format(rng.getrandbits(16), "x"),)) for _ in range(rng.randint(2, 9))]
        text = rng.choice(("", "::")) + ":".join(words) + rng.choice(("", "", "::"))
        assert address_text(text) == _ipaddress_text(text), text


def test_random_ipv4_texts_are_read_as_the_general_parser_reads_them():
    rng = random.Random(4)
    parts = ("0", "00", "01", "1", "9", "10", "099", "255", "256", "300", "1000", "", " 1", "1 ", "0x1", "+1", "-1",
             "\u0661")
    for _ in range(20_000):
        words = [rng.choice(parts) if rng.random() < 0.1 else str(rng.getrandbits(8))
                 for _ in range(rng.choice((4, 4, 4, 3, 5)))]
        text = ".".join(words) + rng.choice(("", "", ".", "\x00", "\n"))
        general = parse_address(text)
        assert address_text(text) == (str(general) if general else None), text


@pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin", "freebsd")), reason="C libraries checked")
def test_this_c_library_parses_ipv4_strictly():
    # glibc, musl, macOS's and the BSDs' inet_pton: an IPv4 address it takes is kept as it came.
    assert client_ip._strict_ipv4_parser()


def proxied(peer, headers, **settings):
    """``proxied_request`` over a dict of header values, as read from a span."""
    values = {name: (value,) for name, value in headers.items()}
    return proxied_request(peer, lambda name: values.get(name, ()), Settings(token="t", **settings))


def test_trusted_ranges_match_ipv4_mapped_peers_and_hops():
    trusted = {"trusted_proxies": "10.0.0.0/8"}
    assert proxied("::ffff:10.1.2.3", {"x-forwarded-for": "::ffff:203.0.113.5, ::ffff:10.9.9.9"}, **trusted).client \
        == "203.0.113.5"
    # An untrusted mapped peer is the client itself, as IPv4.
    assert proxied("::ffff:198.51.100.4", {"x-forwarded-for": "203.0.113.5"}, **trusted).client == "198.51.100.4"


SPOOFED = {"forwarded": "for=6.6.6.6;proto=https;host=evil.example", "x-forwarded-for": "6.6.6.6, 203.0.113.9",
           "x-real-ip": "6.6.6.6", "cf-connecting-ip": "6.6.6.6"}


@pytest.mark.parametrize(("header", "headers", "client"), [
    # The client's own Forwarded is ignored: the proxy writes X-Forwarded-For.
    ("x-forwarded-for", SPOOFED, "203.0.113.9"),
    ("forwarded", {"forwarded": "for=6.6.6.6, for=203.0.113.9", "x-forwarded-for": "6.6.6.6"}, "203.0.113.9"),
    ("x-real-ip", {**SPOOFED, "x-real-ip": "203.0.113.9"}, "203.0.113.9"),
    ("cf-connecting-ip", {**SPOOFED, "cf-connecting-ip": "203.0.113.9"}, "203.0.113.9"),
    ("true-client-ip", {"true-client-ip": "203.0.113.9", "x-forwarded-for": "6.6.6.6"}, "203.0.113.9"),
    # The configured header is missing: the peer is the client, whatever else was sent.
    ("x-real-ip", {"x-forwarded-for": "6.6.6.6", "forwarded": "for=6.6.6.6"}, "127.0.0.1"),
])
def test_only_the_configured_header_names_the_client(header, headers, client):
    assert proxied("127.0.0.1", headers, trusted_proxies="1", client_ip_header=header).client == client
    assert proxied("127.0.0.1", headers, trusted_proxies="127.0.0.0/8", client_ip_header=header).client == client


def test_an_untrusted_peer_is_the_client_and_its_headers_say_nothing():
    result = proxied("198.51.100.4", {"x-forwarded-for": "6.6.6.6", "x-forwarded-proto": "https"},
                     trusted_proxies="10.0.0.0/8")
    assert result == ProxiedRequest("198.51.100.4", None, None)


def test_padding_on_the_left_cannot_push_the_proxys_entry_out():
    padded = ", ".join(["6.6.6.6"] * 2000) + ", 203.0.113.9"
    assert len(padded) > 4 * MAX_FORWARDING_CHARS
    assert proxied("127.0.0.1", {"x-forwarded-for": padded}, trusted_proxies="1").client == "203.0.113.9"
    assert proxied("10.0.0.1", {"x-forwarded-for": padded + ", 10.0.0.2"},
                   trusted_proxies="10.0.0.0/8").client == "203.0.113.9"
    assert right_end("a" * 10 + ",1.2.3.4", 9) == "1.2.3.4"
    assert right_end("1.2.3.4,5.6.7.8", 8) == "5.6.7.8", "an entry cut in half is dropped"


@pytest.mark.parametrize(("settings", "headers", "expected"), [
    ({}, {"x-forwarded-proto": "https"}, ProxiedRequest("127.0.0.1", "https")),
    ({}, {"x-forwarded-proto": "http, HTTPS"}, ProxiedRequest("127.0.0.1", "https")),
    ({}, {"x-forwarded-proto": "javascript"}, ProxiedRequest("127.0.0.1")),
    ({}, {"x-forwarded-host": "shop.example"}, ProxiedRequest("127.0.0.1")),
    ({"forwarded_host": True}, {"x-forwarded-host": "shop.example:8443", "x-forwarded-proto": "https"},
     ProxiedRequest("127.0.0.1", "https", "shop.example:8443")),
    ({"forwarded_host": True}, {"x-forwarded-host": "evil.example/path?x"}, ProxiedRequest("127.0.0.1")),
    ({"forwarded_host": True}, {"x-forwarded-host": "shop.example\nx: 1"}, ProxiedRequest("127.0.0.1")),
    ({"forwarded_host": True}, {"x-forwarded-host": "[2001:db8::1]:8443"},
     ProxiedRequest("127.0.0.1", None, "[2001:db8::1]:8443")),
    # Forwarded: proto= and host= of the element that names the client, not of any other.
    ({"client_ip_header": "forwarded", "forwarded_host": True},
     {"forwarded": 'for=6.6.6.6;proto=http;host=evil.example, for=203.0.113.9;proto=https;host="shop.example"',
      "x-forwarded-proto": "http"},
     ProxiedRequest("203.0.113.9", "https", "shop.example")),
])
def test_scheme_and_host_from_trusted_proxies(settings, headers, expected):
    assert proxied("127.0.0.1", headers, trusted_proxies="1", **settings) == expected


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
