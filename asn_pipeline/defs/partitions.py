import dagster as dg

from asn_pipeline.settings import Settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=Settings.from_environ().start_date)

# A backfill of the assets (from the asset graph, or `dagster asset materialize
# --partition-range`) is one run over the range: every step works on the range's days at once,
# and the results are those of one run per day. The job daily_asn_inventory still runs one
# partition per run (schedule, sensor, a backfill launched from the job's page).
backfill_policy = dg.BackfillPolicy.single_run()
