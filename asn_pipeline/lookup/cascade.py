"""The lookup cascade's second tier: Team Cymru for global addresses MaxMind did not cover.

Only rows with ``asn_source = 'none'`` (global, not covered by MaxMind) are asked about; bogons
and covered addresses never are. Each address is answered, in this order, by

1. a fresh cached prefix that contains it (the longest one),
2. a fresh cached NXDOMAIN for it,
3. a query. The addresses of one /24 (IPv4) or /48 (IPv6) block are asked one after the other,
   in address order, several blocks at a time; before each query the prefixes this block's
   answers returned are consulted, so a block inside one routed prefix costs one query (routes
   more specific than /24 or /48 are rarely announced). The result does not depend on timing.

Then every ASN of the day (from MaxMind or from Cymru) without a fresh cached AS-name answer is
asked for its name, country and registry.

What an address gets (columns of ``LOOKUP_COLUMNS``):

- ``found``: ``asn_source = 'cymru'``, ``current_asn`` the lowest origin ASN of the longest prefix
  that contains it (all of them in ``enrichment``), ``asn_network`` the prefix; when the service
  names no ASN (``NA``), ``asn_source`` stays ``none``;
- ``unrouted`` (NXDOMAIN): ``asn_source = 'none'``;
- ``pending`` (timeouts, SERVFAIL, REFUSED, an unreadable or malformed answer): the error in
  ``enrichment``, and a later run asks again. An address inside an expired cached prefix keeps
  that prefix's answer meanwhile (marked ``stale``), as a resolver serves stale data when its
  upstream fails; any other stays ``asn_source = 'none'``.

``enrichment['cymru']`` holds the query name, the raw TXT answer and the time it was fetched (the
cached answer's, for a cache hit: a re-run writes the same row).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
import pandas as pd

from asn_pipeline.lookup.cymru import (
    FAILED,
    FOUND,
    NXDOMAIN,
    CymruResolver,
    MalformedAnswer,
    asn_query_name,
    choose_origin,
    origin_query_name,
    parse_as_name,
)

PREFIX_COLUMNS = [
    "prefix",
    "ip_version",
    "asn_number",
    "asns",
    "country_code",
    "rir_registry",
    "allocated",
    "query_name",
    "raw_answer",
    "fetched_at",
    "expires_at",
]
UNROUTED_COLUMNS = ["ip_address", "query_name", "fetched_at", "expires_at"]
NAME_COLUMNS = [
    "asn_number",
    "outcome",
    "organization_name",
    "organization_country",
    "rir_registry",
    "allocated",
    "query_name",
    "raw_answer",
    "fetched_at",
    "expires_at",
]
# Addresses of one block are asked one after the other (one answer usually covers the block).
_BLOCK_BITS = {4: 24, 6: 48}
_MASKS = {
    version: [((1 << bits) - 1) ^ ((1 << (bits - length)) - 1) for length in range(bits + 1)]
    for version, bits in ((4, 32), (6, 128))
}


@dataclass(frozen=True)
class CachedPrefix:
    """An origin answer, by the prefix the service returned."""

    prefix: str
    asns: tuple[int, ...]
    country: str | None
    registry: str | None
    allocated: str | None
    query_name: str
    raw_answer: tuple[str, ...]
    fetched_at: dt.datetime

    @property
    def asn(self) -> int | None:
        return self.asns[0] if self.asns else None


@dataclass(frozen=True)
class CachedUnrouted:
    query_name: str
    fetched_at: dt.datetime


@dataclass(frozen=True)
class CymruCache:
    """What the inventory's cache holds that is still fresh."""

    prefixes: list[CachedPrefix] = field(default_factory=list)
    # Expired prefixes: an address in one of them keeps its answer while a re-query fails.
    stale_prefixes: list[CachedPrefix] = field(default_factory=list)
    unrouted: dict[str, CachedUnrouted] = field(default_factory=dict)  # by address
    named_asns: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class CymruStats:
    """What one step did, for its materialisation metadata."""

    addresses_uncovered: int
    queries_sent: int
    origin_answers: dict[str, int]  # found / nxdomain / failed, per name asked
    name_answers: dict[str, int]
    prefix_cache_hits: int  # addresses inside a prefix cached before the step
    prefixes_learned_hits: int  # addresses inside a prefix another address's query returned
    unrouted_cache_hits: int
    name_cache_hits: int
    pending: int
    seconds: float
    qps: float

    @property
    def cache_hits(self) -> int:
        return (
            self.prefix_cache_hits
            + self.prefixes_learned_hits
            + self.unrouted_cache_hits
            + self.name_cache_hits
        )

    @property
    def names_fetched(self) -> int:
        return self.name_answers.get(FOUND, 0)


@dataclass(frozen=True)
class CymruResult:
    """The rows to add to the cache (written with the addresses, in one transaction) and stats."""

    prefixes: list[tuple]  # PREFIX_COLUMNS
    unrouted: list[tuple]  # UNROUTED_COLUMNS
    names: list[tuple]  # NAME_COLUMNS
    stats: CymruStats


class PrefixTable:
    """Prefixes by version and length, for longest-prefix matches; safe to share by threads."""

    def __init__(self, prefixes: Iterable[CachedPrefix] = ()):
        self._tables: dict[tuple[int, int], dict[int, CachedPrefix]] = {}
        self._lengths: dict[int, tuple[int, ...]] = {4: (), 6: ()}  # longest first
        self._lock = threading.Lock()
        for prefix in prefixes:
            self.add(prefix)

    def add(self, entry: CachedPrefix) -> None:
        network = ipaddress.ip_network(entry.prefix)
        key = (network.version, network.prefixlen)
        with self._lock:
            if key not in self._tables:
                self._tables[key] = {}
                lengths = {*self._lengths[network.version], network.prefixlen}
                self._lengths[network.version] = tuple(sorted(lengths, reverse=True))
            self._tables[key][int(network.network_address)] = entry

    def match(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> CachedPrefix | None:
        """The longest prefix that contains ``address``, or ``None``."""
        value, masks = int(address), _MASKS[address.version]
        with self._lock:
            for length in self._lengths[address.version]:
                entry = self._tables[(address.version, length)].get(value & masks[length])
                if entry is not None:
                    return entry
        return None


@dataclass(frozen=True)
class _Resolved:
    ip: str
    status: str  # found / unrouted / pending
    query_name: str
    how: str  # cached / learned / asked
    prefix: CachedPrefix | None = None
    fetched_at: dt.datetime | None = None
    error: str | None = None
    outcome: str | None = None  # of the query, when one was sent


def resolve_uncovered(
    lookups: pd.DataFrame,
    cache: CymruCache,
    resolver: CymruResolver,
    ttl: dt.timedelta,
) -> tuple[pd.DataFrame, CymruResult]:
    """The lookups with Team Cymru's answers for the rows MaxMind did not cover, and what to
    add to the cache. Never raises for what the network or the service does."""
    started = time.monotonic()
    uncovered = lookups.index[lookups["asn_source"] == "none"]
    ips = lookups.loc[uncovered, "ip_address"].tolist()
    table, stale = PrefixTable(cache.prefixes), PrefixTable(cache.stale_prefixes)

    resolved: dict[str, _Resolved] = {}
    blocks: dict[tuple[int, int], list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = (
        defaultdict(list)
    )
    for ip in ips:
        address = ipaddress.ip_address(ip)
        cached = table.match(address)
        if cached is not None:
            resolved[ip] = _Resolved(ip, "found", cached.query_name, "cached", prefix=cached)
        elif ip in cache.unrouted:
            hit = cache.unrouted[ip]
            resolved[ip] = _Resolved(ip, "unrouted", hit.query_name, "cached", None, hit.fetched_at)
        else:
            bits = _BLOCK_BITS[address.version]
            block = int(address) & _MASKS[address.version][bits]
            blocks[(address.version, block)].append(address)

    def ask_block(addresses: list) -> tuple[list[_Resolved], list[CachedPrefix]]:
        # A prefix learned here answers the rest of this block only: blocks run in parallel,
        # and a less specific prefix learned by another block could hide a more specific one
        # depending on timing. Across blocks, the answers meet in the cache, from the next run.
        block, answers, found = PrefixTable(), [], []
        for address in sorted(addresses):
            entry = block.match(address)
            if entry is not None:
                answers.append(_Resolved(str(address), "found", entry.query_name, "learned", entry))
                continue
            answer = _ask_origin(resolver, str(address), stale)
            if answer.status == "found":
                block.add(answer.prefix)
                found.append(answer.prefix)
            answers.append(answer)
        return answers, found

    learned: dict[str, CachedPrefix] = {}
    with ThreadPoolExecutor(resolver.workers, thread_name_prefix="cymru-block") as pool:
        for answers, found in pool.map(ask_block, [blocks[key] for key in sorted(blocks)]):
            resolved.update((answer.ip, answer) for answer in answers)
            for prefix in found:  # the first block's answer, in address order
                learned.setdefault(prefix.prefix, prefix)

    frame = _apply(lookups, uncovered, ips, resolved)
    names, name_answers = _ask_names(frame, cache, resolver, ttl)
    asked = [r for r in resolved.values() if r.how == "asked"]
    how = Counter(r.how for r in resolved.values() if r.status == "found")
    stats = CymruStats(
        addresses_uncovered=len(ips),
        queries_sent=resolver.queries_sent,
        origin_answers=_counts(r.outcome for r in asked),
        name_answers=_counts(name_answers),
        prefix_cache_hits=how["cached"],
        prefixes_learned_hits=how["learned"],
        unrouted_cache_hits=sum(1 for r in resolved.values() if r.how == "cached") - how["cached"],
        name_cache_hits=len(_day_asns(frame) & cache.named_asns),
        pending=sum(1 for r in resolved.values() if r.status == "pending"),
        seconds=round(time.monotonic() - started, 3),
        qps=round(1.0 / resolver.bucket.interval, 3),
    )
    prefixes = [_prefix_row(p, ttl) for p in sorted(learned.values(), key=lambda p: p.prefix)]
    unrouted = [
        (r.ip, r.query_name, r.fetched_at, r.fetched_at + ttl)
        for r in asked
        if r.status == "unrouted"
    ]
    return frame, CymruResult(prefixes, unrouted, names, stats)


def _ask_origin(resolver: CymruResolver, ip: str, stale: PrefixTable) -> _Resolved:
    name = origin_query_name(ip)
    answer = resolver.ask(name)
    if answer.outcome == NXDOMAIN:
        return _Resolved(ip, "unrouted", name, "asked", None, answer.fetched_at, outcome=NXDOMAIN)
    error = answer.error
    if answer.outcome == FOUND:
        try:
            record = choose_origin(ip, answer.texts)
        except MalformedAnswer as malformed:
            error = f"malformed answer: {malformed}"
    if error is not None:
        last = stale.match(ipaddress.ip_address(ip))
        return _Resolved(ip, "pending", name, "asked", last, error=error, outcome=FAILED)
    prefix = CachedPrefix(
        record.prefix,
        record.asns,
        record.country,
        record.registry,
        record.allocated,
        name,
        answer.texts,
        answer.fetched_at,
    )
    return _Resolved(ip, "found", name, "asked", prefix, answer.fetched_at, outcome=FOUND)


def _apply(
    lookups: pd.DataFrame, rows: pd.Index, ips: list[str], resolved: dict[str, _Resolved]
) -> pd.DataFrame:
    """The lookups with the Cymru columns of the uncovered rows set."""
    frame = lookups.copy()
    if not ips:
        return frame
    results = [resolved[ip] for ip in ips]
    asn_numbers = [r.prefix.asn if r.prefix is not None else None for r in results]
    frame.loc[rows, "asn_number"] = pd.array(asn_numbers, dtype="Int64")
    frame.loc[rows, "asn_network"] = [r.prefix.prefix if r.prefix else None for r in results]
    frame.loc[rows, "asn_source"] = ["none" if a is None else "cymru" for a in asn_numbers]
    frame.loc[rows, "cymru_status"] = [r.status for r in results]
    frame.loc[rows, "enrichment"] = [
        _with_cymru(enrichment, result)
        for enrichment, result in zip(frame.loc[rows, "enrichment"].tolist(), results, strict=True)
    ]
    return frame


def _with_cymru(enrichment: str, result: _Resolved) -> str:
    document = orjson.loads(enrichment)
    if result.status == "pending" and result.prefix is None:
        document["cymru"] = {"query": result.query_name, "error": result.error}
    elif result.prefix is not None:
        prefix = result.prefix
        document["cymru"] = {
            "query": prefix.query_name,
            "answer": list(prefix.raw_answer),
            "fetched_at": _iso(prefix.fetched_at),
            "prefix": prefix.prefix,
            "origin_asns": list(prefix.asns),
            "country": prefix.country,
            "registry": prefix.registry,
            "allocated": prefix.allocated,
        }
        if result.status == "pending":  # an expired answer, kept while the re-query fails
            document["cymru"].update(stale=True, error=result.error)
    else:
        document["cymru"] = {
            "query": result.query_name,
            "answer": "NXDOMAIN",
            "fetched_at": _iso(result.fetched_at),
        }
    return orjson.dumps(document).decode()


def _day_asns(frame: pd.DataFrame) -> set[int]:
    return {int(a) for a in frame["asn_number"].dropna().unique().tolist()}


def _ask_names(
    frame: pd.DataFrame,
    cache: CymruCache,
    resolver: CymruResolver,
    ttl: dt.timedelta,
) -> tuple[list[tuple], list[str]]:
    """AS-name rows for the cache, for every ASN of the day without a fresh one, and the
    outcome of each answer (a failed one is not cached: a later run asks again)."""
    wanted = sorted(_day_asns(frame) - cache.named_asns)
    answers = resolver.ask_all([asn_query_name(asn) for asn in wanted])
    rows, outcomes = [], []
    for asn in wanted:
        name = asn_query_name(asn)
        answer = answers[name]
        if answer.outcome == NXDOMAIN:
            fetched = answer.fetched_at
            rows.append((asn, NXDOMAIN, None, None, None, None, name, None, fetched, fetched + ttl))
        elif answer.outcome == FOUND:
            try:
                record = parse_as_name(asn, answer.texts)
            except MalformedAnswer:
                outcomes.append(FAILED)
                continue
            fetched = answer.fetched_at
            raw = orjson.dumps(list(answer.texts)).decode()
            rows.append(
                (
                    asn,
                    FOUND,
                    record.name,
                    record.country,
                    record.registry,
                    record.allocated,
                    name,
                    raw,
                    fetched,
                    fetched + ttl,
                )
            )
        outcomes.append(answer.outcome)
    return rows, outcomes


def _prefix_row(prefix: CachedPrefix, ttl: dt.timedelta) -> tuple:
    network = ipaddress.ip_network(prefix.prefix)
    return (
        prefix.prefix,
        network.version,
        prefix.asn,
        " ".join(str(a) for a in prefix.asns) or None,
        prefix.country,
        prefix.registry,
        prefix.allocated,
        prefix.query_name,
        orjson.dumps(list(prefix.raw_answer)).decode(),
        prefix.fetched_at,
        prefix.fetched_at + ttl,
    )


def _counts(outcomes: Iterable[str | None]) -> dict[str, int]:
    counts = Counter(o for o in outcomes if o is not None)
    return {kind: counts.get(kind, 0) for kind in (FOUND, NXDOMAIN, FAILED)}


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cached_prefix(
    prefix: str,
    asns: Sequence[int],
    country: str | None,
    registry: str | None,
    allocated: str | None,
    query_name: str,
    raw_answer: Sequence[str],
    fetched_at: dt.datetime,
) -> CachedPrefix:
    """A cache row as read back from the inventory."""
    return CachedPrefix(
        prefix,
        tuple(sorted(asns)),
        country,
        registry,
        allocated,
        query_name,
        tuple(raw_answer),
        fetched_at,
    )
