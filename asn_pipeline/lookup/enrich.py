"""Classify addresses and look up their ASN: one row per address, with provenance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import orjson
import pandas as pd

from asn_pipeline.lookup.maxmind import DatabaseBuild, MaxMindLookup, network_texts
from asn_pipeline.lookup.special_purpose import GLOBAL, classify_all

if TYPE_CHECKING:
    from asn_pipeline.lookup.cascade import CymruResult

_SOURCES = np.array(["maxmind", "none", "bogon"], dtype=object)  # asn_source by code

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
    "cymru_status",  # None until Team Cymru is asked (lookup.cascade)
]


@dataclass(frozen=True)
class Lookups:
    """One row per address (``LOOKUP_COLUMNS``), the database builds that answered and, once
    Team Cymru was asked, what to add to its cache."""

    addresses: pd.DataFrame
    asn_build: DatabaseBuild
    city_build: DatabaseBuild | None
    cymru: CymruResult | None = None
    # The run whose staged day these are the addresses of (store.step_outputs.stage_day): the
    # inventory step writes that day with them.
    staged_by_run: str | None = None


def look_up(addresses: Iterable[str], maxmind: MaxMindLookup) -> Lookups:
    """Classify each canonical address; look up global ones in MaxMind, never bogons.

    ``asn_source`` says where the ASN came from: ``maxmind``, ``none`` (no database covers the
    address) or ``bogon`` (special-purpose, not looked up). ``enrichment`` records the database
    type, ``build_epoch`` and the matched network of every answer.
    """
    asn_build, city_build = maxmind.asn_build, maxmind.city_build
    ips = list(addresses)
    if not ips:
        return Lookups(_empty_frame(), asn_build, city_build)
    parsed = classify_all(ips)
    is_global = parsed.classes == GLOBAL
    answers = maxmind.answer_all(ips, is_global.tolist())
    networks = network_texts(parsed.versions, parsed.ipv4, parsed.ipv6, answers.prefix_lens)
    # The rows MaxMind did not answer, bogons included: few, so corrected one by one.
    unanswered = np.flatnonzero(~answers.covered).tolist()
    asn_network = networks.copy()
    for row in unanswered:
        asn_network[row] = None
    frame = pd.DataFrame(
        {
            "ip_address": ips,
            "ip_version": parsed.versions,
            "ip_class": pd.array(parsed.classes, dtype="str"),
            "asn_number": pd.arrays.IntegerArray(answers.asn_numbers, ~answers.covered),
            "organization_name": answers.organization_names,
            "asn_network": asn_network,
            "country_code": (
                np.empty(len(ips), dtype=object)  # all None
                if answers.countries is None
                else answers.countries
            ),
            "asn_source": pd.array(
                _SOURCES[np.where(answers.covered, 0, np.where(is_global, 1, 2))], dtype="str"
            ),
            "build_epoch": pd.arrays.IntegerArray(
                np.full(len(ips), asn_build.build_epoch), ~is_global
            ),
            "enrichment": pd.array(
                _enrichment(
                    asn_build, city_build, parsed.classes, networks, answers.countries, unanswered
                ),
                dtype="str",
            ),
            "cymru_status": np.full(len(ips), None, dtype=object),
        },
        columns=LOOKUP_COLUMNS,
        copy=False,
    )
    return Lookups(frame, asn_build, city_build)


def _enrichment(
    asn_build: DatabaseBuild,
    city_build: DatabaseBuild | None,
    classes: np.ndarray,
    networks: list[str],
    countries: list[str | None] | None,
    unanswered: list[int],
) -> list[str]:
    """The ``enrichment`` JSON of each row: what answered it, or why nothing did."""
    # Only the network and the country vary per answer: the rest of the JSON is written once.
    # Network text is digits, hex, dots, colons and a slash: nothing to escape.
    asn_head = '{"maxmind_asn":' + _json_until_last_value(
        {"database_type": asn_build.database_type, "build_epoch": asn_build.build_epoch}, "network"
    )
    if city_build is None:
        end = "}}"
        enrichment = [f'{asn_head}"{network}"{end}' for network in networks]
        for row in unanswered:
            enrichment[row] = f"{asn_head}null{end}"
    else:
        city_head = '},"maxmind_city":' + _json_until_last_value(
            {"database_type": city_build.database_type, "build_epoch": city_build.build_epoch},
            "country",
        )
        country_ends = {code: _json(code) + "}}" for code in set(countries)}
        enrichment = [
            f'{asn_head}"{network}"{city_head}{country_ends[code]}'
            for network, code in zip(networks, countries, strict=True)
        ]
        for row in unanswered:
            enrichment[row] = f"{asn_head}null{city_head}{country_ends[countries[row]]}"
    for row in unanswered:
        if classes[row] != GLOBAL:
            bogon = {"ip_class": classes[row], "registry": "iana-special-purpose"}
            enrichment[row] = _json({"bogon": bogon})
    return enrichment


def _empty_frame() -> pd.DataFrame:
    """No addresses: the untyped columns pandas gives a frame built from no rows."""
    frame = pd.DataFrame([], columns=LOOKUP_COLUMNS)
    frame = frame.astype({"asn_number": "Int64", "build_epoch": "Int64"})
    frame["enrichment"] = []
    return frame


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _json_until_last_value(fields: dict, last: str) -> str:
    """The JSON object ``fields`` + ``{last: ...}`` up to where the value of ``last`` goes."""
    return _json({**fields, last: None}).removesuffix("null}")
