"""Range backfills: one run over a range of days leaves what one run per day leaves."""

from __future__ import annotations

import dagster as dg

from asn_pipeline_tests.conftest import Pipeline
from asn_pipeline_tests.test_invariants import DAYS, week  # noqa: F401 - the fixture

ASSETS = ("cowrie_sessions", "ip_inventory", "asn_inventory", "asn_statistics")


def materialisations(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    """The metadata of each partition's materialisation of ``asset`` in the run, without those
    of other days whose statistics the run recomputed."""
    return {
        event.partition: event.metadata
        for event in (
            e.event_specific_data.materialization for e in result.get_asset_materialization_events()
        )
        if event.asset_key == dg.AssetKey(asset) and "recomputed_by_partition" not in event.metadata
    }


def test_a_single_run_over_a_range_equals_one_run_per_day(
    week: Pipeline,  # noqa: F811
    tmp_path,
    monkeypatch,
    request,
):
    week.run(*DAYS)
    per_day = week.snapshot()

    ranged = week.other(request, tmp_path, "ranged")
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", ranged.db_url)
    result = ranged.run_range(DAYS[0], DAYS[-1])

    assert result.success
    assert ranged.snapshot() == per_day
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    for queue in ("stale_ips", "stale_asn_deltas", "stale_days"):
        assert ranged.table(queue).empty, queue


def test_a_range_over_days_already_done_changes_nothing(week: Pipeline):  # noqa: F811
    week.run(*DAYS[1:3])
    week.run_range(DAYS[0], DAYS[-1])
    once = week.snapshot()

    week.run_range(DAYS[1], DAYS[3])
    week.run(DAYS[2])

    assert week.snapshot() == once


def test_a_range_run_says_its_figures_cover_the_range(week: Pipeline):  # noqa: F811
    single = week.run(DAYS[0])[0]
    result = week.run_range(DAYS[1], DAYS[-1])

    one_day = materialisations(single, "cowrie_sessions")[DAYS[0].isoformat()]
    assert "events_read" in one_day and "partition_range" not in one_day
    for asset in ASSETS:
        events = materialisations(result, asset)
        assert sorted(events) == [d.isoformat() for d in DAYS[1:]], asset
        for metadata in events.values():
            assert metadata["partition_range"].value == f"{DAYS[1]}..{DAYS[-1]}"
            assert metadata["partitions_in_run"].value == len(DAYS) - 1
            # No partition of the range shows the range's figures as its own.
            assert "events_read" not in metadata and "sessions_attributed" not in metadata
    sessions = next(iter(materialisations(result, "cowrie_sessions").values()))
    table = sessions["per_day"].value
    for day in DAYS[1:]:
        assert day.isoformat() in table
    stored = week.table("sessions")
    expected = int(stored["ingest_date"].isin([d.isoformat() for d in DAYS[1:]]).sum())
    assert sessions["range_sessions_owned_by_day"].value == expected
