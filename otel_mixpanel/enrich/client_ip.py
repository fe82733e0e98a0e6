"""The client's IP address: the socket peer, or the proxies' headers read from the right.

A client controls the left of ``X-Forwarded-For``; only entries added by proxies the
operator trusts can be believed. So the header is read from the right, skipping
trusted hops, and the first address not vouched for by a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from typing import Any

from otel_mixpanel.config import ENV_PREFIX, TrustedProxies

logger = logging.getLogger("otel_mixpanel")
UNTRUSTED_FORWARDING_WARNING = (
    "Requests carry X-Forwarded-For or Forwarded headers, but no proxy is trusted: every Mixpanel event gets "
    "the address of the nearest proxy (and its location), not the client's. If a proxy or load balancer you "
    "run adds these headers, set " + ENV_PREFIX + "TRUSTED_PROXIES (its hop count, or its addresses); "
    "see docs/mapping.md."
)
# Said once per process: the same header arrives on every request.
_warned_untrusted_forwarding = False

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# As an event's ip or a profile update's $ip: "do not geolocate this record".
NO_GEOLOCATION = "0"
_FORWARDED_FOR = re.compile(r'(?i)(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)')


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address from a header or attribute value, tolerating ports, brackets and quotes.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports for an
    IPv4 client) is the IPv4 address it carries: that is the client's address, the one
    Mixpanel can geolocate and trusted-proxy ranges are written in.
    """
    if not text:
        return None
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _x_forwarded_for_hops(values: tuple[str, ...]) -> list[str]:
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def _forwarded_hops(values: tuple[str, ...]) -> list[str]:
    hops = []
    for value in values:
        for element in value.split(","):
            match = _FORWARDED_FOR.search(element)
            # An element without for= still is a hop: keep its place so hop counting stays right.
            hops.append(match.group(1) if match else "unknown")
    return hops


def address_text(text: str | None) -> str | None:
    """``text`` as a normalised IP address, or None when it is not one."""
    if text and "." in text and ":" not in text:
        # Plain dotted IPv4, nearly every client: the C parser is ten times faster than ipaddress.
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
        except (OSError, ValueError):
            pass
    address = parse_address(text)
    return str(address) if address else None


def client_ip(peer: str | None, forwarded_for: tuple[str, ...], forwarded: tuple[str, ...],
              trusted: TrustedProxies) -> str | None:
    """The client's address as text, or None when nothing usable was recorded."""
    if not trusted.enabled:
        if forwarded_for or forwarded:
            _warn_untrusted_forwarding()
        return address_text(peer)
    hops = _forwarded_hops(forwarded) if forwarded else _x_forwarded_for_hops(forwarded_for)
    if not hops:
        return address_text(peer)
    if trusted.hops:
        # Each of the N trusted proxies appended the address it saw; the client is the N-th from the right.
        return address_text(peer if len(hops) < trusted.hops else hops[-trusted.hops])
    peer_address = parse_address(peer)
    if peer_address is None or not trusted.trusts(peer_address):
        return str(peer_address) if peer_address else None
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            # An unknown or obfuscated hop cannot be trusted, and what lies left of it cannot be believed.
            return None
        if not trusted.trusts(address):
            return str(address)
    return address_text(hops[0])


def _warn_untrusted_forwarding() -> None:
    global _warned_untrusted_forwarding
    if not _warned_untrusted_forwarding:
        _warned_untrusted_forwarding = True
        logger.warning(UNTRUSTED_FORWARDING_WARNING)


def geolocation_ip(value: Any, mode: str) -> str:
    """What an event's ``ip`` (a profile update's ``$ip``) says: the client's address under the
    privacy setting ``mode``, or ``"0"``.

    Mixpanel geolocates a record without one by the address that sent it, which for a server
    is the data centre: ``"0"`` tells it not to geolocate at all (docs.mixpanel.com,
    reference/import-events "GeoIP Enrichment"; mixpanel-python sends ``ip=0`` for the same
    reason). So an event with no client address, or with the IP turned off, says ``"0"``.
    """
    address = address_text(value) if isinstance(value, str) else None
    return (anonymise(address, mode) if address else None) or NO_GEOLOCATION


def anonymise(address: str, mode: str) -> str | None:
    """Apply the IP privacy setting: ``full`` keeps it, ``truncate`` zeroes the host part, ``off`` drops it."""
    if mode == "off":
        return None
    if mode == "full":
        return address
    parsed = ipaddress.ip_address(address)
    prefix = 24 if parsed.version == 4 else 48
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False).network_address)
