"""What one step of a run hands to the next, kept in the inventory database.

The steps of one run may execute on different hosts (Celery workers, Kubernetes pods), so a value
passed between them cannot live on the disk of the host that made it. The project's IO manager
keeps each op output here instead, pickled and compressed, keyed by the run and step that wrote
it. These rows are working state, not inventory: they are written outside the inventory write
lock (each belongs to one run's step alone), and rows older than ``RETENTION`` are pruned on
every write.

A day read by ``cowrie_sessions`` in a run that also materialises ``ip_inventory`` is kept here
too (``stage_day``): the inventory step writes it, with the day's lookups, in one transaction.
Such a row is kept until a write of its day consumes or supersedes it, however old: until then
it is the only record that the day's files were read and not yet written. Every write of the day
deletes all of them.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import socket
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from asn_pipeline.store.database import Inventory, run

# Long enough to re-execute a failed run from its failure (which reads its parent run's rows)
# after a weekend; short enough that a year of daily runs keeps a week of rows.
RETENTION = dt.timedelta(days=7)
# zlib's fastest level: a day's lookups of 100,000 addresses pickle to about 25 MB, which level 1
# shrinks several times over in well under a second (PostgreSQL's own TOAST compression of the
# same bytes took longer than the write, so the column is stored uncompressed there).
COMPRESSION_LEVEL = 1


# The keys of a staged day: (reading run, STAGED_BY, STAGED_DAY or STAGED_ADDRESSES, the day);
# sql/queries/step_outputs.sql names them too.
STAGED_BY = "cowrie_sessions"
STAGED_DAY = "staged_day"
STAGED_ADDRESSES = "staged_addresses"


class StepOutputMissing(LookupError):
    """No row holds the output a step asks for: its run never wrote it, or it was pruned."""


@dataclass(frozen=True)
class StepOutputKey:
    run_id: str
    step_key: str
    output_name: str
    mapping_key: str = ""

    def __str__(self) -> str:
        mapping = f"[{self.mapping_key}]" if self.mapping_key else ""
        return f"output {self.output_name}{mapping} of step {self.step_key} in run {self.run_id}"

    def params(self) -> dict[str, str]:
        return {
            "run_id": self.run_id,
            "step_key": self.step_key,
            "output_name": self.output_name,
            "mapping_key": self.mapping_key,
        }


def keep(inventory: Inventory, key: StepOutputKey, value: object, now: dt.datetime) -> int:
    """Store a value under its key (replacing what a retried step wrote); returns its size."""
    return keep_all(inventory, {key: value}, now)


def keep_all(inventory: Inventory, values: dict[StepOutputKey, object], now: dt.datetime) -> int:
    """Store values under their keys in one transaction (``keep``); returns their size."""
    payloads = {
        key: zlib.compress(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), COMPRESSION_LEVEL)
        for key, value in values.items()
    }
    with inventory.engine.begin() as conn:
        run(conn, "step_outputs", "prune", before=now - RETENTION)
        for key, payload in payloads.items():
            run(conn, "step_outputs", "forget", **key.params())
            run(
                conn,
                "step_outputs",
                "keep",
                **key.params(),
                payload=payload,
                byte_count=len(payload),
                written_at=now,
                written_by=f"{socket.gethostname()} pid {os.getpid()}",
            )
    return sum(len(payload) for payload in payloads.values())


def fetch(inventory: Inventory, key: StepOutputKey) -> object:
    """The value stored under a key; ``StepOutputMissing`` says why there is none."""
    with inventory.read() as conn:
        row = run(conn, "step_outputs", "fetch", **key.params()).first()
    if row is None:
        raise StepOutputMissing(
            f"The inventory holds no {key}: that step did not finish in that run, or its "
            f"output was pruned after {RETENTION.days} days. Materialise the partition again "
            "instead of re-executing the old run."
        )
    return pickle.loads(zlib.decompress(row.payload))


def stage_day(
    inventory: Inventory, day: dt.date, run_id: str, write: object, addresses: list[str]
) -> int:
    """Keep a day read by ``run_id`` (a ``store.sessions.DayWrite``) and its distinct addresses
    for the inventory step to write, together; returns their size."""
    values = {staged(run_id, day, STAGED_ADDRESSES): addresses, staged(run_id, day): write}
    return keep_all(inventory, values, dt.datetime.now(dt.UTC))


def staged_day_run(inventory: Inventory, day: dt.date, runs: Sequence[str | None]) -> str | None:
    """The run whose staged ``day`` a write should take: the first of ``runs`` (the step's own
    run, then the runs it re-executes) that staged it, else the newest that did (a run that
    failed after reading the day). ``None`` when no staged day waits."""
    with inventory.read() as conn:
        waiting = (
            run(
                conn,
                "step_outputs",
                "staged_day_runs",
                step_key=STAGED_BY,
                output_name=STAGED_DAY,
                day=day.isoformat(),
            )
            .scalars()
            .all()
        )
    return next((r for r in runs if r in waiting), waiting[0] if waiting else None)


def staged(run_id: str, day: dt.date, output_name: str = STAGED_DAY) -> StepOutputKey:
    """The key of a day staged by ``run_id`` (or of its addresses)."""
    return StepOutputKey(run_id, STAGED_BY, output_name, day.isoformat())
