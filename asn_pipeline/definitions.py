import functools
import os
from pathlib import Path

import dagster as dg

import asn_pipeline.defs
from asn_pipeline.execution import executor_for
from asn_pipeline.resources import resources_from
from asn_pipeline.settings import Settings, check_thresholds


@dg.definitions
def defs() -> dg.Definitions:
    """The assets, checks and automation under ``defs/`` with resources from the environment.

    Every variable's form is validated here, so a malformed value (a URL, a date, a mode) stops
    the code location from loading before any run can touch data. The data files are not
    opened here: a fresh clone, or a server where geoipupdate has not run yet, still shows the
    graph, and a run that needs a missing file fails at its first step with the same message.

    Built once per configuration in a process: Dagster calls this function each time it
    reconstructs the job (six times in one ``dagster asset materialize``), and a build takes
    0.2 to 0.3 s.
    """
    return _build(_configuration())


def _configuration() -> tuple[tuple[str, str], ...]:
    """What the definitions are built from: the project's variables and Dagster's."""
    return tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(("ASN_PIPELINE_", "DAGSTER_")))
    )


@functools.lru_cache(maxsize=8)
def _build(_configuration: tuple[tuple[str, str], ...]) -> dg.Definitions:
    settings = Settings.from_environ()
    check_thresholds()  # the asset checks' thresholds, read again when the checks run
    return dg.Definitions.merge(
        # From the package itself rather than from the project folder's pyproject.toml
        # (load_from_defs_folder), so that the code location also loads installed as a wheel.
        dg.ComponentTree.from_module(
            defs_module=asn_pipeline.defs, project_root=Path(__file__).parent.parent
        ).build_defs(),
        dg.Definitions(
            resources=resources_from(settings), executor=executor_for(settings.executor)
        ),
    )
