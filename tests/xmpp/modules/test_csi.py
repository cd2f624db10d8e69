"""XEP-0352 conversations: presence held while inactive, everything else immediate."""

from __future__ import annotations

import base64

import pytest

from imhost.xmpp.core.xml import NS_SASL, Element
from imhost.xmpp.modules import csi
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.csi import NS_CSI, CsiModule
from imhost.xmpp.modules.presence import PresenceModule
from imhost.xmpp.modules.roster import RosterModule
from imhost.xmpp.ports import RosterItem

from ..harness import DOMAIN, HEADER, PASSWORD
from .conv import Client, Harness, exchange, named, presences

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RosterModule, PresenceModule, CsiModule]
A = "alice@example.test"
B = "bob@example.test"
C = "carol@example.test"


async def subscribed(h: Harness, *contacts: str) -> tuple[Client, list[Client]]:
    """alice online, subscribed both ways with each contact (online too)."""
    for contact in contacts:
        await h.backend.set_item(
            DOMAIN, "alice", RosterItem(f"{contact}@{DOMAIN}", subscription="both")
        )
        await h.backend.set_item(DOMAIN, contact, RosterItem(A, subscription="both"))
    alice = await h.online("alice")
    others = [await h.online(contact) for contact in contacts]
    for c in (alice, *others):
        await c.recv()
    return alice, others


def shows_from(els: list[Element], sender: str) -> list[str | None]:
    """The <show/> (or the type, for unavailable) of each presence from ``sender``'s JIDs."""
    out: list[str | None] = []
    for p in presences(els):
        if p.get("from", "").split("/")[0] == sender:
            out.append(p.find_text("show") if p.get("type") is None else p.get("type"))
    return out


async def test_csi_is_a_stream_feature_after_authentication_only() -> None:
    async with Harness(modules=MODULES) as h:
        c = h.client()
        [before] = await c.open()
        assert before.name == "features" and before.find("csi", NS_CSI) is None
        blob = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{blob}</auth>")
        assert (await c.wait_for_any(("success", "failure"))).name == "success"
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        after = await c.wait_for("features")
        assert after.find("csi", NS_CSI) is not None


async def test_inactive_client_gets_the_latest_presence_per_contact_when_active() -> None:
    async with Harness(modules=MODULES) as h:
        alice, [bob] = await subscribed(h, "bob")
        alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        assert await alice.recv() == []  # no answer to CSI elements (XEP-0352 §4)
        for show in ("away", "xa", "dnd"):
            bob.send(f"<presence><show>{show}</show></presence>")
        bob.send(f"<message to='{A}' type='chat'><body>now</body></message>")
        got = await alice.recv()
        assert shows_from(got, B) == []
        assert [m.find_text("body") for m in named(got, "message")] == ["now"]
        alice.send(f"<active xmlns='{NS_CSI}'/>")
        assert shows_from(await alice.recv(), B) == ["dnd"]


async def test_presence_flows_at_once_again_after_active() -> None:
    async with Harness(modules=MODULES) as h:
        alice, [bob] = await subscribed(h, "bob")
        alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        alice.send(f"<active xmlns='{NS_CSI}'/>")
        assert await alice.recv() == []  # nothing was held
        bob.send("<presence><show>away</show></presence>")
        assert shows_from(await alice.recv(), B) == ["away"]


async def test_unavailable_is_held_too_and_each_contact_keeps_its_latest() -> None:
    async with Harness(modules=MODULES) as h:
        alice, [bob, carol] = await subscribed(h, "bob", "carol")
        alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        bob.send("<presence><show>away</show></presence>")
        carol.send("<presence><show>xa</show></presence>")
        bob.send("<presence type='unavailable'/>")
        assert presences(await alice.recv()) == []
        alice.send(f"<active xmlns='{NS_CSI}'/>")
        released = await alice.recv()
        assert shows_from(released, B) == ["unavailable"]
        assert shows_from(released, C) == ["xa"]


async def test_subscription_requests_and_iq_are_never_held() -> None:
    async with Harness(modules=MODULES) as h:
        alice, [bob] = await subscribed(h, "bob")
        alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        bob.send(f"<presence to='{A}' type='unsubscribe'/>")
        got = await alice.recv()
        assert [p.get("type") for p in presences(got)] == ["unsubscribe"]
        reply, _ = await exchange(
            alice, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
        )
        assert reply.get("type") == "result"


async def test_held_presences_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_HELD contacts the held presences go out (memory stays bounded), and the client
    stays inactive: later updates are held again."""
    monkeypatch.setattr(csi, "MAX_HELD", 1)
    async with Harness(modules=MODULES) as h:
        alice, [bob, carol] = await subscribed(h, "bob", "carol")
        alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        bob.send("<presence><show>away</show></presence>")
        assert presences(await alice.recv()) == []
        carol.send("<presence><show>xa</show></presence>")
        flushed = await alice.recv()
        assert (shows_from(flushed, B), shows_from(flushed, C)) == (["away"], ["xa"])
        bob.send("<presence><show>dnd</show></presence>")
        assert presences(await alice.recv()) == []


async def test_held_presence_is_released_by_the_module_api_too() -> None:
    async with Harness(modules=MODULES) as h:
        alice, [bob] = await subscribed(h, "bob")
        module = h.server.router.hosts[DOMAIN].modules[-1]
        assert isinstance(module, CsiModule)
        module.set_state(alice.stream, active=False)
        bob.send("<presence><show>away</show></presence>")
        bob.send("<presence><show>chat</show></presence>")
        assert shows_from(await alice.recv(), B) == []
        module.set_state(alice.stream, active=True)
        assert shows_from(await alice.recv(), B) == ["chat"]
