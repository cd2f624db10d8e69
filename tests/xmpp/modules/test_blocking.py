"""XEP-0191 conversations: the list, block/unblock with pushes, and enforcement both ways."""

from __future__ import annotations

import pytest

from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.blocking import NS_BLOCKING, NS_BLOCKING_ERRORS, BlockingModule
from imhost.xmpp.modules.presence import PresenceModule
from imhost.xmpp.modules.roster import RosterModule
from imhost.xmpp.ports import RosterItem

from ..harness import DOMAIN
from .conv import Harness, error_of, exchange, named, presences

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RosterModule, PresenceModule, BlockingModule]
A = "alice@example.test"
B = "bob@example.test"
GET = "<iq type='get' id='list1'><blocklist xmlns='urn:xmpp:blocking'/></iq>"


def block(*jids: str, id_: str = "b1") -> str:
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    return f"<iq type='set' id='{id_}'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>"


def unblock(*jids: str, id_: str = "u1") -> str:
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    return f"<iq type='set' id='{id_}'><unblock xmlns='urn:xmpp:blocking'>{items}</unblock></iq>"


def listed(el: Element) -> list[str]:
    payload = next(el.elements())
    return [i.get("jid", "") for i in payload.elements()]


def is_blocked_error(el: Element) -> bool:
    err = el.find("error")
    return (
        error_of(el) == "not-acceptable"
        and err is not None
        and err.find("blocked", NS_BLOCKING_ERRORS) is not None
    )


async def test_block_is_stored_pushed_to_interested_resources_and_listed() -> None:
    async with Harness(modules=MODULES) as h:
        phone = await h.online("alice", "phone")
        desktop = await h.online("alice", "desktop")
        quiet = await h.online("alice", "quiet")
        await exchange(phone, GET)
        await exchange(desktop, GET)
        reply, pushes = await exchange(phone, block("Mallory@Example.Test", "spam.example"))
        assert reply.get("type") == "result"
        [push] = named(pushes, "iq", type="set")
        assert push.find("block", NS_BLOCKING) is not None
        assert listed(push) == ["mallory@example.test", "spam.example"]
        assert len(named(await desktop.recv(), "iq", type="set")) == 1
        assert named(await quiet.recv(), "iq") == []
        assert await h.backend.get_blocklist(DOMAIN, "alice") == {
            "mallory@example.test",
            "spam.example",
        }
        answer, _ = await exchange(desktop, GET.replace("list1", "list2"))
        assert listed(answer) == ["mallory@example.test", "spam.example"]


async def test_unblock_some_then_all() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.block(DOMAIN, "alice", ["x@example.test", "y@example.test", "z.test"])
        alice = await h.online("alice")
        await exchange(alice, GET)
        reply, pushes = await exchange(alice, unblock("y@example.test"))
        assert reply.get("type") == "result"
        assert listed(named(pushes, "iq", type="set")[0]) == ["y@example.test"]
        assert await h.backend.get_blocklist(DOMAIN, "alice") == {"x@example.test", "z.test"}
        reply, pushes = await exchange(alice, unblock(id_="u2"))
        [push] = named(pushes, "iq", type="set")
        assert push.find("unblock", NS_BLOCKING) is not None and listed(push) == []
        assert await h.backend.get_blocklist(DOMAIN, "alice") == set()
        answer, _ = await exchange(alice, GET.replace("list1", "list3"))
        assert listed(answer) == []


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (block(), "bad-request"),
        (block("a@b@c"), "jid-malformed"),
        (
            "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item/></block></iq>",
            "bad-request",
        ),
        (
            "<iq type='set' id='b1' to='bob@example.test'>"
            "<block xmlns='urn:xmpp:blocking'><item jid='x@example.test'/></block></iq>",
            "forbidden",
        ),
        (
            "<iq type='get' id='b1' to='bob@example.test'>"
            "<blocklist xmlns='urn:xmpp:blocking'/></iq>",
            "forbidden",
        ),
    ],
    ids=["empty-block", "bad-jid", "item-without-jid", "others-set", "others-get"],
)
async def test_invalid_block_requests_are_refused(xml: str, condition: str) -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, xml)
        assert error_of(reply) == condition
        assert await h.backend.get_blocklist(DOMAIN, "alice") == set()
        assert await h.backend.get_blocklist(DOMAIN, "bob") == set()


async def test_messages_from_a_blocked_jid_are_refused_with_service_unavailable() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, block(B))
        await bob.recv()
        for to in (A, f"{A}/res"):
            bob.send(f"<message to='{to}' type='chat' id='m1'><body>hi</body></message>")
            [err] = named(await bob.recv(), "message", type="error")
            assert error_of(err) == "service-unavailable"
            assert named(await alice.recv(), "message") == []


async def test_a_blocked_domain_blocks_every_account_on_it() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, block("example.test/res"))
        bob.send(f"<message to='{A}' type='chat'><body>hi</body></message>")
        assert named(await alice.recv(), "message") == []


async def test_messages_to_a_blocked_jid_are_not_acceptable_with_the_blocked_element() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, block(B))
        alice.send(f"<message to='{B}' type='chat' id='m2'><body>hi</body></message>")
        [err] = named(await alice.recv(), "message", type="error")
        assert is_blocked_error(err)
        assert named(await bob.recv(), "message") == []


async def test_directed_presence_to_a_blocked_jid_is_refused_and_from_it_dropped() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, block(B))
        await bob.recv()
        alice.send(f"<presence to='{B}'/>")
        [err] = named(await alice.recv(), "presence", type="error")
        assert is_blocked_error(err)
        bob.send(f"<presence to='{A}'/>")
        bob.send(f"<presence to='{A}' type='subscribe'/>")
        assert presences(await alice.recv()) == []
        assert presences(await bob.recv()) == []  # presence is dropped silently
        assert await h.backend.get_pending_in(DOMAIN, "alice") == {}


async def test_subscription_request_to_an_offline_user_who_blocked_the_sender_is_dropped() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.block(DOMAIN, "alice", [B])
        bob = await h.online("bob")
        bob.send(f"<presence to='{A}' type='subscribe'/>")
        await bob.recv()
        assert await h.backend.get_pending_in(DOMAIN, "alice") == {}


async def test_offline_message_from_a_blocked_jid_is_not_stored() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.block(DOMAIN, "alice", [B])
        bob = await h.online("bob")
        bob.send(f"<message to='{A}' type='chat' id='m3'><body>hi</body></message>")
        [err] = named(await bob.recv(), "message", type="error")
        assert error_of(err) == "service-unavailable"
        assert await h.backend.count(DOMAIN, "alice") == 0


async def test_iq_from_a_blocked_jid_is_refused_and_iq_to_one_is_not_acceptable() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, block(B))
        reply, _ = await exchange(
            bob, f"<iq type='get' id='q1' to='{A}/res'><query xmlns='jabber:iq:version'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"
        assert named(await alice.recv(), "iq") == []
        reply, _ = await exchange(
            alice, f"<iq type='get' id='q2' to='{B}/res'><query xmlns='jabber:iq:version'/></iq>"
        )
        assert is_blocked_error(reply)
        assert named(await bob.recv(), "iq") == []


async def test_blocking_a_subscriber_withdraws_presence_and_unblocking_restores_it() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "alice", RosterItem(B, subscription="both"))
        await h.backend.set_item(DOMAIN, "bob", RosterItem(A, subscription="both"))
        alice = await h.online("alice")
        bob = await h.online("bob")
        await alice.recv()
        await bob.recv()
        await exchange(alice, block(B))
        [gone] = presences(await bob.recv())
        assert gone.get("type") == "unavailable" and gone.get("from") == f"{A}/res"
        alice.send("<presence><show>away</show></presence>")  # not broadcast to bob any more
        assert presences(await bob.recv()) == []
        await exchange(alice, unblock(B))
        [back] = presences(await bob.recv())
        assert back.get("type") is None and back.find_text("show") == "away"


async def test_blocked_contacts_are_not_probed_nor_answered() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "alice", RosterItem(B, subscription="both"))
        await h.backend.set_item(DOMAIN, "bob", RosterItem(A, subscription="both"))
        await h.backend.block(DOMAIN, "bob", [A])
        bob = await h.online("bob")
        await bob.recv()
        alice = await h.online("alice", presence=False)
        alice.send("<presence/>")
        got = presences(await alice.recv(40))
        assert [p.get("from") for p in got] == [f"{A}/res"]  # her own: no answer from bob
        assert presences(await bob.recv()) == []  # and alice's presence does not reach bob


async def test_blocking_the_own_domain_still_lets_server_pushes_through() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, GET)
        reply, pushes = await exchange(alice, block(DOMAIN))
        assert reply.get("type") == "result"
        assert named(pushes, "iq", type="set")  # the push from the own bare JID still arrives
        _, pushes = await exchange(alice, unblock(DOMAIN))
        assert named(pushes, "iq", type="set")


async def test_block_list_size_is_limited() -> None:
    from imhost.xmpp.modules.blocking import MAX_BLOCKED

    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        jids = [f"spammer{i}@spam.example" for i in range(MAX_BLOCKED + 1)]
        reply, _ = await exchange(alice, block(*jids))
        assert error_of(reply) == "not-acceptable"
        assert await h.backend.get_blocklist(DOMAIN, "alice") == set()
        reply, _ = await exchange(alice, block(*jids[:MAX_BLOCKED], id_="b2"))
        assert reply.get("type") == "result"
        assert len(await h.backend.get_blocklist(DOMAIN, "alice")) == MAX_BLOCKED


async def test_after_the_blocking_user_logs_out_others_talk_freely_again() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, block("carol@example.test"))
        alice.send("</stream:stream>")
        await alice.recv()
        bob = await h.online("bob")
        carol = await h.online("carol")
        carol.send(f"<message to='{B}' type='chat'><body>hello bob</body></message>")
        assert [m.find_text("body") for m in named(await bob.recv(), "message")] == ["hello bob"]
        assert named(await carol.recv(), "message") == []
