"""The daily schedule: each day, a run of daily_asn_inventory for the day that has just ended."""

from __future__ import annotations

import dagster as dg

from asn_pipeline.defs.automation.jobs import daily_asn_inventory
from asn_pipeline.defs.partitions import daily_partitions
from asn_pipeline.settings import ScheduleTime, schedule_time

DAILY_SCHEDULE = "daily_asn_inventory_schedule"


def daily_schedule(when: ScheduleTime) -> dg.ScheduleDefinition:
    """The schedule ticking at ``when``; each tick requests the last daily partition (UTC day)
    that has ended by the tick's scheduled time, once (the partition key is the run key)."""

    @dg.schedule(
        name=DAILY_SCHEDULE,
        job=daily_asn_inventory,
        cron_schedule=when.cron,
        execution_timezone=when.timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Every day at {when.hour:02d}:{when.minute:02d} {when.timezone}: the day (UTC) "
            "that has ended last."
        ),
    )
    def daily_asn_inventory_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        with dg.partition_loading_context(effective_dt=tick):
            day = daily_partitions.get_last_partition_key()
        if day is None:
            first = daily_partitions.start.date().isoformat()
            return dg.SkipReason(f"No day has ended by {tick.isoformat()}; the first is {first}.")
        return dg.RunRequest(partition_key=day, run_key=day)

    return daily_asn_inventory_schedule


@dg.definitions
def defs() -> dg.Definitions:
    """The schedule at the time the environment sets, read when the definitions load."""
    return dg.Definitions(schedules=[daily_schedule(schedule_time())])
