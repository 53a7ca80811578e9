"""The address table behind the fetch rules: every range the issue names, the
addresses around their edges, and the spellings that must not slip through."""

from __future__ import annotations

import ipaddress

import pytest

from server.assets.addresses import (
    LINK_LOCAL, LOOPBACK, MULTICAST, PRIVATE, RESERVED, SHARED, UNSPECIFIED, AddressRule, canonical_host, looks_numeric,
    parse_address, rule_for,
)


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", LOOPBACK), ("127.255.255.254", LOOPBACK), ("::1", LOOPBACK),
        ("169.254.169.254", LINK_LOCAL), ("169.254.0.1", LINK_LOCAL), ("fe80::1", LINK_LOCAL), ("fe80::1%eth0", LINK_LOCAL),
        ("10.0.0.1", PRIVATE), ("172.16.0.1", PRIVATE), ("172.31.255.255", PRIVATE), ("192.168.1.1", PRIVATE),
        ("fc00::1", PRIVATE), ("fd12:3456::1", PRIVATE),
        ("100.64.0.1", SHARED), ("100.127.255.255", SHARED),
        ("0.0.0.0", UNSPECIFIED), ("0.1.2.3", UNSPECIFIED), ("::", UNSPECIFIED),
        ("224.0.0.1", MULTICAST), ("239.255.255.250", MULTICAST), ("ff02::1", MULTICAST),
        ("255.255.255.255", RESERVED), ("240.0.0.1", RESERVED), ("192.0.2.1", RESERVED), ("2001:db8::1", RESERVED),
        ("::127.0.0.1", RESERVED),  # IPv4-compatible: not public unicast
        # IPv6 forms of IPv4 addresses are judged by the IPv4 address.
        ("::ffff:127.0.0.1", LOOPBACK), ("::ffff:169.254.169.254", LINK_LOCAL), ("::ffff:10.0.0.1", PRIVATE),
        ("64:ff9b::a9fe:a9fe", LINK_LOCAL), ("2002:7f00:1::", LOOPBACK),
        # Public, including the neighbours of the ranges above.
        ("8.8.8.8", None), ("172.32.0.1", None), ("172.15.255.255", None), ("100.128.0.1", None), ("169.255.0.1", None),
        ("11.0.0.1", None), ("2606:4700::1111", None), ("::ffff:8.8.8.8", None), ("64:ff9b::808:808", None),
    ],
)
def test_rule_for(address: str, rule: AddressRule | None) -> None:
    assert rule_for(ipaddress.ip_address(address)) == rule


def test_allow_private_networks_lifts_only_the_private_ranges() -> None:
    assert all(r.private_network for r in (LOOPBACK, PRIVATE, SHARED))
    assert not any(r.private_network for r in (LINK_LOCAL, UNSPECIFIED, MULTICAST, RESERVED))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0X7F000001", "127.0.0.1"), ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"), ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"), ("fe80::1%25eth0", "fe80::1%eth0"), ("2852039166", "169.254.169.254"),
    ],
)
def test_every_spelling_parses(host: str, address: str) -> None:
    assert parse_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", ["example.com", "localhost", "1.example", "0day.test", "deadbeef", "a.b.c"])
def test_names_are_not_addresses(name: str) -> None:
    assert parse_address(name) is None
    assert not looks_numeric(name)


def test_numeric_hosts_that_are_no_address_are_recognised() -> None:
    assert parse_address("1.2.3.4.5") is None and looks_numeric("1.2.3.4.5")
    assert parse_address("99999999999") is None and looks_numeric("99999999999")


def test_canonical_host() -> None:
    assert canonical_host("Example.COM.") == "example.com"
    assert canonical_host("0x7f.1") == "127.0.0.1"
    assert canonical_host("[::FFFF:127.0.0.1]") == "::ffff:7f00:1"
