import dagster as dg

from asn_pipeline.settings import Settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=Settings.from_environ().start_date)
