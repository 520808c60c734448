"""Team Cymru over DNS (DESIGN §6): a real DNS server on 127.0.0.1 (``dns_server.py``), real
Dagster runs, real SQLite and PostgreSQL inventories. No resolver is mocked."""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import subprocess
import sys
import time

import dagster as dg
import pandas as pd
import pytest

from asn_pipeline.lookup.cymru import MalformedAnswer, choose_origin, parse_as_name, parse_origin
from asn_pipeline.resources import CYMRU_POOL
from asn_pipeline.settings import PROJECT_ROOT
from asn_pipeline.store import Inventory
from asn_pipeline.store.schema import apply_migration, ensure_schema, migrations, schema_version
from asn_pipeline_tests.conftest import CowrieLogs, Pipeline, assert_exact, configure, ts
from asn_pipeline_tests.dns_server import (
    MALFORMED,
    REFUSED,
    SERVFAIL,
    SILENT,
    TRUNCATE,
    CymruDnsServer,
)
from asn_pipeline_tests.test_invariants import inject_failure, remove_failure

D = dt.date(2026, 11, 20)
D2 = D + dt.timedelta(days=1)
FAST = {"inventory": {"ops": {"lookup_cymru": {"config": {"timeout_seconds": 0.3, "attempts": 2}}}}}
BOGONS = ("192.168.1.5", "10.0.0.1", "100.64.1.1", "192.0.2.44", "fe80::1", "fc00::7")


@pytest.fixture
def cymru(pipeline: Pipeline, dns_server: CymruDnsServer, monkeypatch) -> Pipeline:
    """The pipeline with Team Cymru on, asking the test server."""
    monkeypatch.setenv("ASN_PIPELINE_CYMRU", "dns")
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_NAMESERVERS", dns_server.nameserver)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_QPS", "1000")
    return pipeline


def attacks(logs: CowrieLogs, day: dt.date, *ips: str) -> None:
    """One session of ``day`` from each address."""
    for i, ip in enumerate(ips):
        logs.session("sensor-a", f"{day:%m%d}-{i}", ip, ts(day, i % 24, i % 60), events=1)
    logs.write()


def addresses(pipeline: Pipeline) -> pd.DataFrame:
    return pipeline.table("ip_inventory").set_index("ip_address")


def ip_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [materialisation] = [
        m
        for m in result.asset_materializations_for_node("inventory")
        if m.asset_key.path == ["ip_inventory"]
    ]
    return {key: value.value for key, value in materialisation.metadata.items()}


# The wire format, without a server


def test_origin_records_parse_with_unknown_fields_and_refuse_garbage():
    record = parse_origin("65550 65540 | 81.2.0.0/16 | NA |  | ")
    assert record.asns == (65540, 65550) and record.asn == 65540
    assert (record.prefix, record.country, record.registry, record.allocated) == (
        "81.2.0.0/16",
        None,
        None,
        None,
    )
    assert parse_origin("NA | 2a02:6b8::/32 | RU | ripencc | 2007-01-01").asn is None
    for garbage in (
        "this is not an answer",
        "65540 | 81.2.0",  # cut short
        "65540 | 81.2.0.0/33 | NL | ripencc | 2010-01-01",
        "AS65540 | 81.2.0.0/16 | NL | ripencc | 2010-01-01",
        "65540 | 81.2.0.0/16 | Netherlands | ripencc | 2010-01-01",
        "65540 | 81.2.0.0/16 | NL | ripencc | 2010-01-01 | extra",
    ):
        with pytest.raises(MalformedAnswer):
            parse_origin(garbage)


def test_the_longest_prefix_that_really_contains_the_address_is_chosen():
    texts = [
        "65541 | 81.0.0.0/8 | NL | ripencc | 2000-01-01",
        "65543 | 81.5.6.0/24 | NL | ripencc | 2011-01-01",  # more specific, but elsewhere
        "65542 | 81.5.0.0/16 | NL | ripencc | 2012-01-01",
    ]
    assert choose_origin("81.5.5.7", texts).prefix == "81.5.0.0/16"
    with pytest.raises(MalformedAnswer, match="contains"):
        choose_origin("82.1.1.1", texts)


def test_as_name_records_keep_bars_in_the_name_and_check_the_asn():
    record = parse_as_name(65560, ["65560 | DE | ripencc | 2001-02-03 | FOO | BAR GmbH, DE"])
    assert (record.name, record.country, record.registry) == ("FOO | BAR GmbH, DE", "DE", "ripencc")
    assert parse_as_name(65561, ["65561 | NA | | | NA"]).name is None
    with pytest.raises(MalformedAnswer):
        parse_as_name(65560, ["65999 | DE | ripencc | 2001-02-03 | OTHER"])


# Through Dagster runs, on SQLite and PostgreSQL


def test_query_names_reverse_octets_and_nibbles_and_a_mapped_address_asks_as_ipv4(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("23.45.0.0/16", 65536)
    dns_server.route("2a02:6b8::/32", 65537, country="RU")
    dns_server.route("31.13.64.0/18", 65538, country="US", registry="arin")
    attacks(logs, D, "23.45.67.89", "2a02:6b8::1:2", "::ffff:31.13.64.1")

    [result] = cymru.run(D)

    assert sorted(dns_server.origin_names()) == sorted(
        [
            "89.67.45.23.origin.asn.cymru.com",
            "2.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.6.0.2.0.a.2.origin6.asn.cymru.com",
            "1.64.13.31.origin.asn.cymru.com",
        ]
    )
    assert sorted(dns_server.asn_names()) == [
        "as65536.asn.cymru.com",
        "as65537.asn.cymru.com",
        "as65538.asn.cymru.com",
    ]
    ips = addresses(cymru)
    row = ips.loc["31.13.64.1"]
    assert (row["asn_source"], row["current_asn"], row["asn_network"], row["cymru_status"]) == (
        "cymru",
        65538,
        "31.13.64.0/18",
        "found",
    )
    answer = row["enrichment"]["cymru"]
    assert answer["query"] == "1.64.13.31.origin.asn.cymru.com"
    assert answer["answer"] == ["65538 | 31.13.64.0/18 | US | arin | 2010-05-17"]
    fetched = dt.datetime.fromisoformat(answer["fetched_at"])
    assert abs(fetched - row["enriched_at"]) < dt.timedelta(minutes=1)
    assert ips.loc["2a02:6b8::1:2", "current_asn"] == 65537
    assert ips.loc["23.45.67.89", "asn_network"] == "23.45.0.0/16"
    history = cymru.table("ip_asn_history")
    assert set(history["source"]) == {"cymru"} and len(history) == 3
    metadata = ip_metadata(result)
    assert metadata["cymru_found"] == 3 and metadata["cymru_queries_sent"] == 6
    assert metadata["cymru_names_fetched"] == 0  # the server knows none of the names
    assert_exact(cymru)


def test_a_multi_origin_prefix_keeps_every_asn_and_records_the_lowest(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("81.2.0.0/16", 65550, 65540)
    attacks(logs, D, "81.2.3.4")

    cymru.run(D)

    row = addresses(cymru).loc["81.2.3.4"]
    assert row["current_asn"] == 65540
    assert row["enrichment"]["cymru"]["origin_asns"] == [65540, 65550]
    answer = ["65550 65540 | 81.2.0.0/16 | NL | ripencc | 2010-05-17"]
    assert row["enrichment"]["cymru"]["answer"] == answer
    [cached] = cymru.table("cymru_prefixes").to_dict("records")
    assert (cached["asn_number"], cached["asns"]) == (65540, "65540 65550")
    assert 65550 not in set(cymru.table("asn_inventory")["asn_number"])
    assert_exact(cymru)


def test_covering_prefixes_the_longest_wins_and_answers_its_neighbours(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("81.0.0.0/8", 65541)
    dns_server.route("81.5.5.0/24", 65542)
    dns_server.txt(  # the answer lists a more specific prefix elsewhere too: ignored
        "7.5.5.81.origin.asn.cymru.com",
        "65541 | 81.0.0.0/8 | NL | ripencc | 2000-01-01",
        "65543 | 81.5.6.0/24 | NL | ripencc | 2011-01-01",
        "65542 | 81.5.5.0/24 | NL | ripencc | 2012-01-01",
    )
    attacks(logs, D, "81.5.5.7", "81.5.5.200", "81.9.9.9")

    [first] = cymru.run(D)

    assert sorted(dns_server.origin_names()) == [
        "7.5.5.81.origin.asn.cymru.com",
        "9.9.9.81.origin.asn.cymru.com",
    ]
    ips = addresses(cymru)
    assert ips.loc["81.5.5.7", ["current_asn", "asn_network"]].tolist() == [65542, "81.5.5.0/24"]
    assert ips.loc["81.5.5.200", ["current_asn", "asn_network"]].tolist() == [65542, "81.5.5.0/24"]
    assert ips.loc["81.9.9.9", ["current_asn", "asn_network"]].tolist() == [65541, "81.0.0.0/8"]
    assert ip_metadata(first)["cymru_cache_hits"] == 1  # 81.5.5.200, from 81.5.5.7's answer
    assert sorted(cymru.table("cymru_prefixes")["prefix"]) == ["81.0.0.0/8", "81.5.5.0/24"]

    dns_server.forget()
    attacks(logs, D2, "81.5.5.9", "81.7.7.7")
    cymru.run(D2)

    assert dns_server.origin_names() == []  # both inside cached prefixes
    ips = addresses(cymru)
    assert ips.loc["81.5.5.9", "current_asn"] == 65542
    assert ips.loc["81.7.7.7", "current_asn"] == 65541
    assert_exact(cymru)


def test_nxdomain_is_unrouted_and_cached_as_a_negative_answer(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    attacks(logs, D, "94.1.1.1")

    [first] = cymru.run(D)
    dns_server.forget()
    [again] = cymru.run(D)

    row = addresses(cymru).loc["94.1.1.1"]
    assert (row["asn_source"], row["cymru_status"]) == ("none", "unrouted")
    assert pd.isna(row["current_asn"]) and pd.isna(row["asn_network"])
    assert row["enrichment"]["cymru"]["answer"] == "NXDOMAIN"
    assert cymru.table("cymru_unrouted")["ip_address"].tolist() == ["94.1.1.1"]
    assert ip_metadata(first)["cymru_nxdomain"] == 1
    assert dns_server.names() == [] and ip_metadata(again)["cymru_queries_sent"] == 0
    assert_exact(cymru)


def test_as_names_fill_name_country_and_registry_and_maxmind_wins(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("45.10.0.0/16", 65999)  # would answer a covered address: never asked
    dns_server.as_name(64496, "OTHER-NAME - Other", country="US", registry="arin")
    dns_server.route("81.3.0.0/16", 65560, country="DE")
    dns_server.as_name(65560, "CYMRU-ONLY - Cymru Only Net, DE", country="DE")
    dns_server.route("81.4.0.0/16", 64497)  # the ASN MaxMind names "Example Telecom B"
    dns_server.as_name(64497, "CYMRU-B - B as Cymru knows it", country="SG", registry="apnic")
    attacks(logs, D, "45.10.0.1", "81.3.0.1", "81.4.0.1")

    [result] = cymru.run(D)

    assert sorted(dns_server.origin_names()) == [
        "1.0.3.81.origin.asn.cymru.com",
        "1.0.4.81.origin.asn.cymru.com",
    ]
    ips = addresses(cymru)
    assert ips.loc["45.10.0.1", ["asn_source", "current_asn"]].tolist() == ["maxmind", 64496]
    assert pd.isna(ips.loc["45.10.0.1", "cymru_status"])
    asns = cymru.table("asn_inventory").set_index("asn_number")
    columns = ["organization_name", "name_source", "rir_registry", "organization_country"]
    # MaxMind's name and (City) country win; the registry only Cymru has.
    assert asns.loc[64496, columns].tolist() == ["Example Hosting A", "maxmind", "arin", "NL"]
    assert asns.loc[65560, columns].tolist() == [
        "CYMRU-ONLY - Cymru Only Net, DE",
        "cymru",
        "ripencc",
        "DE",
    ]
    assert asns.loc[64497, columns].tolist() == [
        "CYMRU-B - B as Cymru knows it",
        "cymru",
        "apnic",
        "SG",
    ]
    assert ip_metadata(result)["cymru_names_fetched"] == 3
    names = cymru.table("cymru_asn_names").set_index("asn_number")
    assert names.loc[65560, "organization_name"] == "CYMRU-ONLY - Cymru Only Net, DE"

    # MaxMind names 64497 the next day: its name replaces Cymru's, and stays on a re-run.
    attacks(logs, D2, "45.11.0.1")
    cymru.run(D2, D)

    asns = cymru.table("asn_inventory").set_index("asn_number")
    assert asns.loc[64497, columns].tolist() == ["Example Telecom B", "maxmind", "apnic", "SG"]
    assert_exact(cymru)


@pytest.mark.parametrize(
    "trouble", [SILENT, SERVFAIL, REFUSED, MALFORMED, "garbage TXT", "truncated TXT"]
)
def test_an_address_without_a_usable_answer_stays_pending_and_a_later_run_resolves_it(
    cymru: Pipeline, dns_server: CymruDnsServer, logs, trouble
):
    dns_server.route("81.6.0.0/16", 65570)
    broken = "1.0.6.81.origin.asn.cymru.com"
    if trouble == "garbage TXT":
        dns_server.txt(broken, "this is not an answer")
    elif trouble == "truncated TXT":
        dns_server.txt(broken, "65570 | 81.6.0")
    else:
        dns_server.misbehave(broken, trouble)
    attacks(logs, D, "81.6.0.1", "45.10.0.1")

    [result] = cymru.run(D, ops=FAST)

    assert result.success
    row = addresses(cymru).loc["81.6.0.1"]
    assert (row["asn_source"], row["cymru_status"]) == ("none", "pending")
    assert pd.isna(row["current_asn"]) and row["session_count"] == 1
    assert row["enrichment"]["cymru"]["error"]
    asked = dns_server.origin_names().count(broken)
    assert asked == (1 if trouble.endswith("TXT") else 2)  # a bad answer is not asked again
    metadata = ip_metadata(result)
    assert metadata["cymru_failed"] == 1 and metadata["cymru_pending_addresses"] == 1
    assert cymru.table("cymru_prefixes").empty and cymru.table("cymru_unrouted").empty
    assert_exact(cymru)

    dns_server.misbehave(broken, None)
    dns_server.texts.clear()
    cymru.run(D)

    row = addresses(cymru).loc["81.6.0.1"]
    assert (row["asn_source"], row["current_asn"], row["cymru_status"]) == ("cymru", 65570, "found")
    assert "error" not in row["enrichment"]["cymru"]
    assert_exact(cymru)


def test_an_answer_truncated_over_udp_is_asked_again_over_tcp(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("81.10.0.0/16", 65571)
    dns_server.behaviour = TRUNCATE
    attacks(logs, D, "81.10.0.1")

    cymru.run(D)

    assert dns_server.names("tcp") == ["1.0.10.81.origin.asn.cymru.com", "as65571.asn.cymru.com"]
    assert addresses(cymru).loc["81.10.0.1", "current_asn"] == 65571


def test_a_rerun_asks_nothing_and_expired_answers_are_asked_again(
    cymru: Pipeline, dns_server: CymruDnsServer, logs, monkeypatch
):
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_TTL_DAYS", "7")
    dns_server.route("81.7.0.0/16", 65580)
    dns_server.as_name(65580, "EXAMPLE-7 - Seven")
    attacks(logs, D, "81.7.0.1", "81.7.0.2", "94.2.2.2")

    [first] = cymru.run(D)

    assert len(dns_server.origin_names()) == 2 and len(dns_server.asn_names()) == 1
    assert ip_metadata(first)["cymru_queries_sent"] == 3
    for table in ("cymru_prefixes", "cymru_unrouted", "cymru_asn_names"):
        rows = cymru.table(table)
        ttl = pd.to_datetime(rows["expires_at"], utc=True) - pd.to_datetime(
            rows["fetched_at"], utc=True
        )
        assert (ttl == pd.Timedelta(days=7)).all(), table
    before = cymru.snapshot()

    dns_server.forget()
    [again] = cymru.run(D)

    assert dns_server.names() == []
    metadata = ip_metadata(again)
    assert metadata["cymru_queries_sent"] == 0 and metadata["cymru_cache_hits"] == 4
    assert cymru.snapshot() == before

    for table in ("cymru_prefixes", "cymru_unrouted", "cymru_asn_names"):
        cymru.execute(f"UPDATE {table} SET expires_at = fetched_at")
    [expired] = cymru.run(D)

    assert len(dns_server.origin_names()) == 2 and len(dns_server.asn_names()) == 1
    assert ip_metadata(expired)["cymru_queries_sent"] == 3
    assert cymru.snapshot()["ip_inventory"] != before["ip_inventory"]  # new fetch times

    # Expired again and the service down: the old answer stays, marked stale and pending.
    cymru.execute("UPDATE cymru_prefixes SET expires_at = fetched_at")
    dns_server.behaviour = SILENT
    cymru.run(D, ops=FAST)

    row = addresses(cymru).loc["81.7.0.1"]
    assert (row["current_asn"], row["cymru_status"]) == (65580, "pending")
    assert row["enrichment"]["cymru"]["stale"] is True
    assert_exact(cymru)


def test_the_rate_limit_holds_counted_per_second_at_the_server(
    db_url, dns_server: CymruDnsServer, logs, mmdb_files, monkeypatch
):
    configure(monkeypatch, db_url, logs, mmdb_files)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU", "dns")
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_NAMESERVERS", dns_server.nameserver)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_QPS", "20")
    dns_server.route("82.0.0.0/8", 65590)
    attacks(logs, D, *(f"82.{i}.{i}.1" for i in range(30)))  # 30 blocks: 30 queries
    # An instance that enforces pools: the step's share is the rate divided by the pool's limit.
    with dg.instance_for_test() as instance:
        instance.event_log_storage.set_concurrency_slots(CYMRU_POOL, 2)
        started = time.monotonic()
        [result] = Pipeline(db_url, logs.root, instance).run(D)
        elapsed = time.monotonic() - started

    metadata = ip_metadata(result)
    assert metadata["cymru_qps_of_step"] == 10.0
    assert metadata["cymru_queries_sent"] == 31
    per_second = dns_server.per_second()
    assert sum(per_second.values()) == 31
    # Evenly spaced sends: at most 10 in any whole second at the server (one more allowed for
    # a packet that the kernel delivered late across a second's boundary).
    assert max(per_second.values()) <= 11, per_second
    received = sorted(r.at for r in dns_server.received)
    assert (len(received) - 1) / (received[-1] - received[0]) <= 10.2
    assert elapsed >= 3.0


def test_concurrent_runs_together_stay_within_the_rate(
    db_url, dns_server: CymruDnsServer, logs, mmdb_files, monkeypatch, tmp_path
):
    configure(monkeypatch, db_url, logs, mmdb_files)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU", "dns")
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_NAMESERVERS", dns_server.nameserver)
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_QPS", "20")
    dns_server.route("82.0.0.0/8", 65590)
    attacks(logs, D, *(f"82.{i}.{i}.1" for i in range(60)))  # 60 blocks each: 6 s at 10/s
    attacks(logs, D2, *(f"82.{i}.{i}.1" for i in range(100, 160)))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots(CYMRU_POOL, 2)

    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "asn_pipeline_tests.run_partition", str(day), str(home)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for day in (D, D2)
    ]
    for process in runs:
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors[-3000:]

    def second_of(octet_range: range) -> set[int]:
        return {
            int(r.at)
            for r in dns_server.received
            if r.name.endswith(".origin.asn.cymru.com") and int(r.name.split(".")[1]) in octet_range
        }

    assert second_of(range(60)) & second_of(range(100, 160)), "the runs did not overlap"
    per_second = dns_server.per_second()
    assert max(per_second.values()) <= 22, per_second  # 2 steps x 10/s (+1 each, see above)


def test_bogons_and_covered_addresses_are_never_asked_about(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("0.0.0.0/0", 65599)  # would answer anything asked
    dns_server.route("::/0", 65599)
    attacks(logs, D, *BOGONS, "45.10.0.1", "2a01:1000::5", "81.8.0.1")

    cymru.run(D)

    assert dns_server.origin_names() == ["1.0.8.81.origin.asn.cymru.com"]
    ips = addresses(cymru)
    for bogon in BOGONS:
        assert ips.loc[bogon, "asn_source"] == "bogon" and pd.isna(ips.loc[bogon, "cymru_status"])
        assert "cymru" not in ips.loc[bogon, "enrichment"]
    assert ips.loc["81.8.0.1", "current_asn"] == 65599


def test_with_cymru_off_nothing_is_sent(
    pipeline: Pipeline, dns_server: CymruDnsServer, logs, monkeypatch
):
    monkeypatch.setenv("ASN_PIPELINE_CYMRU_NAMESERVERS", dns_server.nameserver)
    dns_server.route("0.0.0.0/0", 65599)
    attacks(logs, D, "81.8.0.1", "45.10.0.1")

    [result] = pipeline.run(D)

    assert dns_server.names() == []
    assert ip_metadata(result)["cymru"] == "off"
    row = addresses(pipeline).loc["81.8.0.1"]
    assert row["asn_source"] == "none" and pd.isna(row["cymru_status"])
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert "inventory.lookup_cymru" in steps


def test_the_cache_and_the_inventory_commit_together(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    dns_server.route("81.11.0.0/16", 65572)
    dns_server.as_name(65572, "ELEVEN")
    attacks(logs, D, "81.11.0.1", "94.3.3.3")
    cymru.run(D, assets=["cowrie_sessions"])
    inject_failure(cymru, "ip_asn_history")  # written after the cache, in the same transaction

    [result] = cymru.run(D, raise_on_error=False)

    assert not result.success and len(dns_server.origin_names()) == 2
    for table in ("cymru_prefixes", "cymru_unrouted", "cymru_asn_names", "ip_inventory"):
        assert cymru.table(table).empty, table
    remove_failure(cymru, "ip_asn_history")
    cymru.run(D)
    assert len(cymru.table("cymru_prefixes")) == 1 and len(cymru.table("cymru_unrouted")) == 1
    assert_exact(cymru)


def test_an_inventory_at_migration_002_upgrades_to_the_cymru_cache(
    db_url, cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    inventory = Inventory(db_url)
    try:
        with inventory.write() as conn:
            schema_version(conn)
            for migration in migrations(inventory.sql_folder)[:2]:
                apply_migration(conn, migration, note="test")
    finally:
        inventory.dispose()
    cymru.execute(
        "INSERT INTO asn_inventory (asn_number, organization_name, name_source, unique_ip_count) "
        "VALUES (64496, 'Example Hosting A', 'maxmind', 1)",
        "INSERT INTO ip_inventory (ip_address, ip_version, ip_class, current_asn, asn_source, "
        "enriched_at, enrichment) VALUES ('45.10.9.9', 4, 'global', 64496, 'maxmind', "
        "'2026-10-01T00:00:00.000000Z', '{}')",
    )

    inventory = Inventory(db_url)
    try:
        latest = len(migrations(inventory.sql_folder))
        assert ensure_schema(inventory) == list(range(3, latest + 1))
    finally:
        inventory.dispose()

    assert cymru.table("schema_migrations")["version"].tolist() == list(range(1, latest + 1))
    assert pd.isna(addresses(cymru).loc["45.10.9.9", "cymru_status"])
    dns_server.route("81.12.0.0/16", 65573)
    attacks(logs, D, "81.12.0.1", "45.10.9.9")
    cymru.run(D)
    assert addresses(cymru).loc["81.12.0.1", "cymru_status"] == "found"
    assert_exact(cymru)


def five_thousand_uncovered(server: CymruDnsServer) -> list[str]:
    """5,000 addresses MaxMind's test database does not cover: 50 in each of 96 /24 blocks (5
    of them routed nowhere) and 4 /48 blocks, inside 41 routed prefixes of /16 to /29."""
    rng = random.Random(5000)
    firsts = [5, 31, 37, 62, 77, 78, 79, 80, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 95]
    blocks = []
    for i in range(40):
        length = rng.choice([16, 18, 20, 22, 24])
        network = ipaddress.ip_network(f"{firsts[i % 20]}.{i * 6}.0.0/{length}")
        origins = (65600 + i % 25, 65700) if i % 13 == 0 else (65600 + i % 25,)  # some MOAS
        server.route(str(network), *origins)
        server.as_name(65600 + i % 25, f"BULK-{i % 25} - Bulk network {i % 25}")
        blocks.extend(list(network.subnets(new_prefix=24))[:4] if length < 24 else [network])
    blocks = blocks[:91] + [ipaddress.ip_network(f"94.{i}.9.0/24") for i in range(5)]  # unrouted
    ips = []
    for block in blocks:
        hosts = list(block.hosts())
        ips.extend(str(h) for h in rng.sample(hosts, 50))
    server.route("2a0c:9a40::/29", 65650)
    for i in range(4):
        ips.extend(str(ipaddress.ip_address(f"2a0c:9a4{i}:{i}::{n:x}")) for n in range(1, 51))
    assert len(ips) == len(set(ips)) == 5000
    return ips


def test_five_thousand_uncovered_addresses_resolve_through_the_prefix_cache(
    cymru: Pipeline, dns_server: CymruDnsServer, logs
):
    ips = five_thousand_uncovered(dns_server)
    attacks(logs, D, *ips)

    started = time.monotonic()
    [first] = cymru.run(D)
    seconds = time.monotonic() - started
    origin, names = len(dns_server.origin_names()), len(dns_server.asn_names())
    dns_server.forget()
    [again] = cymru.run(D)

    stored = addresses(cymru).loc[ips]
    assert (stored["asn_source"] == "cymru").sum() == 4750
    assert (stored["cymru_status"] == "unrouted").sum() == 250
    assert origin < len(ips)
    assert dns_server.names() == [] and ip_metadata(again)["cymru_queries_sent"] == 0
    metadata = ip_metadata(first)
    print(
        f"\n[{cymru.backend}] {len(ips)} addresses missing from MaxMind: {origin} origin queries, "
        f"{names} AS-name queries, {metadata['cymru_cache_hits']} cache hits, Cymru step "
        f"{metadata['cymru_seconds']:.2f} s, whole run {seconds:.1f} s; "
        f"re-run: {ip_metadata(again)['cymru_queries_sent']} queries"
    )
    assert_exact(cymru)
