"""The predecessor system, re-implemented only to benchmark against it; the product never uses it.

It enriched one IP at a time through the SQLAlchemy ORM: a ``SELECT ... FOR UPDATE`` on the ASN
row, an insert or update of it, a ``SELECT`` of the IP row, an insert or update of that, a flush,
and a commit every ``batch`` IPs. Its known defects (``session_count += 1`` on every
re-enrichment, lookup time as first/last seen, ``ip_count`` never maintained, the JSON column
mutated in place so the ORM never saves the change, ``FOR UPDATE`` on a row that may not exist yet)
are kept on purpose: the point is to time the access pattern as it was, not to fix it.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import geoip2.database
import geoip2.errors
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class _Base(DeclarativeBase):
    """Own metadata, so creating and dropping these tables never touches the product's."""


class BaselineAsn(_Base):
    """One autonomous system, as the predecessor kept it."""

    __tablename__ = "baseline_asn"

    asn_number: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    organization_name: Mapped[str | None] = mapped_column(sa.Text)
    ip_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))


class BaselineIp(_Base):
    """One source address, as the predecessor kept it."""

    __tablename__ = "baseline_ip"

    ip_address: Mapped[str] = mapped_column(sa.String(45), primary_key=True)
    asn_number: Mapped[int | None] = mapped_column(sa.ForeignKey("baseline_asn.asn_number"))
    session_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    first_seen: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_seen: Mapped[dt.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    enrichment: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


def run_baseline(db_url: str, ips: list[str], asn_mmdb: str, batch: int = 100) -> dict:
    """Enrich ``ips`` one by one the predecessor's way and time it.

    Drops and creates ``baseline_asn`` and ``baseline_ip`` in the database at ``db_url``, runs the
    per-IP cascade (MaxMind lookup, ASN ``SELECT ... FOR UPDATE`` + insert/update, IP ``SELECT`` +
    insert/update, flush; commit every ``batch`` IPs and at the end), then drops the tables again.
    Only the loop is timed: table setup, opening the MaxMind reader and the final drop are not.
    Returns ``{"ips": ..., "seconds": ..., "ips_per_second": ...}``.
    """
    engine = sa.create_engine(db_url)
    try:
        _Base.metadata.drop_all(engine)
        _Base.metadata.create_all(engine)
        try:
            with geoip2.database.Reader(asn_mmdb) as reader, Session(engine) as session:
                started = time.perf_counter()
                for done, ip in enumerate(ips, start=1):
                    _enrich_one(session, reader, ip)
                    if done % batch == 0:
                        session.commit()
                session.commit()
                seconds = time.perf_counter() - started
        finally:
            _Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return {
        "ips": len(ips),
        "seconds": seconds,
        "ips_per_second": len(ips) / seconds if seconds > 0 else float("inf"),
    }


def _enrich_one(session: Session, reader: geoip2.database.Reader, ip: str) -> None:
    """The predecessor's per-IP cascade, defects included (see the module docstring)."""
    now = dt.datetime.now(dt.UTC)
    asn_number: int | None = None
    organization: str | None = None
    try:
        answer = reader.asn(ip)
        asn_number = answer.autonomous_system_number
        organization = answer.autonomous_system_organization
    except geoip2.errors.AddressNotFoundError:
        pass

    if asn_number is not None:
        asn = (
            session.query(BaselineAsn)
            .filter_by(asn_number=asn_number)
            .with_for_update()
            .one_or_none()
        )
        if asn is None:
            session.add(
                BaselineAsn(asn_number=asn_number, organization_name=organization, updated_at=now)
            )
        else:
            asn.organization_name = organization
            asn.updated_at = now

    row = session.query(BaselineIp).filter_by(ip_address=ip).one_or_none()
    if row is None:
        session.add(
            BaselineIp(
                ip_address=ip,
                asn_number=asn_number,
                session_count=1,
                first_seen=now,
                last_seen=now,
                enrichment={"asn": asn_number, "organization": organization, "lookups": 1},
            )
        )
    else:
        row.asn_number = asn_number
        row.session_count += 1
        row.last_seen = now
        # In-place mutation of a plain JSON column: the ORM does not see it, as before.
        row.enrichment["lookups"] = row.enrichment.get("lookups", 0) + 1
        row.enrichment["organization"] = organization
    session.flush()
