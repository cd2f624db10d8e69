"""Interop with slixmpp, a client we did not write: every SASL mechanism over STARTTLS and
Direct TLS, messages both ways, offline delivery, XEP-0198 resumption."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

slixmpp = pytest.importorskip("slixmpp")

from .conftest import LiveServer  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class Bot(slixmpp.ClientXMPP):  # type: ignore[misc]
    def __init__(self, jid: str, password: str, **kw: Any) -> None:
        super().__init__(jid, password, **kw)
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.resumed = asyncio.Event()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("session_resumed", lambda *_: self.resumed.set())
        self.add_event_handler("failed_auth", lambda *_: self.failed.set())
        self.add_event_handler("message", self._message)

    async def _start(self, _: Any) -> None:
        self.send_presence()
        self.started.set()

    def _message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal"):
            self.inbox.put_nowait(msg)


def make_bot(
    live: LiveServer,
    user: str,
    *,
    direct_tls: bool = False,
    mech: str | None = None,
    password: str | None = None,
    sm: bool = False,
    resource: str = "slix",
) -> Bot:
    kw: dict[str, Any] = {}
    if mech:
        kw["sasl_mech"] = mech
    bot = Bot(f"{user}@{live.domain}/{resource}", password or live.password, **kw)
    bot.enable_direct_tls = direct_tls
    bot.enable_starttls = not direct_tls
    bot.enable_plaintext = False
    if mech and mech.endswith("-PLUS"):
        # slixmpp binds with tls-unique only, which exists up to TLS 1.2 (RFC 9266 §1)
        bot.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
    if sm:
        bot.register_plugin("xep_0198")
    return bot


async def connect(bot: Bot, live: LiveServer, direct_tls: bool = False) -> None:
    bot.connect("127.0.0.1", live.tls_port if direct_tls else live.port)
    await asyncio.wait_for(bot.started.wait(), 10)


async def close(*bots: Bot) -> None:
    for bot in bots:
        bot.disconnect(wait=0.2)
    await asyncio.sleep(0.3)


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize(
    "mech", ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"]
)
async def test_login_with_each_mechanism(live: LiveServer, mech: str, direct_tls: bool) -> None:
    bot = make_bot(live, "alice", direct_tls=direct_tls, mech=mech)
    await connect(bot, live, direct_tls)
    assert str(bot.boundjid).startswith("alice@example.test/")
    attempts = [a for a in live.backend.auth_log if a.localpart == "alice"]
    assert attempts[-1].success and attempts[-1].mechanism == mech
    await close(bot)


async def test_wrong_password_fails(live: LiveServer) -> None:
    bot = make_bot(live, "alice", password="wrong password!")
    bot.connect("127.0.0.1", live.port)
    await asyncio.wait_for(bot.failed.wait(), 10)
    assert not bot.started.is_set()
    bot.abort()


async def test_messages_both_ways(live: LiveServer) -> None:
    alice = make_bot(live, "alice")
    bob = make_bot(live, "bob", direct_tls=True)
    await connect(alice, live)
    await connect(bob, live, direct_tls=True)
    alice.send_message(mto="bob@example.test", mbody="hello <bob> & co", mtype="chat")
    got = await asyncio.wait_for(bob.inbox.get(), 5)
    assert got["body"] == "hello <bob> & co"
    assert str(got["from"]) == str(alice.boundjid)
    bob.send_message(mto=str(alice.boundjid), mbody="hi alice", mtype="chat")
    back = await asyncio.wait_for(alice.inbox.get(), 5)
    assert back["body"] == "hi alice"
    await close(alice, bob)


async def test_offline_delivery_with_delay(live: LiveServer) -> None:
    alice = make_bot(live, "alice")
    await connect(alice, live)
    alice.send_message(mto="carol@example.test", mbody="while you were away", mtype="chat")
    await asyncio.sleep(0.3)
    assert await live.backend.count("example.test", "carol") == 1
    carol = make_bot(live, "carol")
    carol.register_plugin("xep_0203")
    await connect(carol, live)
    msg = await asyncio.wait_for(carol.inbox.get(), 5)
    assert msg["body"] == "while you were away"
    assert msg["delay"]["stamp"] is not None
    await close(alice, carol)


async def test_stream_resumption_after_dropped_connection(live: LiveServer) -> None:
    alice = make_bot(live, "alice")
    bob = make_bot(live, "bob", sm=True)
    await connect(alice, live)
    await connect(bob, live)
    await asyncio.sleep(0.2)
    assert bob.plugin["xep_0198"].sm_id
    old_jid = str(bob.boundjid)
    bob.abort()  # the TCP connection drops without a closing handshake
    await asyncio.sleep(0.2)
    # while bob is away the session hibernates; a message to his full JID is queued
    alice.send_message(mto=old_jid, mbody="kept for you", mtype="chat")
    await asyncio.sleep(0.2)
    bob.connect("127.0.0.1", live.port)
    await asyncio.wait_for(bob.resumed.wait(), 10)
    msg = await asyncio.wait_for(bob.inbox.get(), 5)
    assert msg["body"] == "kept for you"
    assert str(bob.boundjid) == old_jid
    await close(alice, bob)
