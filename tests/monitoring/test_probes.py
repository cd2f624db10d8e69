"""Probes against real listeners on loopback: the engine up, the port closed, bad
certificates, an HTTPS server on the XMPP port, a silent server, a failing login, a
suspended service, SRV records from a real (tiny) DNS server."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imhost.config import XmppSettings
from imhost.monitoring.probes import (
    TlsMode,
    XmppTarget,
    check_disk,
    check_lag,
    check_smtp,
    probe_srv,
    probe_tcp,
    probe_xmpp,
)
from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

from .certs import Certs, Pair
from .conftest import DOMAIN

pytestmark = pytest.mark.anyio

PASSWORD = "probe password 42"


@dataclass
class Engine:
    server: XmppServer
    backend: MemoryBackend
    port: int
    tls_port: int


async def _engine(pair: Pair) -> Engine:
    backend = MemoryBackend(iterations=4096)
    backend.add_host(DOMAIN, limits=HostLimits(message_rate=None))
    backend.create_account(DOMAIN, "probe", PASSWORD)
    server = XmppServer.with_memory_backend(
        XmppSettings(
            require_encryption=True,
            allow_plain_without_tls=False,
            direct_tls_enabled=True,
            c2s_port=0,
            c2s_direct_tls_port=0,
            certificate=pair.cert,
            private_key=pair.key,
            metering_flush_seconds=3600,
            idle_parser_seconds=0,
            negotiation_timeout_seconds=5,
        ),
        backend,
    )
    await server.start()
    assert server.c2s_port and server.direct_tls_port
    return Engine(server, backend, server.c2s_port, server.direct_tls_port)


@pytest.fixture
async def engine(certs: Certs) -> AsyncIterator[Engine]:
    live = await _engine(certs.good)
    yield live
    await live.server.stop()


def _target(port: int, certs: Certs, **kw: Any) -> XmppTarget:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "domain": DOMAIN,
        "ca_file": certs.ca,
        "username": "probe",
        "password": PASSWORD,
        "step_timeout": 5.0,
    }
    base.update(kw)
    return XmppTarget(**base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_engine_up_passes_every_step_over_starttls(engine: Engine, certs: Certs) -> None:
    result = await probe_xmpp(_target(engine.port, certs))
    assert result.ok, result.summary
    assert [s.name for s in result.steps] == [
        "connect",
        "stream",
        "starttls",
        "stream-after-tls",
        "login",
        "bind",
        "ping",
    ]
    assert all(s.seconds >= 0 for s in result.steps)
    assert result.certificate_days_left in (88, 89)
    assert result.warnings == []


async def test_the_engine_up_passes_over_direct_tls(engine: Engine, certs: Certs) -> None:
    result = await probe_xmpp(_target(engine.tls_port, certs, tls=TlsMode.DIRECT))
    assert result.ok, result.summary
    assert [s.name for s in result.steps][:3] == ["connect", "tls", "stream"]
    assert result.steps[-1].name == "ping"


async def test_without_a_probe_account_the_probe_stops_after_the_features(
    engine: Engine, certs: Certs
) -> None:
    result = await probe_xmpp(_target(engine.port, certs, username=None, password=None))
    assert result.ok
    assert result.steps[-1].name == "stream-after-tls"


async def test_a_closed_port_fails_at_connect(certs: Certs) -> None:
    result = await probe_xmpp(_target(_free_port(), certs))
    assert not result.ok
    assert result.failed is not None and result.failed.name == "connect"
    assert "refused" in result.failed.detail
    tcp = await probe_tcp("127.0.0.1", _free_port())
    assert not tcp.ok


async def test_a_wrong_password_fails_at_login(engine: Engine, certs: Certs) -> None:
    result = await probe_xmpp(_target(engine.port, certs, password="not it"))
    assert result.failed is not None and result.failed.name == "login"
    assert result.failed.detail == "the probe account could not sign in (not authorized)"


async def test_a_suspended_service_fails_at_login_with_its_reason(
    engine: Engine, certs: Certs
) -> None:
    engine.backend.suspend_host(DOMAIN, "Suspended: invoice INV-9 is unpaid.")
    await asyncio.sleep(0.05)
    result = await probe_xmpp(_target(engine.port, certs))
    assert result.failed is not None and result.failed.name == "login"
    assert "INV-9" in result.failed.detail


async def test_a_certificate_for_another_name_fails_starttls(certs: Certs) -> None:
    live = await _engine(certs.wrong_name)
    try:
        result = await probe_xmpp(_target(live.port, certs))
        assert result.failed is not None and result.failed.name == "starttls"
        assert result.failed.detail == "the certificate is for another name"
        direct = await probe_xmpp(_target(live.tls_port, certs, tls=TlsMode.DIRECT))
        assert direct.failed is not None and direct.failed.name == "tls"
        assert direct.failed.detail == "the certificate is for another name"
    finally:
        await live.server.stop()


async def test_an_expired_certificate_fails_and_a_near_one_warns(certs: Certs) -> None:
    live = await _engine(certs.expired)
    try:
        result = await probe_xmpp(_target(live.tls_port, certs, tls=TlsMode.DIRECT))
        assert result.failed is not None and result.failed.name == "tls"
        assert result.failed.detail == "the certificate has expired"
    finally:
        await live.server.stop()
    live = await _engine(certs.expiring)
    try:
        result = await probe_xmpp(_target(live.port, certs))
        assert result.ok, result.summary
        assert result.certificate_days_left == 5
        assert result.warnings == ["the certificate expires in 5 days"]
    finally:
        await live.server.stop()


async def test_an_untrusted_chain_fails(engine: Engine, certs: Certs, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    other.mkdir()
    from .certs import make_certs

    unrelated = make_certs(other, DOMAIN)
    result = await probe_xmpp(
        _target(engine.tls_port, certs, tls=TlsMode.DIRECT, ca_file=unrelated.ca)
    )
    assert result.failed is not None
    assert result.failed.detail == "the certificate is not signed by a trusted authority"


async def _serve(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any], **kw: Any
) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0, **kw)


async def test_an_https_server_on_the_xmpp_port_fails_though_tls_is_fine(certs: Certs) -> None:
    async def https(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 11\r\n"
            b"Connection: close\r\n\r\nBad Request"
        )
        await writer.drain()
        writer.close()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(certs.good.cert), str(certs.good.key))
    server = await _serve(https, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe_xmpp(_target(port, certs, tls=TlsMode.DIRECT))
        assert [s.ok for s in result.steps] == [True, True, False]
        assert result.failed is not None and result.failed.name == "stream"
        assert result.failed.detail == "the server did not answer with an XMPP stream"
    finally:
        server.close()


async def test_a_server_that_never_answers_times_out_per_step(certs: Certs) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(65536)

    server = await _serve(silent)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe_xmpp(_target(port, certs, step_timeout=0.3))
        assert result.failed is not None and result.failed.name == "stream"
        assert result.failed.detail == "no answer within 0.3 seconds"
        assert 0.25 < result.failed.seconds < 2
    finally:
        for w in held:
            w.close()
        server.close()


async def test_srv_records_from_a_real_dns_server() -> None:
    import dns.message
    import dns.rdatatype
    import dns.rrset

    class Dns(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text()
            if name == "_xmpp-client._tcp.acme.test." and question.rdtype == dns.rdatatype.SRV:
                response.answer.append(
                    dns.rrset.from_text(name, 300, "IN", "SRV", "5 0 5222 xmpp.acme.test.")
                )
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.transport.sendto(response.to_wire(), addr)

    import dns.rcode

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Dns, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        result, records = await probe_srv("acme.test", nameservers=["127.0.0.1"], port=port)
        assert result.ok
        assert [(r.priority, r.port, r.target) for r in records] == [(5, 5222, "xmpp.acme.test")]
        assert "_xmpps-client._tcp.acme.test does not exist" in result.steps[0].warning
        missing, none = await probe_srv("nothing.test", nameservers=["127.0.0.1"], port=port)
        assert not missing.ok and none == []
        assert "_xmpp-client._tcp.nothing.test does not exist" in missing.summary
    finally:
        transport.close()


async def test_platform_checks(tmp_path: Path) -> None:
    from datetime import timedelta

    from imhost.kit.clock import utc

    assert check_disk(tmp_path, min_free_bytes=1).ok
    full = check_disk(tmp_path, min_free_bytes=10**18)
    assert not full.ok and "MB free" in full.summary
    now = utc(2026, 3, 1, 12)
    assert check_lag("worker", now - timedelta(seconds=30), now, 120).ok
    late = check_lag("worker", now - timedelta(seconds=300), now, 120)
    assert late.summary == "worker: last ran 300 seconds ago (limit 120)"
    assert not check_lag("worker", None, now, 120).ok


async def test_the_smtp_check_against_a_real_relay_and_a_closed_port() -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    port = _free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert (await check_smtp("127.0.0.1", port)).ok
    finally:
        controller.stop()
    closed = await check_smtp("127.0.0.1", _free_port(), timeout=2)
    assert not closed.ok and "refused" in closed.summary
