"""Dagster resources over the plain-Python store and lookups, configured from the environment."""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

import dagster as dg
import dns.resolver
from pydantic import PrivateAttr

from asn_pipeline.lookup.cymru import (
    DEFAULT_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    CymruResolver,
    server_addresses,
    system_servers,
)
from asn_pipeline.lookup.maxmind import (
    ASN_DB_VARIABLE,
    CITY_DB_VARIABLE,
    DatabaseBuild,
    MaxMindLookup,
    open_reader,
)
from asn_pipeline.settings import (
    DEFAULT_CYMRU_QPS,
    DEFAULT_CYMRU_TTL_DAYS,
    ConfigurationError,
    Settings,
    normalise_db_url,
    parse_nameservers,
    require_directory,
    require_file,
)
from asn_pipeline.store import Inventory, step_outputs
from asn_pipeline.store.schema import ensure_schema

# Dagster concurrency pool of every step that opens inventory connections; its limit is set in
# the instance's dagster.yaml (concurrency.pools.default_limit).
INVENTORY_POOL = "asn_inventory_db"
# Dagster concurrency pool of the step that sends Team Cymru DNS queries. Each such step sends at
# most ASN_PIPELINE_CYMRU_QPS divided by the pool's limit, so that all of them together stay
# within the rate; set the limit with `dagster instance concurrency set cymru_dns 1`.
CYMRU_POOL = "cymru_dns"
LANDING_DIR_VARIABLE = "ASN_PIPELINE_LANDING_DIR"


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


class StepOutputs(dg.ConfigurableIOManager):
    """The IO manager: what one step hands to the next (the day's lookups, the upsert's
    summary) goes into the inventory database (``step_outputs``), never to the disk of the host
    that ran the step, so the steps of one run can execute on different hosts.

    The four assets are their tables: their outputs carry no value (``None``) and store nothing.
    """

    inventory_db: InventoryDatabase

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None and context.has_asset_key:
            return
        key = _step_output_key(context)
        size = step_outputs.keep(self.inventory_db.inventory, key, obj, dt.datetime.now(dt.UTC))
        context.log.debug(f"kept {key} in the inventory ({size} bytes)")

    def load_input(self, context: dg.InputContext) -> object:
        upstream = context.upstream_output
        if upstream is None:
            raise dg.Failure(f"input {context.name} has no upstream output to load")
        return step_outputs.fetch(self.inventory_db.inventory, _step_output_key(upstream))


def _step_output_key(context: dg.OutputContext) -> step_outputs.StepOutputKey:
    """The run and step that wrote the output: on a re-execution from failure, the parent run's
    for the steps it does not run again."""
    return step_outputs.StepOutputKey(
        run_id=context.run_id,
        step_key=context.step_key,
        output_name=context.name,
        mapping_key=context.mapping_key or "",
    )


class MaxMindDatabases(dg.ConfigurableResource):
    """The MaxMind ASN database and, optionally, a City/Country database. The files are opened
    where a step needs them, not when the definitions load: a server where geoipupdate has not
    run yet still shows the pipeline."""

    asn_db_path: str
    city_db_path: str | None = None

    def open(self) -> MaxMindLookup:
        """Open both databases; a missing, unreadable or wrong file raises a one-line
        ``ConfigurationError`` naming its variable."""
        city = Path(self.city_db_path) if self.city_db_path else None
        require_file(ASN_DB_VARIABLE, Path(self.asn_db_path))
        if city is not None:
            require_file(CITY_DB_VARIABLE, city)
        return MaxMindLookup(Path(self.asn_db_path), city)

    def check(self) -> None:
        """Raise what ``open`` raises, or nothing when both databases can be used."""
        self.open().close()

    def build(self, database: str) -> DatabaseBuild | None:
        """The build of the ``asn`` or ``city`` database, ``None`` for a City database that is
        not configured; ``ConfigurationError`` when the file cannot be used."""
        variable, kinds, path = {
            "asn": (ASN_DB_VARIABLE, ("ASN",), self.asn_db_path),
            "city": (CITY_DB_VARIABLE, ("City", "Country"), self.city_db_path),
        }[database]
        if path is None:
            return None
        reader = open_reader(require_file(variable, Path(path)), variable, kinds)
        try:
            metadata = reader.metadata()
        finally:
            reader.close()
        return DatabaseBuild(path, metadata.database_type, int(metadata.build_epoch))


class CymruDns(dg.ConfigurableResource):
    """Team Cymru's IP-to-ASN service over DNS (``mode`` ``dns``), or nothing (``off``)."""

    mode: str = "off"
    nameservers: list[str] = []  # host:port ([ipv6]:port); none: the system resolver
    ttl_days: int = DEFAULT_CYMRU_TTL_DAYS
    qps: float = DEFAULT_CYMRU_QPS

    @property
    def enabled(self) -> bool:
        return self.mode == "dns"

    def resolver(
        self,
        qps: float,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> CymruResolver:
        """A resolver sending at most ``qps`` queries a second to the configured servers."""
        variable, value = "ASN_PIPELINE_CYMRU_NAMESERVERS", ",".join(self.nameservers)
        configured = parse_nameservers(value or None)
        try:
            servers = (
                server_addresses((s.host, s.port) for s in configured)
                if configured
                else system_servers()
            )
        except OSError as error:
            raise ConfigurationError(variable, value, f"cannot resolve ({error})") from None
        except dns.resolver.NoResolverConfiguration:
            raise ConfigurationError(
                variable, value, "unset, and there is no system resolver: set it"
            ) from None
        return CymruResolver(servers, qps, timeout_s=timeout_s, attempts=attempts)


class LandingDirectory(dg.ConfigurableResource):
    """Where Cowrie's daily files land (one level of sensor sub-folders allowed)."""

    path: str

    @property
    def root(self) -> Path:
        return Path(self.path)

    def check(self) -> Path:
        """The root if it is a directory that can be listed; otherwise the one-line
        ``ConfigurationError`` naming ``ASN_PIPELINE_LANDING_DIR``."""
        return require_directory(LANDING_DIR_VARIABLE, self.root)


def resources_from(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources for validated settings. A database URL from the environment stays an
    ``EnvVar``, so the UI shows the variable's name rather than a password."""
    db_url = (
        dg.EnvVar("ASN_PIPELINE_DB_URL")
        if os.environ.get("ASN_PIPELINE_DB_URL")
        else settings.db_url
    )
    inventory_db = InventoryDatabase(url=db_url)
    return {
        "inventory_db": inventory_db,
        "io_manager": StepOutputs(inventory_db=inventory_db),
        "maxmind": MaxMindDatabases(
            asn_db_path=str(settings.maxmind_asn_db),
            city_db_path=str(settings.maxmind_city_db) if settings.maxmind_city_db else None,
        ),
        "landing": LandingDirectory(path=str(settings.landing_dir)),
        "cymru": CymruDns(
            mode=settings.cymru,
            nameservers=[str(server) for server in settings.cymru_nameservers],
            ttl_days=settings.cymru_ttl_days,
            qps=settings.cymru_qps,
        ),
    }
