"""Interop with aioxmpp: login with each mechanism it implements over STARTTLS and Direct
TLS (the server offers only the mechanism under test), then messages both ways.

aioxmpp (through aiosasl) does not bind channels, so -PLUS is covered by the slixmpp tests
(tls-unique) and by test_sasl.py (tls-server-end-point).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    aioxmpp = pytest.importorskip("aioxmpp")
    import aioxmpp.security_layer as asl
    from aioxmpp import connector

import imhost.xmpp.core.saslauth as saslauth_module
from imhost.xmpp.core import sasl
from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.version import ASKED, VersionModule
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

from .conftest import LiveServer
from .harness import DOMAIN, PASSWORD, settings

pytestmark = [pytest.mark.anyio, pytest.mark.interop]


def make_client(live: LiveServer, user: str, direct_tls: bool) -> Any:
    async def password(*_: Any) -> str:
        return live.password

    layer = asl.SecurityLayer(
        asl.default_ssl_context, asl._NullVerifier, True, (asl.PasswordSASLProvider(password),)
    )
    conn = connector.XMPPOverTLSConnector() if direct_tls else connector.STARTTLSConnector()
    port = live.tls_port if direct_tls else live.port
    return aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(f"{user}@{live.domain}/aio"),
        layer,
        override_peer=[("127.0.0.1", port, conn)],
    )


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
async def test_login_with_each_mechanism(
    live: LiveServer, mech: str, direct_tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saslauth_module, "MECHANISMS", {mech: sasl.MECHANISMS[mech]})
    client = make_client(live, "bob", direct_tls)
    async with client.connected():
        assert str(client.local_jid).startswith("bob@example.test/")
    assert live.backend.auth_log[-1].mechanism == mech
    assert live.backend.auth_log[-1].success


async def test_messages_both_ways(live: LiveServer) -> None:
    alice = make_client(live, "alice", False)
    bob = make_client(live, "bob", True)
    got: asyncio.Queue[Any] = asyncio.Queue()
    async with alice.connected(), bob.connected():
        for client in (alice, bob):
            client.stream.register_message_callback(aioxmpp.MessageType.CHAT, None, got.put_nowait)
        msg = aioxmpp.Message(
            to=aioxmpp.JID.fromstr("bob@example.test"), type_=aioxmpp.MessageType.CHAT
        )
        msg.body[None] = "from aioxmpp ✓"
        await alice.send(msg)
        first = await asyncio.wait_for(got.get(), 5)
        assert first.body.any() == "from aioxmpp ✓"
        assert first.from_ == alice.local_jid
        reply = aioxmpp.Message(to=alice.local_jid, type_=aioxmpp.MessageType.CHAT)
        reply.body[None] = "and back"
        await bob.send(reply)
        second = await asyncio.wait_for(got.get(), 5)
        assert second.body.any() == "and back"
        assert second.from_ == bob.local_jid


@pytest.fixture
async def live_with_version(cert_dir: Path) -> AsyncIterator[LiveServer]:
    """Like ``live``, with the module that asks clients their software version."""
    backend = MemoryBackend(iterations=4096)
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
        ),
        backend,
        modules=[VersionModule],
    )
    await server.start()
    assert server.c2s_port and server.direct_tls_port
    yield LiveServer(server, backend, server.c2s_port, server.direct_tls_port)
    await server.stop()


async def test_the_version_question_does_not_break_stream_management_acks(
    live_with_version: LiveServer,
) -> None:
    """aioxmpp enables XEP-0198 right after binding and counts every stanza it handles
    after ``<enabled/>``, including one read just before it. A version query sent at bind
    time was counted by aioxmpp and not by the server: its next ``<a/>`` acknowledged more
    than was sent and the server closed the stream."""
    live = live_with_version
    for _ in range(3):
        client = make_client(live, "alice", False)
        async with client.connected():
            assert client.stream.sm_enabled
            for _ in range(10):
                msg = aioxmpp.Message(to=client.local_jid, type_=aioxmpp.MessageType.CHAT)
                msg.body[None] = "to myself"
                await client.send(msg)  # delivered back: the server asks for acks (<r/>)
                await asyncio.sleep(0.05)
            assert client.running
            [session] = live.server.router.sessions_of(DOMAIN, "alice")
            assert session.get(ASKED)  # the question was asked meanwhile
            assert session.sm.unacked is not None and len(session.sm.unacked) < 5
