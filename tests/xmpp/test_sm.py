"""XEP-0198 stream management: acks, resumption, and what happens to unacked stanzas."""

from __future__ import annotations

import asyncio

import pytest

from imhost.xmpp.core.xml import NS_SM

from .harness import DOMAIN, Harness

pytestmark = pytest.mark.anyio


async def test_enable_r_and_a() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        [enabled] = await b.recv()
        assert enabled.name == "enabled" and enabled.get("resume") == "true" and enabled.get("id")
        b.send("<presence><show>chat</show></presence>")
        b.send(f"<r xmlns='{NS_SM}'/>")
        [ack] = await b.recv()
        assert ack.name == "a" and ack.get("h") == "1"
        a.send("<message to='bob@example.test/res'><body>1</body></message>")
        got = await b.recv()
        assert [e.name for e in got] == ["message", "r"]  # the server asks for an ack
        session = h.server.router.sessions_of(DOMAIN, "bob")[0]
        assert session.sm.unacked is not None and len(session.sm.unacked) == 1
        b.send(f"<a xmlns='{NS_SM}' h='1'/>")
        await b.recv()
        assert len(session.sm.unacked) == 0


async def test_enable_before_bind_fails() -> None:
    async with Harness() as h:
        c = h.client()
        await c.login_plain("alice")
        c.restart()
        await c.open()
        c.send(f"<enable xmlns='{NS_SM}'/>")
        failed = await c.wait_for("failed")
        assert failed.find("unexpected-request") is not None


async def test_resume_after_connection_loss_redelivers_unacked() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob", "phone")
        b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        [enabled] = await b.recv()
        a.send("<message to='bob@example.test/phone'><body>unacked</body></message>")
        await b.recv()
        b.stream.connection_lost(ConnectionResetError())  # the network drops
        a.send("<message to='bob@example.test/phone'><body>while away</body></message>")
        await a.recv()
        assert a.received == [] and "error" not in a.raw.split("</stream:features>")[-1]
        b2 = h.client()
        await b2.login_plain("bob")
        b2.restart()
        await b2.open()
        b2.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
        got = await b2.recv()
        assert got[0].name == "resumed" and got[0].get("h") == "0"
        assert [e.find_text("body") for e in got if e.name == "message"] == [
            "unacked",
            "while away",
        ]
        sessions = h.server.router.sessions_of(DOMAIN, "bob")
        assert [s.stream_id for s in sessions] == [b2.stream.stream_id]
        a.send("<message to='bob@example.test/phone'><body>after</body></message>")
        assert [e.find_text("body") for e in await b2.recv() if e.name == "message"] == ["after"]


async def test_resume_with_wrong_account_or_id_fails() -> None:
    async with Harness() as h:
        b = await h.online("bob")
        b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        [enabled] = await b.recv()
        b.stream.connection_lost(None)
        thief = h.client()
        await thief.login_plain("carol")
        thief.restart()
        await thief.open()
        thief.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
        failed = await thief.wait_for("failed")
        assert failed.find("item-not-found") is not None


async def test_hibernation_timeout_sends_unacked_messages_offline() -> None:
    async with Harness(sm_resume_timeout_seconds=1) as h:
        a = await h.online("alice")
        b = await h.online("bob")
        b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        await b.recv()
        a.send("<message to='bob@example.test' type='chat'><body>keep me</body></message>")
        await b.recv()
        b.stream.connection_lost(None)
        await asyncio.sleep(1.2)
        assert h.server.router.sessions_of(DOMAIN, "bob") == []
        await asyncio.sleep(0.05)
        assert await h.backend.count(DOMAIN, "bob") == 1


async def test_nothing_follows_the_closing_tag_while_stanzas_are_unacked() -> None:
    """RFC 6120 §4.4: the closing tag is the last thing sent. An ack request (<r/>) used to
    follow it when stanzas were unacknowledged (found by xmpp.js over WebSocket, whose <a/>
    undercounts)."""
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        await b.recv()
        a.send("<message to='bob@example.test/res'><body>1</body></message>")
        assert [e.name for e in await b.recv()] == ["message", "r"]
        b.send(f"<a xmlns='{NS_SM}' h='0'/>")  # acknowledges nothing
        await b.recv()
        b.send("</stream:stream>")
        await asyncio.sleep(0.05)
        assert b.raw.endswith("</stream:stream>")
        assert b.transport.closed
