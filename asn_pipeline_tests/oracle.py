"""An independent recomputation of what the inventory must hold, in pandas, from raw facts.

It shares no SQL with the pipeline: sessions come straight from the Cowrie files, counters from
grouping those sessions. Tests compare the database against it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
from pathlib import Path

import pandas as pd


def sessions_from_files(landing: Path) -> pd.DataFrame:
    """One row per session over every daily file: the events of one (sensor, session id) in
    files of consecutive days; the earliest day owns it."""
    rows = []
    for path in sorted(landing.glob("*/cowrie.json.*")):
        day = path.name.removeprefix("cowrie.json.").removesuffix(".gz")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="strict") as handle:
            for line in handle:
                try:
                    event = json.loads(line)
                    ip = ipaddress.ip_address(event["src_ip"])
                    stamp = dt.datetime.fromisoformat(event["timestamp"])
                except (ValueError, KeyError, TypeError):
                    continue
                if ip.version == 6 and ip.ipv4_mapped:
                    ip = ip.ipv4_mapped
                rows.append((event["sensor"], event["session"], str(ip), day, stamp))
    events = pd.DataFrame(rows, columns=["sensor", "session_id", "src_ip", "day", "at"])
    days = events[["sensor", "session_id", "day"]].drop_duplicates()
    days = days.sort_values(["sensor", "session_id", "day"], ignore_index=True)
    dates = pd.to_datetime(days["day"])
    previous = dates.groupby([days["sensor"], days["session_id"]]).shift()
    days["island"] = ((dates - previous) != pd.Timedelta(days=1)).cumsum()
    events = events.merge(days, on=["sensor", "session_id", "day"]).sort_values("at")
    grouped = events.groupby("island")
    return pd.DataFrame(
        {
            "sensor": grouped["sensor"].first(),
            "session_id": grouped["session_id"].first(),
            "ingest_date": grouped["day"].min(),
            "first_event_at": grouped["at"].min(),
            "last_event_at": grouped["at"].max(),
            "event_count": grouped.size(),
            "src_ip": grouped["src_ip"].first(),
        }
    ).reset_index(drop=True)


def ip_counters(sessions: pd.DataFrame) -> pd.DataFrame:
    grouped = sessions.groupby("src_ip")
    return pd.DataFrame(
        {
            "session_count": grouped.size(),
            "first_seen": grouped["first_event_at"].min(),
            "last_seen": grouped["last_event_at"].max(),
        }
    )


def asn_counters(ip_inventory: pd.DataFrame) -> pd.DataFrame:
    mapped = ip_inventory.dropna(subset=["current_asn"]).astype({"current_asn": "int64"})
    grouped = mapped.groupby("current_asn")
    return pd.DataFrame(
        {
            "unique_ip_count": grouped.size(),
            "total_session_count": grouped["session_count"].sum(),
        }
    )


def daily_stats(sessions: pd.DataFrame) -> pd.DataFrame:
    """(stat_date, asn_number) -> sessions, distinct addresses, addresses on their first day."""
    attributed = sessions.dropna(subset=["asn_number"]).astype({"asn_number": "int64"})
    first_day = sessions.groupby("src_ip")["ingest_date"].min()
    attributed = attributed.assign(
        is_new=attributed["ingest_date"] == attributed["src_ip"].map(first_day)
    )
    keys = ["ingest_date", "asn_number"]
    grouped = attributed.groupby(keys)
    sessions_per_key = grouped.size()
    new = attributed[attributed["is_new"]].groupby(keys)["src_ip"].nunique()
    return pd.DataFrame(
        {
            "session_count": sessions_per_key,
            "unique_ip_count": grouped["src_ip"].nunique(),
            "new_ip_count": new.reindex(sessions_per_key.index, fill_value=0),
        }
    )
