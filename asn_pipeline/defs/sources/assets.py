"""The pipeline's inputs, upstream of it in the asset graph: the MaxMind databases and the
landing directory, observed (never materialised) with a data version each.

The version of a MaxMind database is its ``build_epoch``; that of a day of the landing directory
is the digest of the day's files the landing sensor keys its runs by. Observing an input that is
missing or unusable does not fail: the observation says so, where the asset's page shows it.
"""

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg

from asn_pipeline.cowrie import LandingDirectoryError, files_version, landing_files
from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.resources import LandingDirectory, MaxMindDatabases
from asn_pipeline.settings import ConfigurationError
from asn_pipeline.steps import partition_days
from asn_pipeline.tables import CODE_VERSION, OWNERS, column_schema

SOURCES_GROUP = "sources"
LANDING = "cowrie_landing"
MAXMIND = {"asn": "maxmind_asn_db", "city": "maxmind_city_db"}
# The tag in which Dagster keeps an observation's data version (what ObserveResult's
# data_version becomes); an observation per partition is logged as an event, so it is set here.
DATA_VERSION_TAG = "dagster/data_version"


def _spec(
    key: str, description: str, kinds: set[str], partitions_def: dg.PartitionsDefinition | None
) -> dg.AssetSpec:
    return dg.AssetSpec(
        key,
        description=description,
        group_name=SOURCES_GROUP,
        owners=OWNERS,
        kinds=kinds,
        code_version=CODE_VERSION,
        metadata={"dagster/column_schema": column_schema(key)},
        partitions_def=partitions_def,
        tags={"domain": "sources"},
    )


def maxmind_observation(maxmind: MaxMindDatabases, database: str) -> dg.AssetObservation:
    """What the ``asn`` or ``city`` database file is now; its data version is its build_epoch."""
    key = MAXMIND[database]
    path = maxmind.asn_db_path if database == "asn" else maxmind.city_db_path
    try:
        build = maxmind.build(database)
    except ConfigurationError as error:
        status = "unusable" if path and Path(path).exists() else "missing"
        return dg.AssetObservation(
            key,
            description=str(error),
            metadata={"status": status, "path": path, "problem": str(error)},
        )
    if build is None:
        return dg.AssetObservation(
            key,
            description="ASN_PIPELINE_MAXMIND_CITY_DB is not set: country columns stay empty.",
            metadata={"status": "not configured"},
        )
    built = dt.datetime.fromtimestamp(build.build_epoch, dt.UTC)
    return dg.AssetObservation(
        key,
        tags={DATA_VERSION_TAG: str(build.build_epoch)},
        metadata={
            "status": "ok",
            "path": build.path,
            "database_type": build.database_type,
            "build_epoch": build.build_epoch,
            "build": built.isoformat(),
            "size_bytes": os.path.getsize(build.path),
        },
    )


def landing_observations(
    landing: LandingDirectory, days: Sequence[dt.date] | None
) -> list[dg.AssetObservation]:
    """An observation of each of ``days`` (``None``: every day that has files and a partition)
    with the digest of its files as data version. A landing directory that cannot be listed gives
    observations saying so (one without a partition when no days are asked)."""
    try:
        listing = landing_files(landing.check())
    except (ConfigurationError, LandingDirectoryError) as error:
        metadata = {"status": "missing", "path": landing.path, "problem": str(error)}
        if days is None:
            return [dg.AssetObservation(LANDING, description=str(error), metadata=metadata)]
        return [
            dg.AssetObservation(
                LANDING, partition=d.isoformat(), description=str(error), metadata=metadata
            )
            for d in days
        ]
    if days is None:
        days = [d for d in listing.days if daily_partitions.has_partition_key(d.isoformat())]
    observations = []
    for day in days:
        found = listing.days.get(day)
        files = []
        for log in found.files if found else ():
            try:
                status = os.stat(log.path)
            except OSError:  # gone since the listing
                continue
            files.append((log.name, status.st_size, status.st_mtime_ns))
        observations.append(
            dg.AssetObservation(
                LANDING,
                partition=day.isoformat(),
                tags={DATA_VERSION_TAG: files_version(files)},
                metadata={
                    "status": "ok" if files else "no files",
                    "files": len(files),
                    "bytes": sum(size for _, size, _ in files),
                    "files_not_read": len(found.skipped) if found else 0,
                },
            )
        )
    return observations


def source_observations(
    maxmind: MaxMindDatabases, landing: LandingDirectory
) -> list[dg.AssetObservation]:
    """An observation of every source, every day of the landing directory included."""
    return [
        maxmind_observation(maxmind, "asn"),
        maxmind_observation(maxmind, "city"),
        *landing_observations(landing, None),
    ]


# The observations are yielded as events (the landing directory's, one per day), not as the op's
# output: can_subset lets the op end without one.
@dg.multi_observable_source_asset(
    specs=[
        _spec(
            MAXMIND["asn"],
            "The MaxMind ASN database (ASN_PIPELINE_MAXMIND_ASN_DB); data version: build_epoch.",
            {"maxmind"},
            None,
        )
    ],
    can_subset=True,
)
def maxmind_asn_db(maxmind: MaxMindDatabases) -> Iterator[dg.AssetObservation]:
    yield maxmind_observation(maxmind, "asn")


@dg.multi_observable_source_asset(
    specs=[
        _spec(
            MAXMIND["city"],
            "The optional MaxMind City/Country database (ASN_PIPELINE_MAXMIND_CITY_DB); data "
            "version: build_epoch.",
            {"maxmind"},
            None,
        )
    ],
    can_subset=True,
)
def maxmind_city_db(maxmind: MaxMindDatabases) -> Iterator[dg.AssetObservation]:
    yield maxmind_observation(maxmind, "city")


@dg.multi_observable_source_asset(
    specs=[
        _spec(
            LANDING,
            "Cowrie's daily files in ASN_PIPELINE_LANDING_DIR; data version of a day: a digest "
            "of its files' names, sizes and modification times.",
            {"file"},
            daily_partitions,
        )
    ],
    partitions_def=daily_partitions,
    can_subset=True,
)
def cowrie_landing(
    context: dg.OpExecutionContext, landing: LandingDirectory
) -> Iterator[dg.AssetObservation]:
    # Observed from the UI without a partition: every day of the directory.
    days = partition_days(context) if context.has_partitions else None
    yield from landing_observations(landing, days)
