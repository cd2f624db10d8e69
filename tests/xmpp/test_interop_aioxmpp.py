"""Interop with aioxmpp: login with each mechanism it implements over STARTTLS and Direct
TLS (the server offers only the mechanism under test), then messages both ways.

aioxmpp (through aiosasl) does not bind channels, so -PLUS is covered by the slixmpp tests
(tls-unique) and by test_sasl.py (tls-server-end-point).
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    aioxmpp = pytest.importorskip("aioxmpp")
    import aioxmpp.security_layer as asl
    from aioxmpp import connector

import imhost.xmpp.core.saslauth as saslauth_module
from imhost.xmpp.core import sasl

from .conftest import LiveServer

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
