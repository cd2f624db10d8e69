"""The default module list: every IM module loads on a host, and they work together."""

from __future__ import annotations

import pytest

from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.caps import NS_CAPS
from imhost.xmpp.modules.carbons import NS_CARBONS
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.modules.presence import NS_PREAPPROVAL
from imhost.xmpp.modules.roster import NS_ROSTERVER
from imhost.xmpp.server import XmppServer

from ..harness import DOMAIN, HEADER, settings
from .conv import Harness, exchange, named, presences

pytestmark = pytest.mark.anyio

A = "alice@example.test"
B = "bob@example.test"


def test_the_server_loads_the_default_list() -> None:
    assert XmppServer.with_memory_backend(settings(), MemoryBackend()).module_classes == (
        DEFAULT_MODULES
    )
    names = [m.name for m in DEFAULT_MODULES]
    assert len(names) == len(set(names))
    assert set(names) == {
        "roster",
        "presence",
        "blocking",
        "carbons",
        "csi",
        "offline",
        "ping",
        "version",
        "vcard",
        "private",
        "register",
        "disco",
        "caps",
        "muc",
        "mam",
    }


async def test_every_module_loads_on_every_host() -> None:
    async with Harness(modules=DEFAULT_MODULES) as h:
        for domain in (DOMAIN, "other.test"):
            loaded = [m.name for m in h.server.router.hosts[domain].modules]
            assert loaded == [m.name for m in DEFAULT_MODULES]


async def test_stream_features_after_auth_with_every_module() -> None:
    async with Harness(modules=DEFAULT_MODULES) as h:
        c = h.client()
        await c.login_plain("alice")
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        features = await c.wait_for("features")
        for name, ns in (("ver", NS_ROSTERVER), ("sub", NS_PREAPPROVAL), ("c", NS_CAPS)):
            assert features.find(name, ns) is not None, name


async def test_a_day_in_the_life_with_every_module() -> None:
    async with Harness(modules=DEFAULT_MODULES) as h:
        phone = await h.online("alice", "phone")
        desktop = await h.online("alice", "desktop")
        bob = await h.online("bob")
        for c in (phone, desktop, bob):
            await exchange(c, "<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>")
        await exchange(phone, f"<iq type='set' id='c1'><enable xmlns='{NS_CARBONS}'/></iq>")
        # subscription both ways
        desktop.send(f"<presence to='{B}' type='subscribe'/>")
        await bob.recv()
        bob.send(f"<presence to='{A}' type='subscribed'/>")
        bob.send(f"<presence to='{A}' type='subscribe'/>")
        await desktop.recv()
        desktop.send(f"<presence to='{B}' type='subscribed'/>")
        for c in (phone, desktop, bob):
            await c.recv(40)
        _, alice_items = await h.backend.get_roster(DOMAIN, "alice")
        assert [(i.jid, i.subscription) for i in alice_items] == [(B, "both")]
        # bob's status reaches both of alice's resources
        bob.send("<presence><show>away</show></presence>")
        for c in (phone, desktop):
            assert [p.find_text("show") for p in presences(await c.recv())] == ["away"]
        # a chat to the desktop is copied to the phone
        bob.send(f"<message to='{A}/desktop' type='chat'><body>lunch?</body></message>")
        assert named(await desktop.recv(), "message")[0].find_text("body") == "lunch?"
        assert named(await phone.recv(), "message")[0].find("received", NS_CARBONS) is not None
        # alice blocks bob: he sees her leave and cannot write any more
        await exchange(
            desktop,
            f"<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='{B}'/>"
            "</block></iq>",
        )
        gone = presences(await bob.recv())
        assert sorted(p.get("from", "") for p in gone if p.get("type") == "unavailable") == [
            f"{A}/desktop",
            f"{A}/phone",
        ]
        bob.send(f"<message to='{A}' type='chat' id='m9'><body>hello?</body></message>")
        [err] = named(await bob.recv(), "message", type="error")
        assert err.get("id") == "m9"
        assert named(await phone.recv(), "message") == []
        assert named(await desktop.recv(), "message") == []
