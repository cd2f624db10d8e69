"""Interop of the IM modules with slixmpp, a client we did not write: roster and
subscriptions between two accounts, presence, carbons to a second resource, blocking, vCard,
private XML storage refused past the plan's storage limit."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from typing import Any

import pytest

from imhost.xmpp.ports import HostLimits

from ..conftest import LiveServer

slixmpp = pytest.importorskip("slixmpp")

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)

A = "alice@example.test"
B = "bob@example.test"


class Bot(slixmpp.ClientXMPP):  # type: ignore[misc,name-defined]
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.started = asyncio.Event()
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.carbons_received: asyncio.Queue[Any] = asyncio.Queue()
        self.carbons_sent: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_plaintext = False
        self.auto_authorize = None  # answer subscription requests by hand
        self.auto_subscribe = False
        for plugin in ("xep_0030", "xep_0049", "xep_0054", "xep_0191", "xep_0280", "xep_0092"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)
        self.add_event_handler("carbon_received", lambda m: self.carbons_received.put_nowait(m))
        self.add_event_handler("carbon_sent", lambda m: self.carbons_sent.put_nowait(m))
        # slixmpp fires presence_<show> per show value; changed_status covers them all
        self.add_event_handler("changed_status", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_subscribe", lambda p: self.requests.put_nowait(p))

    async def _start(self, _: Any) -> None:
        await self.get_roster()
        self.send_presence()
        self.started.set()

    def _message(self, msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.messages.put_nowait(msg)


async def connect(live: LiveServer, user: str, resource: str = "slix") -> Bot:
    bot = Bot(f"{user}@{live.domain}/{resource}", live.password)
    bot.connect("127.0.0.1", live.port)
    await asyncio.wait_for(bot.started.wait(), 10)
    return bot


async def close(*bots: Bot) -> None:
    for bot in bots:
        bot.disconnect(wait=0.2)
    await asyncio.sleep(0.3)


async def presence_from(bot: Bot, jid: str, ptype: str = "available") -> Any:
    while True:
        p = await asyncio.wait_for(bot.presences.get(), 5)
        # slixmpp reports an available presence's <show/> as its type
        kind = "unavailable" if p["type"] == "unavailable" else "available"
        if str(p["from"]).startswith(jid) and kind == ptype:
            return p


async def until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_roster_and_mutual_subscription_between_two_accounts(live_im: LiveServer) -> None:
    alice = await connect(live_im, "alice")
    bob = await connect(live_im, "bob")
    alice.update_roster(B, name="Bob", groups=["Friends"])
    await until(lambda: B in alice.client_roster)
    assert alice.client_roster[B]["name"] == "Bob"
    assert alice.client_roster[B]["groups"] == ["Friends"]
    alice.send_presence_subscription(pto=B)
    request = await asyncio.wait_for(bob.requests.get(), 5)
    assert str(request["from"]) == A
    bob.send_presence(pto=A, ptype="subscribed")
    bob.send_presence_subscription(pto=A)
    request = await asyncio.wait_for(alice.requests.get(), 5)
    alice.send_presence(pto=B, ptype="subscribed")
    await until(lambda: alice.client_roster[B]["subscription"] == "both")
    await until(lambda: bob.client_roster[A]["subscription"] == "both")
    _, stored = await live_im.backend.get_roster(live_im.domain, "alice")
    assert [(i.jid, i.subscription, i.name) for i in stored] == [(B, "both", "Bob")]
    await close(alice, bob)


async def test_presence_between_subscribed_contacts(live_im: LiveServer) -> None:
    from imhost.xmpp.ports import RosterItem

    await live_im.backend.set_item(live_im.domain, "alice", RosterItem(B, subscription="both"))
    await live_im.backend.set_item(live_im.domain, "bob", RosterItem(A, subscription="both"))
    alice = await connect(live_im, "alice")
    bob = await connect(live_im, "bob")
    await presence_from(alice, B)  # bob's initial presence reaches alice
    bob.send_presence(pshow="away", pstatus="lunch")
    while True:
        update = await presence_from(alice, B)
        if update["show"] == "away":
            break
    assert update["status"] == "lunch"
    await close(bob)
    gone = await presence_from(alice, B, "unavailable")
    assert str(gone["from"]) == f"{B}/slix"
    await close(alice)


async def test_carbons_reach_the_second_resource(live_im: LiveServer) -> None:
    phone = await connect(live_im, "alice", "phone")
    desktop = await connect(live_im, "alice", "desktop")
    bob = await connect(live_im, "bob")
    await phone.plugin["xep_0280"].enable()
    bob.send_message(mto=f"{A}/desktop", mbody="to the desktop", mtype="chat")
    got = await asyncio.wait_for(desktop.messages.get(), 5)
    assert got["body"] == "to the desktop"
    copy = await asyncio.wait_for(phone.carbons_received.get(), 5)
    assert copy["carbon_received"]["body"] == "to the desktop"
    desktop.send_message(mto=B, mbody="from the desktop", mtype="chat")
    sent = await asyncio.wait_for(phone.carbons_sent.get(), 5)
    assert sent["carbon_sent"]["body"] == "from the desktop"
    assert (await asyncio.wait_for(bob.messages.get(), 5))["body"] == "from the desktop"
    await close(phone, desktop, bob)


async def test_blocking_with_slixmpp(live_im: LiveServer) -> None:
    alice = await connect(live_im, "alice")
    bob = await connect(live_im, "bob")
    await alice.plugin["xep_0191"].block(slixmpp.JID(B))
    blocked = await alice.plugin["xep_0191"].get_blocked()
    assert {str(i["jid"]) for i in blocked["blocklist"]["items"]} == {B}
    bob.send_message(mto=A, mbody="let me in", mtype="chat")
    await asyncio.sleep(0.3)
    assert alice.messages.empty()
    await alice.plugin["xep_0191"].unblock(slixmpp.JID(B))
    bob.send_message(mto=A, mbody="thanks", mtype="chat")
    assert (await asyncio.wait_for(alice.messages.get(), 5))["body"] == "thanks"
    assert await live_im.backend.get_blocklist(live_im.domain, "alice") == set()
    await close(alice, bob)


async def test_vcard_with_slixmpp(live_im: LiveServer) -> None:
    alice = await connect(live_im, "alice")
    bob = await connect(live_im, "bob")
    vcard = alice.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Liddell"
    vcard["NICKNAME"] = "alice"
    await alice.plugin["xep_0054"].publish_vcard(vcard)
    answer = await bob.plugin["xep_0054"].get_vcard(slixmpp.JID(A), local=False)
    assert answer["vcard_temp"]["FN"] == "Alice Liddell"
    await close(alice, bob)


async def test_disco_and_version_with_slixmpp(live_im: LiveServer) -> None:
    alice = await connect(live_im, "alice")
    info = await alice.plugin["xep_0030"].get_info(jid=live_im.domain)
    features = set(info["disco_info"]["features"])
    assert {"urn:xmpp:carbons:2", "urn:xmpp:blocking", "vcard-temp", "urn:xmpp:ping"} <= features
    version = await alice.plugin["xep_0092"].get_version(slixmpp.JID(live_im.domain))
    assert version["software_version"]["name"] == "imhost"
    from imhost.xmpp.modules.version import CLIENT_VERSION

    sessions = live_im.server.router.hosts[live_im.domain].sessions["alice"]
    await until(lambda: sessions["slix"].get(CLIENT_VERSION) is not None)
    client = sessions["slix"].get(CLIENT_VERSION)
    assert client is not None and client.name == "Slixmpp"
    await close(alice)


class Prefs(slixmpp.xmlstream.ElementBase):  # type: ignore[misc,name-defined]
    name = "prefs"
    namespace = "urn:example:prefs"
    plugin_attrib = "prefs"
    interfaces = {"theme"}
    sub_interfaces = interfaces


async def test_private_storage_past_the_storage_limit_with_slixmpp(live_im: LiveServer) -> None:
    host = live_im.backend.hosts[live_im.domain]
    live_im.backend.put_host(
        replace(host, limits=HostLimits(message_rate=None, max_storage_bytes=1000))
    )
    alice = await connect(live_im, "alice")
    private = alice.plugin["xep_0049"]
    private.register(Prefs)
    small = Prefs()
    small["theme"] = "dark"
    await private.store(small)
    large = Prefs()
    large["theme"] = "x" * 2000
    with pytest.raises(slixmpp.exceptions.IqError) as refused:
        await private.store(large)
    error = refused.value.iq["error"]
    assert (error["condition"], error["type"]) == ("resource-constraint", "wait")
    assert "storage of example.test is full" in error["text"]
    answer = await private.retrieve("prefs")
    assert answer["private"]["prefs"]["theme"] == "dark"
    await close(alice)
