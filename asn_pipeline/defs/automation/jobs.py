import dagster as dg

from asn_pipeline.defs.partitions import daily_partitions

DAILY_JOB = "daily_asn_inventory"

daily_asn_inventory = dg.define_asset_job(
    DAILY_JOB,
    selection=["cowrie_sessions", "ip_inventory", "asn_inventory", "asn_statistics"],
    partitions_def=daily_partitions,
    description="All four assets for one ingestion day, with their checks.",
)
