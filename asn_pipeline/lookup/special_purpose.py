"""Which source addresses are bogons: the IANA special-purpose address registries, pinned.

The standard library's ``is_global``/``is_private`` flags disagree with the registries for several
blocks (anycast exceptions inside 192.0.0.0/24 and 2001::/23, 3fff::/20, 5f00::/16, 100:0:0:1::/64
...), so the registries are pinned here as data. The most specific block decides: an address in
192.0.0.9/32 (PCP anycast, globally reachable) is global although 192.0.0.0/24 is not.

Sources: IANA IPv4 and IPv6 Special-Purpose Address Registries (updated 2025-06), the IPv4 and IPv6
multicast registries, and the IPv6 Global Unicast allocation (2000::/3).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from socket import AF_INET, AF_INET6, inet_pton

import numpy as np

GLOBAL = "global"

# (block, ip_class); ip_class GLOBAL marks a globally reachable exception inside a larger block.
IPV4_BLOCKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this_network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared_cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf_protocol_assignment"),
    ("192.0.0.9/32", GLOBAL),  # Port Control Protocol anycast
    ("192.0.0.10/32", GLOBAL),  # TURN anycast
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", GLOBAL),  # AS112-v4
    ("192.52.193.0/24", GLOBAL),  # AMT
    ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", GLOBAL),  # direct delegation AS112
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
)

IPV6_BLOCKS: tuple[tuple[str, str], ...] = (
    ("::/0", "reserved"),  # everything outside 2000::/3 is unallocated IETF space
    ("2000::/3", GLOBAL),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "ipv4_mapped"),  # unwrapped to IPv4 before classification
    ("64:ff9b::/96", GLOBAL),  # well-known NAT64 prefix, globally reachable
    ("64:ff9b:1::/48", "nat64_local"),
    ("100::/64", "discard_only"),
    ("100:0:0:1::/64", "dummy_prefix"),
    ("2001::/23", "ietf_protocol_assignment"),
    ("2001::/32", "teredo"),
    ("2001:1::1/128", GLOBAL),  # PCP anycast
    ("2001:1::2/128", GLOBAL),  # TURN anycast
    ("2001:1::3/128", GLOBAL),  # DNS-SD SRP anycast
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", GLOBAL),  # AMT
    ("2001:4:112::/48", GLOBAL),  # AS112-v6
    ("2001:10::/28", "orchid"),  # deprecated ORCHID
    ("2001:20::/28", GLOBAL),  # ORCHIDv2
    ("2001:30::/28", GLOBAL),  # drone remote ID entity tags
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", GLOBAL),  # direct delegation AS112
    ("3fff::/20", "documentation"),
    ("5f00::/16", "srv6_sid"),
    ("fc00::/7", "unique_local"),
    ("fe80::/10", "link_local"),
    ("ff00::/8", "multicast"),
)


@dataclass(frozen=True)
class _IntervalTable:
    """Disjoint [start, end] integer intervals, each labelled by its most specific block."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    labels: tuple[str, ...]

    @classmethod
    def build(cls, blocks: tuple[tuple[str, str], ...]) -> _IntervalTable:
        networks = [(ipaddress.ip_network(cidr), label) for cidr, label in blocks]
        cuts = sorted(
            {int(n.network_address) for n, _ in networks}
            | {int(n.broadcast_address) + 1 for n, _ in networks}
        )
        starts, ends, labels = [], [], []
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            covering = [
                (n.prefixlen, label)
                for n, label in networks
                if int(n.network_address) <= lo and hi - 1 <= int(n.broadcast_address)
            ]
            if not covering:
                continue
            label = max(covering)[1]
            if labels and labels[-1] == label and ends[-1] + 1 == lo:
                ends[-1] = hi - 1
            else:
                starts.append(lo)
                ends.append(hi - 1)
                labels.append(label)
        return cls(tuple(starts), tuple(ends), tuple(labels))

    def label(self, value: int) -> str:
        i = bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.ends[i]:
            return self.labels[i]
        return GLOBAL


_TABLES = {4: _IntervalTable.build(IPV4_BLOCKS), 6: _IntervalTable.build(IPV6_BLOCKS)}
# The IPv4 table as arrays, to label many addresses in one search; the last label is for misses.
_IPV4_STARTS = np.array(_TABLES[4].starts, dtype=np.int64)
_IPV4_ENDS = np.array(_TABLES[4].ends, dtype=np.int64)
_IPV4_LABELS = np.array([*_TABLES[4].labels, GLOBAL], dtype=object)
_inet_pton4 = partial(inet_pton, AF_INET)
_NO_IPV4 = bytes(4)


@dataclass(frozen=True)
class ParsedAddresses:
    """Addresses parsed once: version, integer value and ``ip_class`` of each, in input order."""

    versions: np.ndarray  # int64: 4 or 6
    ipv4: np.ndarray  # int64 value of each IPv4 address, 0 on IPv6 rows
    ipv6: dict[int, int]  # row -> value of each IPv6 address (128 bits do not fit numpy)
    classes: np.ndarray  # object: GLOBAL or the special-purpose block's name


def canonical_ip(text: str) -> str:
    """Canonical text form: compressed, IPv4-mapped IPv6 unwrapped to IPv4.

    Raises ``ValueError`` for anything that is not an IP address.
    """
    address = ipaddress.ip_address(text.strip())
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.compressed


def classify(ip: str) -> str:
    """The ``ip_class`` of a canonical address: ``global`` or the special-purpose block's name."""
    address = ipaddress.ip_address(ip)
    return _TABLES[address.version].label(int(address))


def is_bogon(ip: str) -> bool:
    """True when the address must never be enriched (DESIGN invariant 6)."""
    return classify(ip) != GLOBAL


def classify_all(ips: Sequence[str]) -> ParsedAddresses:
    """What ``classify`` says of each address, and its value, for a whole day at once.

    ``inet_pton`` reads address text many times faster than ``ipaddress`` and accepts nothing
    that ``ipaddress`` refuses; should it refuse an address (an IPv6 scope id, say), ``ipaddress``
    reads them all and decides. IPv4 addresses, nearly all of them, are labelled in one search.
    """
    try:
        # Four zero bytes stand in for each IPv6 address, read on its own below.
        ipv4 = _ipv4_values([_NO_IPV4 if ":" in ip else _inet_pton4(ip) for ip in ips])
        ipv6 = {
            row: int.from_bytes(inet_pton(AF_INET6, ips[row]), "big")
            for row in np.flatnonzero(ipv4 == 0).tolist()
            if ":" in ips[row]
        }
    except (OSError, TypeError, ValueError):
        addresses = [ipaddress.ip_address(ip) for ip in ips]
        ipv4 = _ipv4_values([a.packed if a.version == 4 else _NO_IPV4 for a in addresses])
        ipv6 = {row: int(a) for row, a in enumerate(addresses) if a.version == 6}
    i = np.searchsorted(_IPV4_STARTS, ipv4, side="right") - 1
    classes = _IPV4_LABELS[np.where((i >= 0) & (ipv4 <= _IPV4_ENDS[i]), i, -1)]
    versions = np.full(len(ipv4), 4, dtype=np.int64)
    if ipv6:
        rows = list(ipv6)
        versions[rows] = 6
        classes[rows] = [_TABLES[6].label(value) for value in ipv6.values()]
    return ParsedAddresses(versions, ipv4, ipv6, classes)


def _ipv4_values(packed: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(packed), dtype=">u4").astype(np.int64)
