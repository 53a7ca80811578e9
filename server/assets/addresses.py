"""Which IP addresses a fetch may connect to: the ranges that are not the public internet.

The fetch service downloads what its clients name, so without a check any client
could make the server read its own loopback services, the cloud metadata service
(169.254.169.254 hands out credentials) or anything on the private network behind
it. Every address a fetch would connect to is classified here; ``rule_for`` names
the range it falls in, or None for a public address.

Addresses that embed an IPv4 address are judged by it: IPv4-mapped
(``::ffff:127.0.0.1``), NAT64 (``64:ff9b::/96``) and 6to4 (``2002::/16``).
``parse_address`` also reads the legacy IPv4 spellings that ``inet_aton`` and
``getaddrinfo`` accept (``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``),
so no spelling of an address escapes its rule.
"""

from __future__ import annotations

import ipaddress
import socket
import string
from dataclasses import dataclass
from urllib.parse import unquote

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AddressRule:
    """A range a fetch may not reach by default."""

    description: str  # "loopback", "link-local", ...: completes "ADDRESS is ..."
    private_network: bool  # lifted by [assets] allow_private_networks = true

    def __str__(self) -> str:
        return self.description


LOOPBACK = AddressRule("loopback", private_network=True)
PRIVATE = AddressRule("a private address", private_network=True)
SHARED = AddressRule("a shared (carrier-grade NAT) address", private_network=True)
# Never lifted by allow_private_networks: no download mirror lives there.
LINK_LOCAL = AddressRule("link-local (cloud metadata services answer there)", private_network=False)
UNSPECIFIED = AddressRule("the unspecified address (it reaches this machine)", private_network=False)
MULTICAST = AddressRule("multicast", private_network=False)
RESERVED = AddressRule("a reserved address", private_network=False)

_V4_RULES: tuple[tuple[ipaddress.IPv4Network, AddressRule], ...] = tuple(
    (ipaddress.IPv4Network(net), rule)
    for net, rule in [
        ("0.0.0.0/8", UNSPECIFIED),
        ("127.0.0.0/8", LOOPBACK),
        ("10.0.0.0/8", PRIVATE),
        ("172.16.0.0/12", PRIVATE),
        ("192.168.0.0/16", PRIVATE),
        ("100.64.0.0/10", SHARED),
        ("169.254.0.0/16", LINK_LOCAL),
        ("192.0.0.0/24", RESERVED),  # IETF protocol assignments
        ("192.0.2.0/24", RESERVED),  # documentation
        ("198.51.100.0/24", RESERVED),
        ("203.0.113.0/24", RESERVED),
        ("198.18.0.0/15", RESERVED),  # benchmarking
        ("192.88.99.0/24", RESERVED),  # the old 6to4 relay anycast
        ("224.0.0.0/4", MULTICAST),
        ("240.0.0.0/4", RESERVED),  # and 255.255.255.255
    ]
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, AddressRule], ...] = tuple(
    (ipaddress.IPv6Network(net), rule)
    for net, rule in [
        ("::/128", UNSPECIFIED),
        ("::1/128", LOOPBACK),
        ("64:ff9b:1::/48", PRIVATE),  # local-use NAT64
        ("100::/64", RESERVED),  # discard-only
        ("2001:db8::/32", RESERVED),  # documentation
        ("fc00::/7", PRIVATE),  # unique local
        ("fe80::/10", LINK_LOCAL),
        ("fec0::/10", PRIVATE),  # the old site-local
        ("ff00::/8", MULTICAST),
    ]
)
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LEGACY_V4_CHARACTERS = frozenset(string.hexdigits + "xX.")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def rule_for(address: IPAddress) -> AddressRule | None:
    """The range ``address`` is in, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return rule_for(inner)
        without_scope = ipaddress.IPv6Address(address.compressed.split("%", 1)[0])
        for network, rule in _V6_RULES:
            if without_scope in network:
                return rule
        # Outside 2000::/3 nothing is public unicast (IPv4-compatible ::a.b.c.d included).
        return None if without_scope in _GLOBAL_UNICAST_V6 else RESERVED
    for v4_network, rule in _V4_RULES:
        if address in v4_network:
            return rule
    return None


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an address, in any spelling a resolver would accept; None for a name."""
    text = unquote(host).strip().strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and text[0].isdigit() and set(text) <= _LEGACY_V4_CHARACTERS:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def looks_numeric(host: str) -> bool:
    """True for hosts that HTTP clients treat as addresses, not names (digits and dots, or a colon)."""
    text = unquote(host).strip().strip("[]").rstrip(".")
    return ":" in text or (bool(text) and text.replace(".", "").isdigit())


def canonical_host(host: str) -> str:
    """Lower case, no trailing dot or brackets; addresses in their standard spelling."""
    address = parse_address(host)
    return str(address) if address is not None else host.strip().lower().rstrip(".")
