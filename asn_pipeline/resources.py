"""Dagster resources over the plain-Python store and lookups, configured from the environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from asn_pipeline.lookup.maxmind import MaxMindLookup
from asn_pipeline.settings import Settings, normalise_db_url
from asn_pipeline.store import Inventory
from asn_pipeline.store.schema import ensure_schema

# Dagster concurrency pool of every step that opens inventory connections; its limit is set in
# the instance's dagster.yaml (concurrency.pools.default_limit).
INVENTORY_POOL = "asn_inventory_db"


class InventoryDatabase(dg.ConfigurableResource):
    """The inventory database (SQLite or PostgreSQL); its schema is applied before first use."""

    url: str

    _inventory: Inventory | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = (context.run_id or "none")[:8]
        name = f"asn_pipeline run {run} {socket.gethostname()} pid {os.getpid()}"
        self._inventory = Inventory(normalise_db_url(self.url), application_name=name)
        if context.log is not None:
            self._inventory.on_wait = context.log.warning
        ensure_schema(self._inventory)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._inventory is not None:
            self._inventory.dispose()

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            self.setup_for_execution(dg.build_init_resource_context())
        return self._inventory


class MaxMindDatabases(dg.ConfigurableResource):
    """The MaxMind ASN database and, optionally, a City/Country database."""

    asn_db_path: str
    city_db_path: str | None = None

    def open(self) -> MaxMindLookup:
        """Open both databases; a bad file raises a one-line error naming its variable."""
        city = Path(self.city_db_path) if self.city_db_path else None
        return MaxMindLookup(Path(self.asn_db_path), city)


class LandingDirectory(dg.ConfigurableResource):
    """Where Cowrie's daily files land (one level of sensor sub-folders allowed)."""

    path: str

    @property
    def root(self) -> Path:
        return Path(self.path)


def resources_from(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources for validated settings. A database URL from the environment stays an
    ``EnvVar``, so the UI shows the variable's name rather than a password."""
    db_url = (
        dg.EnvVar("ASN_PIPELINE_DB_URL")
        if os.environ.get("ASN_PIPELINE_DB_URL")
        else settings.db_url
    )
    return {
        "inventory_db": InventoryDatabase(url=db_url),
        "maxmind": MaxMindDatabases(
            asn_db_path=str(settings.maxmind_asn_db),
            city_db_path=str(settings.maxmind_city_db) if settings.maxmind_city_db else None,
        ),
        "landing": LandingDirectory(path=str(settings.landing_dir)),
    }
