from pathlib import Path

import dagster as dg

from asn_pipeline.lookup.maxmind import MaxMindLookup
from asn_pipeline.resources import resources_from
from asn_pipeline.settings import Settings


@dg.definitions
def defs() -> dg.Definitions:
    """The assets, checks and automation under ``defs/`` with resources from the environment.

    Configuration is validated here, so a bad variable stops the code location from loading
    before any run can touch data.
    """
    settings = Settings.from_environ()
    MaxMindLookup(settings.maxmind_asn_db, settings.maxmind_city_db).close()
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        # One process per run, its steps one after another in it: a partition's steps form a
        # chain, and a process per step (the multiprocess executor) cost about 2 s each, most
        # of a run's time. Runs in parallel come from the run queue and the pools.
        dg.Definitions(resources=resources_from(settings), executor=dg.in_process_executor),
    )
