"""A small authoritative DNS server for tests, on loopback UDP and TCP (dnspython messages).

It answers from a zone given per test: ``{(name, type): [rdata in presentation form]}``.
A name with no records of the asked type but with others (or with children) gets NOERROR and
no answer (NODATA); an unknown name gets NXDOMAIN, as RFC 1034 §4.3.2 says. ``SilentServer``
binds a UDP socket and never answers: the resolver has to time out.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = Mapping[tuple[str, str], Iterable[str]]


class ZoneData:
    def __init__(self, records: Zone) -> None:
        self.queries: list[tuple[str, str]] = []
        self.load(records)

    def load(self, records: Zone) -> None:
        """Serve ``records`` from now on (what a zone edit does)."""
        self.records: dict[tuple[dns.name.Name, int], list[str]] = {}
        self.names: set[dns.name.Name] = set()
        for (name, rdtype), values in records.items():
            owner = dns.name.from_text(name)
            self.records[(owner, dns.rdatatype.from_text(rdtype))] = list(values)
            while owner != dns.name.root:  # every ancestor exists (empty non-terminals)
                self.names.add(owner)
                owner = owner.parent()

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        self.queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        values = self.records.get((question.name, question.rdtype))
        if values:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 300, dns.rdataclass.IN, question.rdtype, values
                )
            )
        elif question.name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(self.server.zone.answer(data), self.client_address)  # type: ignore[attr-defined]


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn: socket.socket = self.request
        header = conn.recv(2)
        if len(header) < 2:
            return
        (length,) = struct.unpack("!H", header)
        data = b""
        while len(data) < length:
            chunk = conn.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        out = self.server.zone.answer(data)  # type: ignore[attr-defined]
        conn.sendall(struct.pack("!H", len(out)) + out)


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsServer:
    """Serve ``zone`` on 127.0.0.1, UDP and TCP on the same free port."""

    def __init__(self, zone: Zone) -> None:
        self.zone = ZoneData(zone)
        for _ in range(20):
            tcp = _TcpServer(("127.0.0.1", 0), _Tcp, bind_and_activate=True)
            port = tcp.server_address[1]
            try:
                udp = _UdpServer(("127.0.0.1", port), _Udp)
            except OSError:
                tcp.server_close()
                continue
            break
        else:  # pragma: no cover - the machine has no free port pair
            raise RuntimeError("no free port for the test DNS server")
        tcp.zone = udp.zone = self.zone  # type: ignore[attr-defined]
        self.port = port
        self._servers: list[Any] = [udp, tcp]
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in self._servers
        ]
        for t in self._threads:
            t.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()


class SilentServer:
    """A UDP socket on loopback that reads nothing and answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
