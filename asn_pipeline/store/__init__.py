"""SQL side of the pipeline: schema, set-based writes and derived values. No Dagster here."""

from asn_pipeline.store.database import Inventory

__all__ = ["Inventory"]
