"""A small authoritative DNS server for Team Cymru's zones on 127.0.0.1, for the tests.

UDP and TCP on one ephemeral port, built on dnspython. It answers origin queries the way the
service does, from a routing table the test fills (every route that covers the address, one TXT
record each; NXDOMAIN when none does), AS-name queries from the names the test gives, and any name
from TXT strings set for it (garbage included). It records every query it receives (name,
protocol, time) and can be told to misbehave for chosen names, or for all: never answer, SERVFAIL,
REFUSED, unreadable bytes, or a UDP answer marked truncated (TC) that makes the client ask again
over TCP.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

SILENT = "silent"  # never answers
SERVFAIL = "servfail"
REFUSED = "refused"
MALFORMED = "malformed"  # bytes that are not a DNS message
TRUNCATE = "truncate"  # UDP answers carry TC and no records; TCP answers normally

ORIGIN = ".origin.asn.cymru.com"
ORIGIN6 = ".origin6.asn.cymru.com"
ASN = ".asn.cymru.com"


@dataclass(frozen=True)
class Received:
    name: str  # lower case, no final dot
    protocol: str  # udp or tcp
    at: float  # time.time() when it arrived


@dataclass(frozen=True)
class Route:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    text: str


class CymruDnsServer:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.texts: dict[str, list[str]] = {}
        self.behaviours: dict[str, str] = {}
        self.behaviour: str | None = None  # for every name without its own
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0

    # The zone

    def route(
        self,
        prefix: str,
        *asns: int,
        country: str = "NL",
        registry: str = "ripencc",
        allocated: str = "2010-05-17",
    ) -> None:
        """A routed prefix and its origin ASNs, as the service's origin records state them."""
        network = ipaddress.ip_network(prefix)
        origin = " ".join(str(a) for a in asns) or "NA"
        self.routes.append(
            Route(network, f"{origin} | {network} | {country} | {registry} | {allocated}")
        )

    def as_name(
        self,
        asn: int,
        name: str,
        country: str = "NL",
        registry: str = "ripencc",
        allocated: str = "2010-05-17",
    ) -> None:
        self.txt(f"AS{asn}{ASN}", f"{asn} | {country} | {registry} | {allocated} | {name}")

    def txt(self, name: str, *texts: str) -> None:
        """Fixed TXT strings for a name (they win over the routing table)."""
        self.texts[name.lower().rstrip(".")] = list(texts)

    def misbehave(self, name: str, behaviour: str | None) -> None:
        self.behaviours[name.lower().rstrip(".")] = behaviour

    # What it saw

    def names(self, protocol: str | None = None) -> list[str]:
        with self._lock:
            return [r.name for r in self.received if protocol in (None, r.protocol)]

    def origin_names(self) -> list[str]:
        return [n for n in self.names("udp") if n.endswith((ORIGIN, ORIGIN6))]

    def asn_names(self) -> list[str]:
        return [n for n in self.names("udp") if not n.endswith((ORIGIN, ORIGIN6))]

    def per_second(self) -> Counter[int]:
        """Messages received in each whole second (UDP and TCP)."""
        with self._lock:
            return Counter(int(r.at) for r in self.received)

    def forget(self) -> None:
        with self._lock:
            self.received.clear()

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    # Serving

    def start(self) -> CymruDnsServer:
        for _ in range(20):  # the UDP port may be taken for TCP: try another
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError("no free port for UDP and TCP")
        tcp.listen(64)
        udp.settimeout(0.1)
        tcp.settimeout(0.1)
        self.port, self._udp, self._tcp = port, udp, tcp
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._udp.close()
        self._tcp.close()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self._udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._reply(wire, "udp", time.time())
            if reply is not None:
                self._udp.sendto(reply, client)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            while not self._stop.is_set():
                try:
                    header = _read(conn, 2)
                    if header is None:
                        return
                    wire = _read(conn, struct.unpack("!H", header)[0])
                    if wire is None:
                        return
                except OSError:
                    return
                reply = self._reply(wire, "tcp", time.time())
                if reply is None:
                    continue
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _reply(self, wire: bytes, protocol: str, at: float) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except Exception:  # noqa: BLE001 - not a query: ignored, like a real server
            return None
        name = question.name.to_text(omit_final_dot=True).lower()
        with self._lock:
            self.received.append(Received(name, protocol, at))
        behaviour = self.behaviours.get(name, self.behaviour)
        if behaviour == SILENT:
            return None
        if behaviour == MALFORMED:
            return b"\x13\x37 this is not DNS"
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if behaviour in (SERVFAIL, REFUSED):
            response.set_rcode(dns.rcode.SERVFAIL if behaviour == SERVFAIL else dns.rcode.REFUSED)
            return response.to_wire()
        if behaviour == TRUNCATE and protocol == "udp":
            response.flags |= dns.flags.TC
            return response.to_wire()
        texts = self._answer(name)
        if texts is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.TXT)
            for text in texts:
                data = text.encode()
                chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
                rrset.add(
                    dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks), 300
                )
            response.answer.append(rrset)
        return response.to_wire()

    def _answer(self, name: str) -> list[str] | None:
        if name in self.texts:
            return self.texts[name]
        address = _origin_address(name)
        if address is None:
            return None
        covering = sorted(
            (r for r in self.routes if r.network.version == address.version),
            key=lambda r: r.network.prefixlen,
        )
        texts = [r.text for r in covering if address in r.network]
        return texts or None


def _origin_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        if name.endswith(ORIGIN6):
            nibbles = name.removesuffix(ORIGIN6).split(".")
            if len(nibbles) != 32:
                return None
            digits = "".join(reversed(nibbles))
            return ipaddress.IPv6Address(int(digits, 16))
        if name.endswith(ORIGIN):
            octets = name.removesuffix(ORIGIN).split(".")
            return ipaddress.IPv4Address(".".join(reversed(octets)))
    except ValueError:
        return None
    return None


def _read(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
