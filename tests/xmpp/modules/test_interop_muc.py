"""Interop of the conference service (XEP-0045) with clients we did not write: slixmpp's
XEP-0045 plugin (create and configure, join, message, history, kick) and aioxmpp's MUC
service (join, message), against the engine on loopback with every default module."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from typing import Any

import pytest

from ..conftest import LiveServer

slixmpp = pytest.importorskip("slixmpp")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    aioxmpp = pytest.importorskip("aioxmpp")
    import aioxmpp.security_layer as asl
    from aioxmpp import connector
    from aioxmpp import muc as aiomuc

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)
logging.getLogger("aioxmpp").setLevel(logging.CRITICAL)

ROOM = "lounge@conference.example.test"


class Bot(slixmpp.ClientXMPP):  # type: ignore[misc,name-defined]
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.started = asyncio.Event()
        self.groupchat: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_plaintext = False
        for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0359"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("groupchat_message", self.groupchat.put_nowait)
        self.add_event_handler("groupchat_presence", self.presences.put_nowait)

    async def _start(self, _: Any) -> None:
        self.send_presence()
        self.started.set()

    @property
    def muc(self) -> Any:
        return self.plugin["xep_0045"]


async def connect(live: LiveServer, user: str) -> Bot:
    bot = Bot(f"{user}@{live.domain}/slix", live.password)
    bot.connect("127.0.0.1", live.port)
    await asyncio.wait_for(bot.started.wait(), 10)
    return bot


async def close(*bots: Bot) -> None:
    for bot in bots:
        bot.disconnect(wait=0.2)
    await asyncio.sleep(0.3)


async def next_body(bot: Bot) -> Any:
    while True:
        msg = await asyncio.wait_for(bot.groupchat.get(), 5)
        if msg["body"]:
            return msg


async def create_room(owner: Bot, nick: str) -> None:
    """Join (the room is created locked, status 201), then submit its configuration form."""
    owner.muc.join_muc(slixmpp.JID(ROOM), nick)
    first = await asyncio.wait_for(owner.presences.get(), 5)
    codes = {int(c) for c in first["muc"]["status_codes"]}
    assert {110, 201} <= codes
    form = await owner.muc.get_room_config(ROOM)
    assert "muc#roomconfig_persistentroom" in form.get_fields()
    form.set_values({"muc#roomconfig_roomname": "Lounge"})
    await owner.muc.set_room_config(ROOM, form)


async def test_slixmpp_creates_joins_talks_gets_history_and_kicks(
    live_im: LiveServer,
) -> None:
    alice = await connect(live_im, "alice")
    bob = await connect(live_im, "bob")
    try:
        await create_room(alice, "Alice")
        info = await alice.plugin["xep_0030"].get_info(jid=ROOM)
        features = set(info["disco_info"]["features"])
        assert "http://jabber.org/protocol/muc" in features and "muc_temporary" in features
        for n in range(3):
            alice.send_message(mto=ROOM, mbody=f"before {n}", mtype="groupchat")
            await next_body(alice)
        own, subject, occupants, old = await bob.muc.join_muc_wait(
            slixmpp.JID(ROOM), "Bob", maxstanzas=2, timeout=10
        )
        assert [m["body"] for m in old] == ["before 1", "before 2"]
        assert own["muc"]["role"] == "participant"
        assert {p["from"].resource for p in occupants} == {"Alice", "Bob"}
        assert subject["from"].bare == ROOM and subject["type"] == "groupchat"
        bob.send_message(mto=ROOM, mbody="hello from slixmpp", mtype="groupchat")
        got = await next_body(alice)
        assert got["body"] == "hello from slixmpp" and got["from"].resource == "Bob"
        assert got["stanza_id"]["by"] == ROOM
        # kick bob: he gets his unavailable presence with 307
        while not bob.presences.empty():
            bob.presences.get_nowait()
        await alice.muc.set_role(ROOM, "Bob", "none", reason="enough")
        while True:
            pres = await asyncio.wait_for(bob.presences.get(), 5)
            if pres["type"] == "unavailable" and pres["from"].resource == "Bob":
                break
        assert 307 in {int(c) for c in pres["muc"]["status_codes"]}
    finally:
        await close(alice, bob)


def aio_client(live: LiveServer, user: str) -> Any:
    async def password(*_: Any) -> str:
        return live.password

    layer = asl.SecurityLayer(
        asl.default_ssl_context, asl._NullVerifier, True, (asl.PasswordSASLProvider(password),)
    )
    return aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(f"{user}@{live.domain}/aio"),
        layer,
        override_peer=[("127.0.0.1", live.port, connector.STARTTLSConnector())],
    )


async def test_aioxmpp_joins_and_talks_with_a_slixmpp_owner(live_im: LiveServer) -> None:
    alice = await connect(live_im, "alice")
    try:
        await create_room(alice, "Alice")
        carol = aio_client(live_im, "carol")
        async with carol.connected():
            muc = carol.summon(aiomuc.MUCClient)
            room, future = muc.join(aioxmpp.JID.fromstr(ROOM), "Carol")
            await asyncio.wait_for(future, 10)
            assert room.me is not None and room.me.nick == "Carol"
            assert {m.nick for m in room.members} == {"Alice", "Carol"}
            received: asyncio.Queue[Any] = asyncio.Queue()
            room.on_message.connect(lambda msg, member, source, **_: received.put_nowait(msg))
            alice.send_message(mto=ROOM, mbody="to aioxmpp", mtype="groupchat")
            msg = await asyncio.wait_for(received.get(), 5)
            while msg.body.any() != "to aioxmpp":
                msg = await asyncio.wait_for(received.get(), 5)
            reply = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
            reply.body[None] = "from aioxmpp"
            await room.send_message(reply)
            got = await next_body(alice)
            while got["body"] != "from aioxmpp":
                got = await next_body(alice)
            assert got["from"].resource == "Carol"
    finally:
        await close(alice)
