"""Bulk lookups against real .mmdb files: what each row says, and that it says what MaxMind says."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import maxminddb
import orjson
import pandas as pd
import pytest

from asn_pipeline.demo import Network, demo_networks, write_asn_mmdb, write_city_mmdb
from asn_pipeline.lookup.enrich import LOOKUP_COLUMNS, look_up
from asn_pipeline.lookup.maxmind import MaxMindLookup

# Prefix lengths on and off octet and hextet boundaries, a host route, NAT64 and a short IPv6.
NETWORKS = [
    *demo_networks(),
    Network("81.2.69.160/27", 64600, "Odd Prefix Hosting", "GB"),
    Network("5.0.0.0/8", 64601, "Short Prefix Transit", "DE"),
    Network("31.13.70.1/32", 64602, "Host Route", "IE"),
    Network("2a02:1:2:3::/64", 64603, "IPv6 Slash 64", "FR"),
    Network("2600::/12", 64604, "IPv6 Slash 12", "US"),
    Network("64:ff9b::/96", 64605, "NAT64 Gateway", "NL"),
]
# Special-purpose blocks that a careless database might cover: they must still not be looked up.
BOGON_NETWORKS = [
    Network("10.0.0.0/8", 64999, "Should Never Answer", "ZZ"),
    Network("fe80::/10", 64999, "Should Never Answer", "ZZ"),
    Network("192.0.2.0/24", 64999, "Should Never Answer", "ZZ"),
]
BOGONS = {"10.1.2.3": "private", "fe80::1": "link_local", "192.0.2.7": "documentation"}
UNCOVERED = ["198.60.1.1", "2c0f:1::1", "192.0.0.9"]  # global, in no network above


@pytest.fixture(scope="module")
def databases(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("mmdb")
    paths = {"asn": directory / "asn.mmdb", "city": directory / "city.mmdb"}
    write_asn_mmdb(paths["asn"], NETWORKS + BOGON_NETWORKS)
    write_city_mmdb(paths["city"], NETWORKS + BOGON_NETWORKS)
    return paths


def addresses_in(networks: list[Network], per_network: int = 6) -> list[str]:
    """First, last and random addresses of each network."""
    rng = random.Random(2026)
    addresses = []
    for net in networks:
        network = ipaddress.ip_network(net.cidr)
        offsets = {0, network.num_addresses - 1}
        offsets |= {rng.randrange(network.num_addresses) for _ in range(per_network)}
        addresses += [str(network[offset]) for offset in sorted(offsets)]
    return addresses


def rows(frame: pd.DataFrame) -> dict[str, dict]:
    """Each row by address, a missing value (None, NaN, NA: the column's dtype decides) as None."""
    return {
        row["ip_address"]: {name: None if pd.isna(value) else value for name, value in row.items()}
        for row in frame.to_dict("records")
    }


def test_network_text_is_the_matched_network_for_ipv4_and_ipv6(databases):
    addresses = addresses_in(NETWORKS)
    with maxminddb.open_database(str(databases["asn"])) as reader:
        # What geoip2's model.network printed: the address widened to the prefix that matched.
        expected = {
            ip: str(ipaddress.ip_network(f"{ip}/{reader.get_with_prefix_len(ip)[1]}", strict=False))
            for ip in addresses
        }
    by_network = {net.cidr: net for net in NETWORKS}
    result = rows(look_up(addresses, MaxMindLookup(databases["asn"])).addresses)
    for ip in addresses:
        row = result[ip]
        assert row["asn_network"] == expected[ip]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(row["asn_network"])
        assert row["asn_number"] == by_network[row["asn_network"]].asn_number
        assert row["organization_name"] == by_network[row["asn_network"]].organization_name
        assert row["asn_source"] == "maxmind"
        assert orjson.loads(row["enrichment"])["maxmind_asn"]["network"] == expected[ip]
    assert {result[ip]["ip_version"] for ip in addresses} == {4, 6}
    assert {"81.2.69.160/27", "31.13.70.1/32", "2a02:1:2:3::/64", "64:ff9b::/96"} <= {
        row["asn_network"] for row in result.values()
    }


def test_bulk_lookups_agree_with_one_address_at_a_time(databases):
    addresses = [*addresses_in(NETWORKS), *UNCOVERED]
    maxmind = MaxMindLookup(databases["asn"], databases["city"])
    result = rows(look_up(addresses, maxmind).addresses)
    for ip in addresses:
        answer = maxmind.asn(ip)
        assert result[ip]["asn_number"] == (answer.asn_number if answer else None)
        assert result[ip]["asn_network"] == (answer.network if answer else None)
        assert result[ip]["country_code"] == maxmind.country(ip)


def test_bogons_are_never_looked_up_even_where_the_database_covers_them(databases):
    addresses = [*BOGONS, "45.10.1.1"]
    frame = look_up(addresses, MaxMindLookup(databases["asn"], databases["city"])).addresses
    result = rows(frame)
    for ip, ip_class in BOGONS.items():
        row = result[ip]
        assert row["ip_class"] == ip_class and row["asn_source"] == "bogon"
        assert row["asn_number"] is row["build_epoch"] is row["organization_name"] is None
        assert row["asn_network"] is row["country_code"] is None
        assert orjson.loads(row["enrichment"]) == {
            "bogon": {"ip_class": ip_class, "registry": "iana-special-purpose"}
        }
    assert result["45.10.1.1"]["asn_source"] == "maxmind"


def test_an_uncovered_global_address_has_source_none_and_its_build(databases):
    maxmind = MaxMindLookup(databases["asn"])
    result = rows(look_up(UNCOVERED, maxmind).addresses)
    for ip in UNCOVERED:
        row = result[ip]
        assert row["ip_class"] == "global" and row["asn_source"] == "none"
        assert row["asn_number"] is row["asn_network"] is None
        assert row["build_epoch"] == maxmind.asn_build.build_epoch
        assert orjson.loads(row["enrichment"]) == {
            "maxmind_asn": {
                "database_type": "GeoLite2-ASN",
                "build_epoch": maxmind.asn_build.build_epoch,
                "network": None,
            }
        }


def test_a_city_database_adds_the_country_to_every_global_address(databases):
    addresses = ["45.10.1.1", "2a00:1000::1", "81.2.69.170", "198.60.1.1", "10.1.2.3"]
    maxmind = MaxMindLookup(databases["asn"], databases["city"])
    result = rows(look_up(addresses, maxmind).addresses)
    assert [result[ip]["country_code"] for ip in addresses] == ["NL", "NL", "GB", None, None]
    city = {
        "database_type": "GeoLite2-City",
        "build_epoch": maxmind.city_build.build_epoch,
        "country": "GB",
    }
    assert orjson.loads(result["81.2.69.170"]["enrichment"]) == {
        "maxmind_asn": {
            "database_type": "GeoLite2-ASN",
            "build_epoch": maxmind.asn_build.build_epoch,
            "network": "81.2.69.160/27",
        },
        "maxmind_city": city,
    }
    uncovered = orjson.loads(result["198.60.1.1"]["enrichment"])
    assert uncovered["maxmind_asn"]["network"] is None
    assert uncovered["maxmind_city"] == {**city, "country": None}


def test_the_frame_keeps_its_columns_order_and_types(databases):
    addresses = ["45.10.1.1", "2a00:1000::1", "198.60.1.1", "10.1.2.3"]
    frame = look_up(addresses, MaxMindLookup(databases["asn"])).addresses
    assert list(frame.columns) == LOOKUP_COLUMNS
    assert list(frame["ip_address"]) == addresses
    assert frame["ip_version"].dtype == "int64"
    assert frame["asn_number"].dtype == "Int64" and frame["build_epoch"].dtype == "Int64"
    assert frame["enrichment"].dtype == "str"
    assert all(orjson.loads(text) for text in frame["enrichment"])
    assert look_up([], MaxMindLookup(databases["asn"])).addresses.columns.tolist() == LOOKUP_COLUMNS
