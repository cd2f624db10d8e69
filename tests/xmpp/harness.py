"""In-process XML-in / XML-out harness: a server on the memory backend, no sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from typing import Any

from imhost.config import XmppSettings
from imhost.kit.clock import Clock
from imhost.xmpp.core.parser import StreamParser
from imhost.xmpp.core.stream import C2SStream
from imhost.xmpp.core.xml import Element
from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.api import Module
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

DOMAIN = "example.test"
OTHER = "other.test"
PASSWORD = "correct horse battery"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
)


def settings(**kw: Any) -> XmppSettings:
    base: dict[str, Any] = {
        "require_encryption": False,
        "allow_plain_without_tls": True,
        "metering_flush_seconds": 3600,
        "negotiation_timeout_seconds": 5,
        "idle_parser_seconds": 0,
        "direct_tls_enabled": False,
        "c2s_port": 0,
    }
    base.update(kw)
    return XmppSettings(**base)


class MemTransport:
    def __init__(self, address: str = "192.0.2.1") -> None:
        self.data = bytearray()
        self.closed = False
        self.paused = False
        self.address = address

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.address, 40000)
        return default

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return 0


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Client:
    """Feeds XML to a stream and parses what the server writes back into elements."""

    def __init__(self, server: XmppServer, address: str = "192.0.2.1") -> None:
        self.server = server
        self.transport = MemTransport(address)
        self.stream: C2SStream = server.new_stream()
        self.stream.attach(self.transport)
        self.received: list[Element] = []
        self.header: dict[str, str] | None = None
        self.ended = False
        self._consumed = 0
        self._fed = False
        self._parser = self._new_parser()

    def _new_parser(self) -> StreamParser:
        return StreamParser(
            self._on_header, self.received.append, self._on_end, max_stanza_bytes=10**8
        )

    def _on_header(self, ns: str, name: str, attrs: dict[str, str], default: str) -> None:
        self.header = attrs

    def _on_end(self) -> None:
        self.ended = True

    def restart(self) -> None:
        """Client side of a stream restart (the parser restarts at each new header)."""
        self._pump()

    def _pump(self) -> None:
        data = bytes(self.transport.data[self._consumed :])
        self._consumed = len(self.transport.data)
        pos = 0
        while True:
            idx = data.find(b"<?xml", pos + 1 if pos or not self._fed else 0)
            if idx < 0:
                break
            if idx > pos:
                self._parser.feed(data[pos:idx])
                self._fed = True
            if self._fed:
                self._parser = self._new_parser()
                self._fed = False
            pos = idx
            self._parser.feed(data[pos : pos + 5])
            self._fed = True
            pos += 5
        if data[pos:]:
            self._parser.feed(data[pos:])
            self._fed = True

    def send(self, xml: str | bytes) -> None:
        self.stream.data_received(xml.encode() if isinstance(xml, str) else xml)

    async def recv(self, rounds: int = 20) -> list[Element]:
        """Everything received since the last call."""
        await settle(rounds)
        self._pump()
        out = list(self.received)
        self.received.clear()
        return out

    async def wait_for(self, name: str, timeout: float = 3.0) -> Element:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            await asyncio.sleep(0.005)
            self._pump()
            for i, el in enumerate(self.received):
                if el.name == name:
                    del self.received[: i + 1]
                    return el
        raise AssertionError(
            f"no <{name}/> in {self.received} / raw {bytes(self.transport.data)[-500:]!r}"
        )

    @property
    def raw(self) -> str:
        return bytes(self.transport.data).decode()

    # -- high level ----------------------------------------------------------------------

    async def open(self, to: str = DOMAIN) -> list[Element]:
        self.send(HEADER.format(to=to))
        return await self.recv()

    async def login_plain(self, user: str, password: str = PASSWORD, to: str = DOMAIN) -> Element:
        await self.open(to)
        blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{blob}</auth>")
        return await self.wait_for_any(("success", "failure"))

    async def wait_for_any(self, names: Iterable[str], timeout: float = 3.0) -> Element:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        wanted = set(names)
        while loop.time() < end:
            await asyncio.sleep(0.005)
            self._pump()
            for i, el in enumerate(self.received):
                if el.name in wanted:
                    del self.received[: i + 1]
                    return el
        raise AssertionError(f"none of {wanted} in {self.received} raw={self.raw[-400:]!r}")

    async def login_scram(
        self, user: str, password: str = PASSWORD, mech: str = "SCRAM-SHA-256", to: str = DOMAIN
    ) -> Element:
        await self.open(to)
        algo = "sha256" if "256" in mech else "sha1"
        cnonce = base64.b64encode(os.urandom(12)).decode()
        first_bare = f"n={user},r={cnonce}"
        msg = base64.b64encode(("n,," + first_bare).encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{msg}</auth>")
        ch = await self.wait_for_any(("challenge", "failure"))
        if ch.name == "failure":
            return ch
        server_first = base64.b64decode(ch.text).decode()
        attrs = dict(p.split("=", 1) for p in server_first.split(","))
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac(algo, password.encode(), salt, int(attrs["i"]))
        ck = hmac.new(salted, b"Client Key", algo).digest()
        sk = hashlib.new(algo, ck).digest()
        final_wo = f"c=biws,r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_wo}".encode()
        sig = hmac.new(sk, auth_msg, algo).digest()
        proof = bytes(a ^ b for a, b in zip(ck, sig, strict=True))
        final = f"{final_wo},p={base64.b64encode(proof).decode()}"
        self.send(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            f"{base64.b64encode(final.encode()).decode()}</response>"
        )
        return await self.wait_for_any(("success", "failure"))

    async def bind(self, resource: str | None = "res") -> Element:
        self.restart()
        self.send(HEADER.format(to=self.stream.domain or DOMAIN))
        await self.wait_for("features")
        inner = f"<resource>{resource}</resource>" if resource else ""
        self.send(
            "<iq type='set' id='b1'>"
            f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind></iq>"
        )
        return await self.wait_for("iq")

    async def online(
        self, user: str, resource: str = "res", priority: int = 0, presence: bool = True
    ) -> Client:
        result = await self.login_scram(user, mech="SCRAM-SHA-1")
        assert result.name == "success", result
        iq = await self.bind(resource)
        assert iq.get("type") == "result", iq
        if presence:
            self.send(f"<presence><priority>{priority}</priority></presence>")
            await self.recv()
        return self


class Harness:
    def __init__(
        self,
        *,
        modules: list[type[Module]] | None = None,
        clock: Clock | None = None,
        limits: HostLimits | None = None,
        **settings_kw: Any,
    ) -> None:
        self.backend = MemoryBackend(iterations=64)
        lim = limits or HostLimits(message_rate=None)
        self.backend.add_host(DOMAIN, limits=lim)
        self.backend.add_host(OTHER, limits=lim)
        for user in ("alice", "bob", "carol"):
            self.backend.create_account(DOMAIN, user, PASSWORD)
        self.backend.create_account(OTHER, "mallory", PASSWORD)
        self.server = XmppServer.with_memory_backend(
            settings(**settings_kw), self.backend, modules=modules or [], clock=clock
        )

    async def __aenter__(self) -> Harness:
        await self.server.start(listen=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    def client(self, address: str = "192.0.2.1") -> Client:
        return Client(self.server, address)

    async def online(
        self, user: str, resource: str = "res", priority: int = 0, presence: bool = True
    ) -> Client:
        return await self.client().online(user, resource, priority, presence)
