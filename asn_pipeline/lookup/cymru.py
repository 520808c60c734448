"""Team Cymru's IP-to-ASN service over DNS: query names, answer parsing and a polite resolver.

Wire format (https://www.team-cymru.com/ip-asn-mapping):

- ``<reversed IPv4 octets>.origin.asn.cymru.com`` and
  ``<32 reversed IPv6 nibbles>.origin6.asn.cymru.com``: TXT
  ``ASN[ ASN ...] | prefix | CC | registry | allocated``, one record per routed prefix that covers
  the address; NXDOMAIN when none does.
- ``AS<n>.asn.cymru.com`` TXT ``ASN | CC | registry | allocated | NAME``.

``NA`` or an empty field means unknown. A record that does not have this shape, or an answer none
of whose records contains the address, is a malformed answer: the address stays pending and a
later run asks again, exactly as after a timeout.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

ORIGIN_ZONE = "origin.asn.cymru.com"
ORIGIN6_ZONE = "origin6.asn.cymru.com"
ASN_ZONE = "asn.cymru.com"

FOUND, NXDOMAIN, FAILED = "found", "nxdomain", "failed"
# One query waits this long for an answer; a name gets this many attempts (timeouts, SERVFAIL,
# REFUSED and unreadable messages are retried), with exponential backoff between them.
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_ATTEMPTS = 3
BACKOFF_S = 0.25
# Names asked at the same time by one step: enough to keep the rate busy while some wait for a
# timeout, few enough to be a small client.
DEFAULT_WORKERS = 8

_MAX_ASN = 4_294_967_295
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_REGISTRY = re.compile(r"^[a-z]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UNKNOWN = ("", "NA")


class MalformedAnswer(ValueError):
    """A TXT record that is not what the service sends."""


@dataclass(frozen=True)
class OriginRecord:
    """One routed prefix covering an address, with every origin ASN the service lists."""

    asns: tuple[int, ...]  # ascending; empty when the service says NA
    prefix: str  # canonical network text
    country: str | None
    registry: str | None
    allocated: str | None

    @property
    def asn(self) -> int | None:
        """The origin ASN recorded for the address: the lowest of several (multi-origin
        prefixes, MOAS), so that the pick does not depend on the order of the answer."""
        return self.asns[0] if self.asns else None


@dataclass(frozen=True)
class AsnRecord:
    asn: int
    country: str | None
    registry: str | None
    allocated: str | None
    name: str | None


@dataclass(frozen=True)
class DnsAnswer:
    """What one name got: ``found`` (its TXT strings), ``nxdomain`` or ``failed`` (``error``)."""

    name: str
    outcome: str
    texts: tuple[str, ...] = ()
    error: str | None = None
    fetched_at: dt.datetime | None = None


def origin_query_name(ip: str) -> str:
    """The origin query name of an address (IPv4-mapped IPv6 asks for its IPv4 address)."""
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 4:
        return ".".join(reversed(str(address).split("."))) + "." + ORIGIN_ZONE
    return ".".join(reversed(address.exploded.replace(":", ""))) + "." + ORIGIN6_ZONE


def asn_query_name(asn: int) -> str:
    return f"AS{asn}.{ASN_ZONE}"


def _field(value: str) -> str | None:
    value = value.strip()
    return None if value in _UNKNOWN else value


def _checked(value: str | None, pattern: re.Pattern[str], what: str, text: str) -> str | None:
    if value is not None and not pattern.match(value):
        raise MalformedAnswer(f"bad {what} {value!r} in {text!r}")
    return value


def _asn_numbers(value: str, text: str) -> tuple[int, ...]:
    if _field(value) is None:
        return ()
    numbers = []
    for part in value.split():
        if not part.isascii() or not part.isdigit() or int(part) > _MAX_ASN:
            raise MalformedAnswer(f"bad ASN {part!r} in {text!r}")
        numbers.append(int(part))
    return tuple(sorted(set(numbers)))


def parse_origin(text: str) -> OriginRecord:
    """One origin TXT record; raises ``MalformedAnswer``."""
    fields = text.split("|")
    if len(fields) != 5:
        raise MalformedAnswer(f"expected 5 fields in {text!r}")
    asns = _asn_numbers(fields[0], text)
    try:
        prefix = ipaddress.ip_network(fields[1].strip(), strict=False)
    except ValueError:
        raise MalformedAnswer(f"bad prefix {fields[1].strip()!r} in {text!r}") from None
    return OriginRecord(
        asns=asns,
        prefix=str(prefix),
        country=_checked(_field(fields[2]), _COUNTRY, "country", text),
        registry=_checked(_field(fields[3]), _REGISTRY, "registry", text),
        allocated=_checked(_field(fields[4]), _DATE, "date", text),
    )


def choose_origin(ip: str, texts: Sequence[str]) -> OriginRecord:
    """The record of the longest prefix that really contains ``ip``; raises ``MalformedAnswer``
    if a record is malformed or none contains the address."""
    address = ipaddress.ip_address(ip)
    records = [parse_origin(text) for text in texts]
    containing = [
        (ipaddress.ip_network(r.prefix).prefixlen, r)
        for r in records
        if ipaddress.ip_network(r.prefix).version == address.version
        and address in ipaddress.ip_network(r.prefix)
    ]
    if not containing:
        raise MalformedAnswer(f"no record of {list(texts)!r} contains {ip}")
    # Equal prefixes listed twice: the lower ASN set, for a deterministic choice.
    return max(containing, key=lambda item: (item[0], [-a for a in item[1].asns]))[1]


def parse_as_name(asn: int, texts: Sequence[str]) -> AsnRecord:
    """The AS-name record of ``asn``; raises ``MalformedAnswer``."""
    if not texts:
        raise MalformedAnswer("no TXT record")
    text = texts[0]
    fields = text.split("|", 4)
    if len(fields) != 5:
        raise MalformedAnswer(f"expected 5 fields in {text!r}")
    if _asn_numbers(fields[0], text) != (asn,):
        raise MalformedAnswer(f"answer for AS{asn} names another ASN: {text!r}")
    return AsnRecord(
        asn=asn,
        country=_checked(_field(fields[1]), _COUNTRY, "country", text),
        registry=_checked(_field(fields[2]), _REGISTRY, "registry", text),
        allocated=_checked(_field(fields[3]), _DATE, "date", text),
        name=_field(fields[4]),
    )


class TokenBucket:
    """At most ``rate`` tokens a second, shared by threads, with a bucket of ``burst`` tokens.

    With the default burst of one, sends are evenly spaced ``1 / rate`` apart: no second ever
    holds more than ``rate`` of them, whatever the scheduling.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._tolerance = (burst - 1) * self.interval
        self._next = 0.0  # earliest time the next token may be taken (GCRA's "theoretical arrival")
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            now = self._clock()
            at = max(now, self._next - self._tolerance)
            self._next = max(self._next, now - self._tolerance) + self.interval
        if at > now:
            self._sleep(at - now)


@dataclass(frozen=True)
class Server:
    address: str  # an IP address
    port: int = 53


def system_servers() -> list[Server]:
    """The system resolver's name servers (``/etc/resolv.conf``)."""
    resolver = dns.resolver.Resolver()
    return [Server(str(address), resolver.port) for address in resolver.nameservers]


def server_addresses(servers: Iterable[tuple[str, int]]) -> list[Server]:
    """Servers by IP address: a host name is resolved once, here."""
    found = []
    for host, port in servers:
        try:
            ipaddress.ip_address(host)
            found.append(Server(host, port))
        except ValueError:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            found.append(Server(info[0][4][0], port))
    return found


class CymruResolver:
    """Asks TXT questions with bounded concurrency, a rate limit, timeouts and retries.

    Every message sent (a retry, a TCP retry after a truncated UDP answer) takes a token of the
    rate limit and counts in ``queries_sent``. Thread-safe.
    """

    def __init__(
        self,
        servers: Sequence[Server],
        qps: float,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempts: int = DEFAULT_ATTEMPTS,
        workers: int = DEFAULT_WORKERS,
        backoff_s: float = BACKOFF_S,
    ):
        if not servers:
            raise ValueError("no name server to ask")
        self.servers = list(servers)
        self.bucket = TokenBucket(qps)
        self.timeout_s, self.attempts, self.workers = timeout_s, max(1, attempts), max(1, workers)
        self.backoff_s = backoff_s
        self._sent = 0
        self._lock = threading.Lock()

    @property
    def queries_sent(self) -> int:
        return self._sent

    def ask_all(self, names: Sequence[str]) -> dict[str, DnsAnswer]:
        """The answer of each name, asked ``workers`` at a time."""
        if not names:
            return {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="cymru") as pool:
            return dict(zip(names, pool.map(self.ask, names), strict=True))

    def ask(self, name: str) -> DnsAnswer:
        """One name, with retries; never raises for what the network or the server does."""
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        error = "no attempt"
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            server = self.servers[attempt % len(self.servers)]
            try:
                response = self._send(query, server)
            except dns.exception.Timeout:
                error = f"timeout after {self.timeout_s:g} s"
                continue
            except (dns.exception.DNSException, OSError, ValueError, EOFError) as failure:
                error = f"unreadable response: {type(failure).__name__}: {failure}"
                continue
            now = dt.datetime.now(dt.UTC)
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return DnsAnswer(name, NXDOMAIN, fetched_at=now)
            if rcode != dns.rcode.NOERROR:
                error = dns.rcode.to_text(rcode)
                continue
            texts = tuple(
                b"".join(rdata.strings).decode("utf-8", errors="replace")
                for rrset in response.answer
                if rrset.rdtype == dns.rdatatype.TXT
                for rdata in rrset
            )
            if not texts:
                return DnsAnswer(name, FAILED, error="no TXT record in the answer", fetched_at=now)
            return DnsAnswer(name, FOUND, texts=texts, fetched_at=now)
        return DnsAnswer(name, FAILED, error=f"{error} ({self.attempts} attempts)")

    def _send(self, query: dns.message.Message, server: Server) -> dns.message.Message:
        self._count()
        response = dns.query.udp(
            query, server.address, timeout=self.timeout_s, port=server.port, ignore_unexpected=True
        )
        if response.flags & dns.flags.TC:  # too long for UDP: the same question over TCP
            self._count()
            response = dns.query.tcp(
                query, server.address, timeout=self.timeout_s, port=server.port
            )
        return response

    def _count(self) -> None:
        self.bucket.take()
        with self._lock:
            self._sent += 1
