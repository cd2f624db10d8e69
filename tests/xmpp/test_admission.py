"""Admission of new connections per address: a rate with a burst, and a cap of concurrent
unauthenticated connections, applied from accept (Direct TLS: before the TLS handshake)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imhost.kit.clock import FrozenClock
from imhost.xmpp.core.admission import ConnectionAdmission, address_key
from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

from .harness import DOMAIN, HEADER, PASSWORD, Harness, settings
from .test_stream import stream_error_from_raw

pytestmark = pytest.mark.anyio

NAT = "203.0.113.9"


# -- the rate: many real users behind one NAT pass, a flood does not -------------------------


async def test_fifty_people_behind_one_nat_can_connect_at_the_same_moment() -> None:
    async with Harness() as h:  # the defaults
        clients = [h.client(NAT) for _ in range(50)]
        assert h.server.services.admission.unauthenticated(NAT) == 50
        for c in clients[:10]:
            assert (await c.login_plain("alice")).name == "success"
        for c in clients[10:]:
            await c.open()
        assert all(stream_error_from_raw(c) is None for c in clients)
        assert all(not c.transport.closed for c in clients)
        assert h.server.services.admission.unauthenticated(NAT) == 40


async def test_past_the_burst_new_connections_wait_for_the_rate() -> None:
    clock = FrozenClock()
    async with Harness(
        clock=clock, connection_rate_per_address=2, connection_burst_per_address=5
    ) as h:
        first = [h.client(NAT) for _ in range(5)]
        await first[-1].recv()
        assert all(not c.transport.closed for c in first)
        refused = h.client(NAT)
        await refused.recv()
        assert stream_error_from_raw(refused) == "policy-violation"
        assert "too many new connections from your address" in refused.raw
        assert refused.transport.closed
        # another address is not affected
        other = h.client("198.51.100.20")
        await other.open()
        assert not other.transport.closed
        # half a second later the bucket holds one connection again (2 per second)
        clock.advance(0.5)
        again = h.client(NAT)
        await again.open()
        assert stream_error_from_raw(again) is None and not again.transport.closed
        # a refused connection does not count as waiting to sign in
        assert h.server.services.admission.unauthenticated(NAT) == 6


async def test_the_cap_counts_only_connections_not_yet_signed_in() -> None:
    async with Harness(unauthenticated_per_address=3) as h:
        clients = [h.client(NAT) for _ in range(3)]
        for c in clients:
            await c.open()
        fourth = h.client(NAT)
        await fourth.recv()
        assert stream_error_from_raw(fourth) == "policy-violation"
        assert "waiting to sign in" in fourth.raw
        clients[0].send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            "AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==</auth>"
        )
        assert (await clients[0].wait_for_any(("success", "failure"))).name == "success"
        fifth = h.client(NAT)
        await fifth.open()
        assert stream_error_from_raw(fifth) is None and not fifth.transport.closed


def test_ipv6_addresses_count_by_their_64() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"
    admission = ConnectionAdmission(
        settings(connection_burst_per_address=2, connection_rate_per_address=0.001),
        FrozenClock(),
    )
    assert admission.admit("2001:db8:1:2::1") is None
    assert admission.admit("2001:db8:1:2::2") is None
    assert admission.admit("2001:db8:1:2::3") is not None
    assert admission.admit("2001:db8:1:3::1") is None


def test_the_table_of_addresses_stays_bounded() -> None:
    clock = FrozenClock()
    admission = ConnectionAdmission(settings(connection_rate_per_address=10), clock)
    for i in range(20_000):
        assert admission.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") is None
        admission.release(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        if i % 1000 == 0:
            clock.advance(10)  # buckets refill: forgotten at the next prune
    assert len(admission._buckets) <= 4096 + 1000


# -- Direct TLS: the limit and a handshake timeout from accept -------------------------------


@pytest.fixture
async def direct_tls(cert_dir: Path) -> AsyncIterator[XmppServer]:
    backend = MemoryBackend(iterations=64)
    backend.add_host(DOMAIN, limits=HostLimits(message_rate=None))
    backend.create_account(DOMAIN, "alice", PASSWORD)
    server = XmppServer.with_memory_backend(
        settings(
            require_encryption=True,
            allow_plain_without_tls=False,
            direct_tls_enabled=True,
            c2s_port=0,
            c2s_direct_tls_port=0,
            certificate_dir=cert_dir,
            unauthenticated_per_address=20,
            tls_handshake_timeout_seconds=4,
            negotiation_timeout_seconds=30,
        ),
        backend,
        modules=[],
    )
    await server.start()
    yield server
    await server.stop()


async def _idle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(100), seconds)
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return data == b""


async def test_idle_direct_tls_connections_are_limited_before_the_handshake(
    direct_tls: XmppServer,
) -> None:
    port = direct_tls.direct_tls_port
    assert port
    idle = [await _idle(port) for _ in range(120)]
    # only the cap waits for a handshake; the rest are closed at accept, without a byte sent
    closed = await asyncio.gather(*(_closed_within(r, 2) for r, _ in idle[20:]))
    assert all(closed)
    closed = await asyncio.gather(*(_closed_within(r, 0.1) for r, _ in idle[:20]))
    assert not any(closed)
    assert len(direct_tls.handshakes) == 20
    assert direct_tls.engine_stats()["unauthenticated_connections"] == 20
    # the handshake timeout closes the others and frees what they held
    closed = await asyncio.gather(*(_closed_within(r, 10) for r, _ in idle[:20]))
    assert all(closed)
    assert len(direct_tls.handshakes) == 0
    assert direct_tls.engine_stats()["unauthenticated_connections"] == 0
    for _, w in idle:
        w.close()

    # and a real client is served
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(HEADER.format(to=DOMAIN).encode())
    data = b""
    while b"</stream:features>" not in data:
        chunk = await asyncio.wait_for(reader.read(4096), 5)
        assert chunk
        data += chunk
    assert b"PLAIN" in data or b"SCRAM" in data
    assert direct_tls.engine_stats()["unauthenticated_connections"] == 1
    writer.close()


async def test_a_direct_tls_connection_closed_mid_handshake_stops_counting(
    direct_tls: XmppServer,
) -> None:
    port = direct_tls.direct_tls_port
    assert port
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"\x16\x03\x01\x00\x05hello")  # the start of a ClientHello, then gone
    await asyncio.sleep(0.1)
    sock.close()
    for _ in range(100):
        if not direct_tls.handshakes:
            break
        await asyncio.sleep(0.05)
    assert not direct_tls.handshakes
    assert direct_tls.engine_stats()["unauthenticated_connections"] == 0


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
async def test_two_thousand_idle_direct_tls_connections_do_not_grow_the_server(
    direct_tls: XmppServer,
) -> None:
    """The finding: 3,000 idle connections to the Direct TLS port grew the server by 600 MB
    (each a TLS handshake in waiting). Only the cap may wait now; the rest cost nothing."""
    port = direct_tls.direct_tls_port
    assert port
    before = _rss_mib()
    idle = [await _idle(port) for _ in range(2000)]
    await asyncio.sleep(0.5)
    grown = _rss_mib() - before  # this process holds both ends: the clients count too
    assert len(direct_tls.handshakes) <= 20
    assert grown < 100, f"{grown:.0f} MiB for 2,000 idle connections"
    for _, writer in idle:
        writer.close()
    for _ in range(100):
        if not direct_tls.handshakes:
            break
        await asyncio.sleep(0.05)
    assert direct_tls.engine_stats()["unauthenticated_connections"] == 0
