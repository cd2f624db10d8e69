"""XEP-0280 conversations: enable/disable, sent and received copies, hints."""

from __future__ import annotations

import pytest

from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.blocking import BlockingModule
from imhost.xmpp.modules.carbons import NS_CARBONS, NS_FORWARD, CarbonsModule
from imhost.xmpp.modules.roster import RosterModule

from .conv import Client, Harness, error_of, exchange, named

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RosterModule, BlockingModule, CarbonsModule]
A = "alice@example.test"
B = "bob@example.test"
ENABLE = "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
DISABLE = "<iq type='set' id='c2'><disable xmlns='urn:xmpp:carbons:2'/></iq>"


def carbon(el: Element, direction: str) -> Element:
    """The forwarded message inside a carbon copy (asserting its envelope)."""
    wrapper = el.find(direction, NS_CARBONS)
    assert wrapper is not None, el
    forwarded = wrapper.find("forwarded", NS_FORWARD)
    assert forwarded is not None
    inner = forwarded.find("message")
    assert inner is not None and inner.ns == "jabber:client"
    return inner


async def three(h: Harness) -> tuple[Client, Client, Client]:
    """alice on a phone (carbons on) and a desktop, bob on one resource."""
    phone = await h.online("alice", "phone")
    desktop = await h.online("alice", "desktop")
    bob = await h.online("bob")
    reply, _ = await exchange(phone, ENABLE)
    assert reply.get("type") == "result"
    for c in (phone, desktop, bob):
        await c.recv()
    return phone, desktop, bob


async def test_received_messages_are_copied_to_other_enabled_resources() -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, bob = await three(h)
        bob.send(f"<message to='{A}/desktop' type='chat' id='m1'><body>hi</body></message>")
        [direct] = named(await desktop.recv(), "message")
        assert direct.find_text("body") == "hi"
        [copy] = named(await phone.recv(), "message")
        assert copy.get("from") == A and copy.get("to") == f"{A}/phone"
        inner = carbon(copy, "received")
        assert inner.get("from") == f"{B}/res" and inner.get("to") == f"{A}/desktop"
        assert inner.find_text("body") == "hi"


async def test_sent_messages_are_copied_to_other_enabled_resources() -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, bob = await three(h)
        desktop.send(f"<message to='{B}' type='chat' id='m2'><body>from desk</body></message>")
        assert named(await bob.recv(), "message")[0].find_text("body") == "from desk"
        [copy] = named(await phone.recv(), "message")
        inner = carbon(copy, "sent")
        assert inner.get("from") == f"{A}/desktop" and inner.get("to") == B
        assert named(await desktop.recv(), "message") == []  # no copy to the sender


async def test_a_resource_without_carbons_gets_no_copies() -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, bob = await three(h)
        bob.send(f"<message to='{A}/phone' type='chat'><body>only phone</body></message>")
        assert len(named(await phone.recv(), "message")) == 1
        assert named(await desktop.recv(), "message") == []


async def test_message_to_the_bare_jid_copies_to_enabled_resources_that_did_not_get_it() -> None:
    async with Harness(modules=MODULES) as h:
        phone = await h.online("alice", "phone", priority=0)
        desktop = await h.online("alice", "desktop", priority=5)
        bob = await h.online("bob")
        await exchange(phone, ENABLE)
        bob.send(f"<message to='{A}' type='chat'><body>bare</body></message>")
        [direct] = named(await desktop.recv(), "message")
        assert direct.find(("received"), NS_CARBONS) is None
        [copy] = named(await phone.recv(), "message")
        assert carbon(copy, "received").find_text("body") == "bare"


async def test_disable_stops_copies() -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, bob = await three(h)
        reply, _ = await exchange(phone, DISABLE)
        assert reply.get("type") == "result"
        bob.send(f"<message to='{A}/desktop' type='chat'><body>x</body></message>")
        await desktop.recv()
        assert named(await phone.recv(), "message") == []


@pytest.mark.parametrize(
    "message",
    [
        "<message to='{to}' type='chat'><body>p</body>"
        "<private xmlns='urn:xmpp:carbons:2'/></message>",
        "<message to='{to}' type='chat'><body>p</body><no-copy xmlns='urn:xmpp:hints'/></message>",
        "<message to='{to}' type='headline'><body>news</body></message>",
        "<message to='{to}' type='normal'><subject>no body</subject></message>",
        "<message to='{to}' type='groupchat'><body>g</body></message>",
    ],
    ids=["private", "no-copy", "headline", "normal-without-body", "groupchat"],
)
async def test_ineligible_messages_are_not_copied(message: str) -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, bob = await three(h)
        bob.send(message.format(to=f"{A}/desktop"))
        desktop.send(message.format(to=f"{B}/res"))
        await desktop.recv()
        await bob.recv()
        assert named(await phone.recv(), "message") == []


async def test_chat_state_notifications_are_copied() -> None:
    async with Harness(modules=MODULES) as h:
        phone, _desktop, bob = await three(h)
        bob.send(
            f"<message to='{A}/desktop' type='normal'>"
            "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        [copy] = named(await phone.recv(), "message")
        carbon(copy, "received")


async def test_a_blocked_message_is_not_copied() -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, bob = await three(h)
        await exchange(
            desktop,
            f"<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'>"
            f"<item jid='{B}'/></block></iq>",
        )
        await phone.recv()
        desktop.send(f"<message to='{B}' type='chat'><body>x</body></message>")
        bob.send(f"<message to='{A}/desktop' type='chat'><body>y</body></message>")
        await bob.recv()
        assert named(await phone.recv(), "message") == []


async def test_enabling_for_another_account_is_forbidden() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='set' id='c9' to='{B}'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
        )
        assert error_of(reply) == "forbidden"


async def test_carbons_are_advertised_in_disco() -> None:
    from imhost.xmpp.modules.disco import DiscoModule

    async with Harness(modules=[*MODULES, DiscoModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice,
            "<iq type='get' id='d' to='example.test'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        query = reply.find("query")
        assert query is not None
        assert NS_CARBONS in {f.get("var") for f in query.elements() if f.name == "feature"}


async def test_a_message_between_own_resources_is_not_copied_to_its_recipient() -> None:
    async with Harness(modules=MODULES) as h:
        phone, desktop, _bob = await three(h)
        await exchange(desktop, ENABLE.replace("c1", "c3"))
        desktop.send(f"<message to='{A}/phone' type='chat'><body>note to self</body></message>")
        got = named(await phone.recv(), "message")
        assert [m.find_text("body") for m in got] == ["note to self"]  # the message, no carbon
        assert named(await desktop.recv(), "message") == []
