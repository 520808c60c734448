"""Bogon classification against the pinned IANA special-purpose registries (invariant 6)."""

from __future__ import annotations

import ipaddress

import pytest

from asn_pipeline.lookup.special_purpose import (
    GLOBAL,
    IPV4_BLOCKS,
    IPV6_BLOCKS,
    canonical_ip,
    classify,
    classify_all,
    is_bogon,
)


@pytest.mark.parametrize(
    ("ip", "ip_class"),
    [
        ("0.1.2.3", "this_network"),
        ("10.255.0.1", "private"),
        ("100.64.0.1", "shared_cgnat"),
        ("100.127.255.254", "shared_cgnat"),
        ("127.0.0.1", "loopback"),
        ("169.254.10.1", "link_local"),
        ("172.31.0.1", "private"),
        ("192.0.0.1", "ietf_protocol_assignment"),
        ("192.0.2.1", "documentation"),
        ("192.88.99.1", "reserved"),
        ("192.168.0.1", "private"),
        ("198.19.255.1", "benchmarking"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.7", "documentation"),
        ("224.0.0.251", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("64:ff9b:1::1", "nat64_local"),
        ("100::1", "discard_only"),
        ("2001:2::1", "benchmarking"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("5f00::1", "srv6_sid"),
        ("fd00::1", "unique_local"),
        ("fe80::1", "link_local"),
        ("ff02::1", "multicast"),
        ("2001::1", "teredo"),
        ("2002:c000:204::1", "6to4"),
        ("4000::1", "reserved"),
    ],
)
def test_special_purpose_addresses_are_bogons(ip, ip_class):
    assert classify(ip) == ip_class
    assert is_bogon(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "8.8.8.8",
        "45.10.0.1",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above CGNAT
        "172.32.0.1",
        "192.0.0.9",  # PCP anycast, globally reachable inside 192.0.0.0/24
        "192.0.0.10",  # TURN anycast
        "192.31.196.1",  # AS112
        "192.175.48.1",
        "198.17.255.255",
        "223.255.255.255",
        "2a01:1000::5",
        "2001:1::1",  # PCP anycast inside 2001::/23
        "2001:3::1",  # AMT
        "2001:4:112::1",
        "2001:20::1",  # ORCHIDv2
        "2620:4f:8000::1",
        "64:ff9b::808:808",
    ],
)
def test_globally_reachable_addresses_are_global(ip):
    assert classify(ip) == GLOBAL
    assert not is_bogon(ip)


# Globally reachable according to the IANA registries.
REGISTRY_GLOBAL = {
    "192.0.0.9": True,  # PCP anycast
    "192.0.0.10": True,  # TURN anycast
    "2001:30::1": True,  # drone remote ID entity tags
    "192.88.99.1": False,  # deprecated 6to4 relay anycast
    "3fff::1": False,  # RFC 9637 documentation
    "5f00::1": False,  # SRv6 SIDs
    "100:0:0:1::1": False,  # dummy prefix
}


@pytest.mark.parametrize(("ip", "is_global"), REGISTRY_GLOBAL.items())
def test_the_pinned_table_follows_the_registry(ip, is_global):
    # On Python 3.11 ipaddress.is_global gets all but one of these wrong.
    assert (classify(ip) == GLOBAL) == is_global


def test_every_pinned_block_classifies_its_own_edges():
    for blocks in (IPV4_BLOCKS, IPV6_BLOCKS):
        for cidr, label in blocks:
            network = ipaddress.ip_network(cidr)
            more_specific = [
                ipaddress.ip_network(c)
                for c, _ in blocks
                if ipaddress.ip_network(c).version == network.version
                and ipaddress.ip_network(c) != network
                and ipaddress.ip_network(c).subnet_of(network)
            ]
            for edge in (network.network_address, network.broadcast_address):
                if not any(edge in m for m in more_specific):
                    assert classify(str(edge)) == label, (cidr, str(edge))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:45.10.0.1", "45.10.0.1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        (" 8.8.8.8\n", "8.8.8.8"),
    ],
)
def test_addresses_have_one_canonical_text_form(text, canonical):
    assert canonical_ip(text) == canonical


@pytest.mark.parametrize("text", ["", "1.2.3", "1.2.3.256", "gggg::1", "45.10.0.1/24"])
def test_non_addresses_are_refused(text):
    with pytest.raises(ValueError):
        canonical_ip(text)


def block_edges() -> list[str]:
    """Each pinned block's first and last address and their neighbours outside it."""
    edges = []
    for cidr, _ in (*IPV4_BLOCKS, *IPV6_BLOCKS):
        network = ipaddress.ip_network(cidr)
        first, last = int(network.network_address), int(network.broadcast_address)
        top = 2**network.max_prefixlen - 1
        kind = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
        for value in sorted({max(first - 1, 0), first, last, min(last + 1, top)}):
            edges.append(str(kind(value)))
    return edges


def test_classifying_a_whole_day_agrees_with_classifying_one_address():
    ips = [
        *block_edges(),
        "8.8.8.8",
        "2a01:1000::5",
        "::ffff:1.2.3.4",  # not canonical, but an address: ipv4_mapped
        "fe80::1%eth0",  # a scope id, which inet_pton refuses and ipaddress reads
        "0.0.0.0",
    ]
    parsed = classify_all(ips)
    assert list(parsed.classes) == [classify(ip) for ip in ips]
    for row, ip in enumerate(ips):
        address = ipaddress.ip_address(ip)
        assert parsed.versions[row] == address.version
        value = parsed.ipv4[row] if address.version == 4 else parsed.ipv6[row]
        assert value == int(address)


@pytest.mark.parametrize("text", ["1.2.3", "01.2.3.4", "1.2.3.4 ", "gggg::1", "45.10.0.1/24"])
def test_classifying_a_whole_day_refuses_what_ipaddress_refuses(text):
    with pytest.raises(ValueError):
        classify_all(["8.8.8.8", text])
