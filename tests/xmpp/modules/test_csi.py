"""XEP-0352 conversations: presence held while inactive, messages immediate."""

from __future__ import annotations

import pytest

from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.csi import NS_CSI, CsiModule
from imhost.xmpp.modules.presence import PresenceModule
from imhost.xmpp.modules.roster import RosterModule
from imhost.xmpp.ports import RosterItem

from ..harness import DOMAIN, HEADER
from .conv import Client, Harness, named, presences

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RosterModule, PresenceModule, CsiModule]
A = "alice@example.test"


def core_dispatches_nonzas(h: Harness) -> bool:
    module = h.server.router.hosts[DOMAIN].modules[-1]
    assert isinstance(module, CsiModule)
    return module.supported


async def subscribed_pair(h: Harness) -> tuple[Client, Client]:
    await h.backend.set_item(DOMAIN, "alice", RosterItem("bob@example.test", subscription="both"))
    await h.backend.set_item(DOMAIN, "bob", RosterItem(A, subscription="both"))
    alice = await h.online("alice")
    bob = await h.online("bob")
    await alice.recv()
    await bob.recv()
    return alice, bob


async def test_csi_feature_only_when_the_core_can_take_the_nonzas() -> None:
    async with Harness(modules=MODULES) as h:
        c = h.client()
        await c.login_plain("alice")
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        features = await c.wait_for("features")
        assert (features.find("csi", NS_CSI) is not None) == core_dispatches_nonzas(h)


async def test_inactive_client_gets_the_latest_presence_per_contact_when_active() -> None:
    async with Harness(modules=MODULES) as h:
        if not core_dispatches_nonzas(h):
            pytest.skip("the core does not dispatch <inactive/> yet (requested)")
        alice, bob = await subscribed_pair(h)
        alice.send(f"<inactive xmlns='{NS_CSI}'/>")
        await alice.recv()
        for show in ("away", "xa", "dnd"):
            bob.send(f"<presence><show>{show}</show></presence>")
        bob.send(f"<message to='{A}' type='chat'><body>now</body></message>")
        got = await alice.recv()
        assert presences(got) == []
        assert [m.find_text("body") for m in named(got, "message")] == ["now"]
        alice.send(f"<active xmlns='{NS_CSI}'/>")
        held = presences(await alice.recv())
        assert [p.find_text("show") for p in held] == ["dnd"]


async def test_held_presence_is_released_by_the_module_api_too() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await subscribed_pair(h)
        module = h.server.router.hosts[DOMAIN].modules[-1]
        assert isinstance(module, CsiModule)
        module.set_state(alice.stream, active=False)
        bob.send("<presence><show>away</show></presence>")
        bob.send("<presence><show>chat</show></presence>")
        bob.send(f"<presence to='{A}' type='unsubscribe'/>")  # subscription traffic is not held
        got = await alice.recv()
        assert [p.get("type") for p in presences(got)] == ["unsubscribe"]
        module.set_state(alice.stream, active=True)
        assert [p.find_text("show") for p in presences(await alice.recv())] == ["chat"]
