"""The client's IP address: the socket peer, or the proxies' headers read from the right.

A client controls the left of ``X-Forwarded-For``, and every header a proxy does not write;
only entries added by proxies the operator trusts can be believed. So only the header the
trusted proxies write is read, from the right, skipping trusted hops, and the first address
not vouched for by a trusted proxy is the client. The scheme and host the client used come
from the same trusted proxies.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from functools import partial
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Any, Callable, Final, Mapping, NamedTuple

from otel_mixpanel.config import ENV_PREFIX, FORWARDING_LIST_HEADERS, Settings, TrustedProxies
from otel_mixpanel.spans import REQUEST_HEADER_PREFIX, request_header

logger = logging.getLogger("otel_mixpanel")
UNTRUSTED_FORWARDING_WARNING = (
    "Requests carry X-Forwarded-For or Forwarded headers, but no proxy is trusted: every Mixpanel event gets "
    "the address of the nearest proxy (and its location), not the client's. If a proxy or load balancer you "
    "run adds these headers, set " + ENV_PREFIX + "TRUSTED_PROXIES (its hop count, or its addresses); "
    "see docs/mapping.md."
)
# Said once per process: the same header arrives on every request.
_warned_untrusted_forwarding = False
_warned_cut = False

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# As an event's ip or a profile update's $ip: "do not geolocate this record".
NO_GEOLOCATION = "0"
# A host name or IP literal, with an optional port: all a forwarded host may be.
_HOST = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# Proxy headers are read from their right end, this long at most (a real chain is a few hundred characters).
MAX_FORWARDING_CHARS = 4096


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


def address_text(text: str | None) -> str | None:
    """``text`` as a normalised IP address, or None when it is not one."""
    if text:
        plain = _plain_address_text(text)
        if plain is not None:
            return plain
    address = parse_address(text)
    return str(address) if address else None


# Plain ints, read once: socket's AddressFamily members are enum objects looked up on every use.
_IPV4 = int(AF_INET)
_IPV6 = int(AF_INET6)


def _strict_ipv4_parser() -> bool:
    """Whether this C library's ``inet_pton`` refuses the loose forms other parsers take (leading zeros, short
    forms, missing parts, hexadecimal, padding): glibc's, musl's and the BSDs' take only the dotted quad that
    ``inet_ntop`` writes back unchanged. Probed at import rather than assumed from the platform."""
    for loose in ("01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.", "0x1.2.3.4", " 1.2.3.4", "1.2.3.256"):
        try:
            inet_pton(_IPV4, loose)
        except OSError:
            continue
        return False
    return True


# Then an IPv4 address it takes is already in normal form, and is kept as it came: inet_ntop writes an
# IPv4 address through sprintf, a third of what normalising three IPv4 clients out of four cost.
_IPV4_TAKEN_AS_WRITTEN: Final = _strict_ipv4_parser()


def _plain_address_text(text: str) -> str | None:
    """A plain address (no port, brackets, zone or quotes) normalised by the C parser, which is ten
    times faster than ``ipaddress``; None leaves the text to ``parse_address``.

    Every client's address goes through here once per record, IPv6 ones included (a quarter of
    visitors, more on mobile networks). For the text it accepts, ``inet_pton`` agrees with
    ``ipaddress``, and ``inet_ntop`` writes RFC 5952's form as ``str(IPv6Address)`` does, except
    for addresses it writes with an embedded IPv4 part (IPv4-mapped ones among them): those,
    recognised by their dot, are left to ``parse_address``.
    """
    try:
        if ":" not in text:
            if "." in text:
                packed = inet_pton(_IPV4, text)
                return text if _IPV4_TAKEN_AS_WRITTEN and type(text) is str else inet_ntop(_IPV4, packed)
        elif "." not in text:
            normalised = inet_ntop(_IPV6, inet_pton(_IPV6, text))
            return None if "." in normalised else normalised
    except (OSError, ValueError):
        pass
    return None


class ProxiedRequest(NamedTuple):
    """What the request looked like on the client's side of the trusted proxies.

    ``client`` is the client's address (None when nothing usable was recorded); ``scheme`` and
    ``host`` are what a trusted proxy said the client used, None where it said nothing.
    """

    client: str | None
    scheme: str | None = None
    host: str | None = None


# Reads one captured request header's values, e.g. ``header("x-forwarded-for")``.
HeaderReader = Callable[[str], tuple[str, ...]]
# Whether a captured request header was cut short by the SDK's attribute length limit.
HeaderCut = Callable[[str], bool]


def _never_cut(name: str) -> bool:
    return False


def proxied_request(peer: str | None, header: HeaderReader, settings: Settings,
                    cut: HeaderCut = _never_cut) -> ProxiedRequest:
    """The client's address, scheme and host, believing only trusted proxies.

    Only the header the trusted proxies write (``CLIENT_IP_HEADER``) is read for the address:
    a client can send any header, and proxies such as nginx or AWS ALB pass on those they do
    not write (a client's own ``Forwarded: for=...``, say) untouched. A header the SDK cut to
    its attribute length limit (``cut``) kept its left end, the client's, and lost the right
    end, the proxies': nothing in it is believed.
    """
    trusted = settings.trusted_proxies
    if not trusted.enabled:
        _warn_if_forwarded(header)
        return ProxiedRequest(address_text(peer))
    if not trusted.hops:
        peer_address = parse_address(peer)
        if peer_address is None or not trusted.trusts(peer_address):
            # Not sent through a trusted proxy: every header came from the client.
            return ProxiedRequest(str(peer_address) if peer_address else None)
    name = settings.client_ip_header
    if cut(name):
        _warn_cut(name)
        return ProxiedRequest(None)
    if cut("x-forwarded-proto") or cut("x-forwarded-host"):
        header = _without(header, cut)
    if name == "forwarded":
        return _from_forwarded(peer, header(name), trusted, settings.forwarded_host)
    if name in FORWARDING_LIST_HEADERS:
        hops = _list_entries(header(name))
        index = _client_hop(hops, trusted)
        client = address_text(peer if index is None else hops[index])
    else:
        # A single address that the proxy sets, overwriting whatever the client sent.
        written = _list_entries(header(name))[-1:]
        client = address_text(written[0] if written else peer)
    host = _host(_last(header("x-forwarded-host"))) if settings.forwarded_host else None
    return ProxiedRequest(client, _scheme(_last(header("x-forwarded-proto"))), host)


# The proxy headers' attributes in both spellings that request_header reads (x-forwarded-for, x_forwarded_for).
_FORWARDING_ATTRIBUTES: Final = tuple(REQUEST_HEADER_PREFIX + spelling for name in ("x-forwarded-for", "forwarded")
                                      for spelling in (name, name.replace("-", "_")))


def untrusted_client(peer: str | None, attributes: Mapping[str, Any]) -> str | None:
    """``proxied_request(peer, ...).client`` when no proxy is trusted, ``attributes`` being the server
    span's: the peer's address, and the warning if the request came through a proxy.

    Without a trusted proxy this is every request's path, and nearly every request has neither proxy
    header: their attributes are looked for first, and only read once there is one.
    """
    if not _warned_untrusted_forwarding and _has_any(attributes, _FORWARDING_ATTRIBUTES):
        _warn_if_forwarded(partial(request_header, attributes))
    return address_text(peer)


def _has_any(attributes: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    # Compiled, each test of the SDK's dict is a direct call of its C function: cheaper, for a few names,
    # than the keys view and isdisjoint() method calls.
    if type(attributes) is dict:
        plain: dict[str, Any] = attributes
        for name in names:
            if name in plain:
                return True
        return False
    return not attributes.keys().isdisjoint(names)


def _warn_if_forwarded(header: HeaderReader) -> None:
    """The warning that no proxy is trusted, when the request came through one. Looked for only until
    the warning is given: it is given once per process."""
    if not _warned_untrusted_forwarding and (header("x-forwarded-for") or header("forwarded")):
        _warn_untrusted_forwarding()


def _from_forwarded(peer: str | None, values: tuple[str, ...], trusted: TrustedProxies,
                    forwarded_host: bool) -> ProxiedRequest:
    """RFC 7239: the element that names the client was written by the outermost trusted proxy,
    and its ``proto=`` and ``host=`` describe the client's own connection."""
    elements = [_forwarded_parameters(element) for element in _list_entries(values)]
    index = _client_hop([element.get("for", "unknown") for element in elements], trusted)
    if index is None:
        return ProxiedRequest(address_text(peer))
    element = elements[index]
    host = _host(element.get("host")) if forwarded_host else None
    return ProxiedRequest(address_text(element.get("for")), _scheme(element.get("proto")), host)


def _client_hop(hops: list[str], trusted: TrustedProxies) -> int | None:
    """Which hop, counted from the left, is the client; None: the header names none (use the peer)."""
    if not hops:
        return None
    if trusted.hops:
        # Each of the N trusted proxies appended the address it saw; the client is the N-th from the right.
        return len(hops) - trusted.hops if len(hops) >= trusted.hops else None
    for index in range(len(hops) - 1, -1, -1):
        address = parse_address(hops[index])
        # An unknown or obfuscated hop cannot be trusted, and what lies left of it cannot be believed.
        if address is None or not trusted.trusts(address):
            return index
    return 0


def right_end(text: str, limit: int = MAX_FORWARDING_CHARS) -> str:
    """At most ``limit`` characters of a comma-separated proxy header, from the right.

    Proxies append on the right; the left is what the client sent, so padding there must not
    push the trusted proxies' entries out. A first entry cut in half is dropped.
    """
    if len(text) <= limit:
        return text
    return text[-limit:].partition(",")[2] if limit > 0 else ""


def _list_entries(values: tuple[str, ...]) -> list[str]:
    """The comma-separated entries of a header's values, in order, from its right end only."""
    text = right_end(",".join(values))
    return [entry.strip() for entry in text.split(",") if entry.strip()]


def _forwarded_parameters(element: str) -> dict[str, str]:
    parameters = {}
    for pair in element.split(";"):
        name, sep, value = pair.partition("=")
        if sep:
            parameters[name.strip().lower()] = value.strip().strip('"')
    return parameters


def _last(values: tuple[str, ...]) -> str | None:
    entries = _list_entries(values)
    return entries[-1] if entries else None


def _scheme(value: str | None) -> str | None:
    scheme = value.lower() if value else None
    return scheme if scheme in ("http", "https") else None


def _host(value: str | None) -> str | None:
    return value if value and _HOST.fullmatch(value) else None


def _without(header: HeaderReader, cut: HeaderCut) -> HeaderReader:
    return lambda name: () if cut(name) else header(name)


def _warn_cut(name: str) -> None:
    global _warned_cut
    if not _warned_cut:
        _warned_cut = True
        logger.warning(
            "A request's %s header is as long as the span attribute length limit (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT or "
            "the tracer provider's SpanLimits) and may have been cut, losing the entries the trusted proxies "
            "appended: no client address is sent for such requests. Wrap the application in the web middleware, "
            "which records the header's right end, or raise the limit; see docs/mapping.md.", name)


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
