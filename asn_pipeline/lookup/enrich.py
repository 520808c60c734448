"""Classify addresses and look up their ASN: one row per address, with provenance."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import pandas as pd

from asn_pipeline.lookup.maxmind import DatabaseBuild, MaxMindLookup
from asn_pipeline.lookup.special_purpose import GLOBAL, classify

LOOKUP_COLUMNS = [
    "ip_address",
    "ip_version",
    "ip_class",
    "asn_number",
    "organization_name",
    "asn_network",
    "country_code",
    "asn_source",
    "build_epoch",
    "enrichment",
]


@dataclass(frozen=True)
class Lookups:
    """One row per address (``LOOKUP_COLUMNS``) and the database builds that answered."""

    addresses: pd.DataFrame
    asn_build: DatabaseBuild
    city_build: DatabaseBuild | None


def look_up(addresses: Iterable[str], maxmind: MaxMindLookup) -> Lookups:
    """Classify each canonical address; look up global ones in MaxMind, never bogons.

    ``asn_source`` says where the ASN came from: ``maxmind``, ``none`` (no database covers the
    address) or ``bogon`` (special-purpose, not looked up). ``enrichment`` records the database
    type, ``build_epoch`` and the matched network of every answer.
    """
    asn_build, city_build = maxmind.asn_build, maxmind.city_build
    rows = []
    for ip in addresses:
        version = ipaddress.ip_address(ip).version
        ip_class = classify(ip)
        if ip_class != GLOBAL:
            enrichment = {"bogon": {"ip_class": ip_class, "registry": "iana-special-purpose"}}
            rows.append((ip, version, ip_class, None, None, None, None, "bogon", None, enrichment))
            continue
        answer = maxmind.asn(ip)
        enrichment = {
            "maxmind_asn": {
                "database_type": asn_build.database_type,
                "build_epoch": asn_build.build_epoch,
                "network": answer.network if answer else None,
            }
        }
        country = None
        if city_build is not None:
            country = maxmind.country(ip)
            enrichment["maxmind_city"] = {
                "database_type": city_build.database_type,
                "build_epoch": city_build.build_epoch,
                "country": country,
            }
        rows.append(
            (
                ip,
                version,
                ip_class,
                answer.asn_number if answer else None,
                answer.organization_name if answer else None,
                answer.network if answer else None,
                country,
                "maxmind" if answer else "none",
                asn_build.build_epoch,
                enrichment,
            )
        )
    frame = pd.DataFrame(rows, columns=LOOKUP_COLUMNS)
    frame["asn_number"] = frame["asn_number"].astype("Int64")
    frame["build_epoch"] = frame["build_epoch"].astype("Int64")
    frame["enrichment"] = [orjson.dumps(e).decode() for e in frame["enrichment"]]
    return Lookups(frame, asn_build, city_build)
