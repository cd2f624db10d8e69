"""RFC 6121 §2 roster conversations: get, set, push, remove, versioning and the errors."""

from __future__ import annotations

import pytest

from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.roster import NS_ROSTER, NS_ROSTERVER, RosterModule
from imhost.xmpp.ports import RosterItem

from ..harness import DOMAIN, HEADER
from .conv import Harness, error_of, error_text, exchange, named

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RosterModule]
GET = "<iq type='get' id='g1'><query xmlns='jabber:iq:roster'/></iq>"


def items_of(iq_el: object) -> dict[str, dict[str, str]]:
    from imhost.xmpp.core.xml import Element

    assert isinstance(iq_el, Element)
    query = iq_el.find("query", NS_ROSTER)
    assert query is not None, iq_el
    return {i.get("jid", ""): dict(i.attrs) for i in query.elements() if i.name == "item"}


def groups_of(iq_el: object, jid: str) -> list[str]:
    from imhost.xmpp.core.xml import Element

    assert isinstance(iq_el, Element)
    query = iq_el.find("query", NS_ROSTER)
    assert query is not None
    for item in query.elements():
        if item.get("jid") == jid:
            return [g.text for g in item.elements() if g.name == "group"]
    raise AssertionError(f"{jid} not in {iq_el}")


async def test_empty_roster_is_an_empty_query() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, GET)
        assert reply.get("type") == "result"
        assert items_of(reply) == {}
        assert reply.find("query", NS_ROSTER).get("ver") is None  # type: ignore[union-attr]


async def test_rosterver_stream_feature_is_offered_after_auth() -> None:
    async with Harness(modules=MODULES) as h:
        c = h.client()
        assert (await c.login_plain("alice")).name == "success"
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        features = await c.wait_for("features")
        assert features.find("ver", NS_ROSTERVER) is not None


async def test_roster_set_is_stored_pushed_to_interested_resources_and_answered() -> None:
    async with Harness(modules=MODULES) as h:
        phone = await h.online("alice", "phone")
        desktop = await h.online("alice", "desktop")
        idle = await h.online("alice", "idle")  # never asked for the roster
        await exchange(phone, GET)
        await exchange(desktop, GET)
        reply, pushes = await exchange(
            phone,
            "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>"
            "<item jid='Bob@Example.Test' name='Bob'><group>Friends</group><group>Work</group>"
            "</item></query></iq>",
        )
        assert reply.get("type") == "result"
        [push] = named(pushes, "iq", type="set")
        assert push.get("to") == "alice@example.test/phone"
        assert push.get("from") == "alice@example.test"
        assert items_of(push) == {
            "bob@example.test": {"jid": "bob@example.test", "name": "Bob", "subscription": "none"}
        }
        assert groups_of(push, "bob@example.test") == ["Friends", "Work"]
        other = named(await desktop.recv(), "iq", type="set")
        assert len(other) == 1 and items_of(other[0]).keys() == {"bob@example.test"}
        assert named(await idle.recv(), "iq") == []
        _, stored = await h.backend.get_roster(DOMAIN, "alice")
        assert stored == [RosterItem("bob@example.test", "Bob", "none", groups=("Friends", "Work"))]


async def test_roster_get_lists_items_with_subscription_ask_and_approval() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(
            DOMAIN, "alice", RosterItem("bob@example.test", "Bob", "to", groups=("G",))
        )
        await h.backend.set_item(DOMAIN, "alice", RosterItem("carol@example.test", ask=True))
        await h.backend.set_item(
            DOMAIN, "alice", RosterItem("dave@example.test", "Dave", "none", approved=True)
        )
        alice = await h.online("alice")
        reply, _ = await exchange(alice, GET)
        assert items_of(reply) == {
            "bob@example.test": {"jid": "bob@example.test", "name": "Bob", "subscription": "to"},
            "carol@example.test": {
                "jid": "carol@example.test",
                "subscription": "none",
                "ask": "subscribe",
            },
            "dave@example.test": {
                "jid": "dave@example.test",
                "name": "Dave",
                "subscription": "none",
                "approved": "true",
            },
        }
        assert groups_of(reply, "bob@example.test") == ["G"]


async def test_update_keeps_the_subscription_and_ignores_client_subscription_and_ask() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "alice", RosterItem("bob@example.test", "B", "both"))
        alice = await h.online("alice")
        await exchange(alice, GET)
        reply, pushes = await exchange(
            alice,
            "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'>"
            "<item jid='bob@example.test' name='Bobby' subscription='none' ask='subscribe'/>"
            "</query></iq>",
        )
        assert reply.get("type") == "result"
        [push] = named(pushes, "iq", type="set")
        assert items_of(push)["bob@example.test"] == {
            "jid": "bob@example.test",
            "name": "Bobby",
            "subscription": "both",
        }


async def test_remove_pushes_subscription_remove_and_forgets_the_item() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "alice", RosterItem("bob@example.test"))
        alice = await h.online("alice")
        await exchange(alice, GET)
        reply, pushes = await exchange(
            alice,
            "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
            "<item jid='bob@example.test' subscription='remove'/></query></iq>",
        )
        assert reply.get("type") == "result"
        [push] = named(pushes, "iq", type="set")
        assert items_of(push) == {
            "bob@example.test": {"jid": "bob@example.test", "subscription": "remove"}
        }
        again, _ = await exchange(alice, GET.replace("g1", "g2"))
        assert items_of(again) == {}


async def test_removing_an_absent_item_is_item_not_found() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice,
            "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
            "<item jid='nobody@example.test' subscription='remove'/></query></iq>",
        )
        assert error_of(reply) == "item-not-found"


async def test_versioning_unchanged_roster_is_an_empty_result_then_pushes_carry_ver() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "alice", RosterItem("bob@example.test"))
        version, _ = await h.backend.get_roster(DOMAIN, "alice")
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver='{version}'/></iq>"
        )
        assert reply.get("type") == "result" and reply.children == []
        _, pushes = await exchange(
            alice,
            "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>"
            "<item jid='carol@example.test'/></query></iq>",
        )
        [push] = named(pushes, "iq", type="set")
        new_version, _ = await h.backend.get_roster(DOMAIN, "alice")
        assert new_version != version
        assert push.find("query", NS_ROSTER).get("ver") == new_version  # type: ignore[union-attr]


async def test_versioning_with_a_stale_version_returns_the_full_roster_and_its_ver() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "alice", RosterItem("bob@example.test"))
        await h.backend.set_item(DOMAIN, "alice", RosterItem("carol@example.test"))
        version, _ = await h.backend.get_roster(DOMAIN, "alice")
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, "<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver='stale'/></iq>"
        )
        assert set(items_of(reply)) == {"bob@example.test", "carol@example.test"}
        assert reply.find("query", NS_ROSTER).get("ver") == version  # type: ignore[union-attr]


async def test_pushes_without_versioning_carry_no_ver() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, GET)
        _, pushes = await exchange(
            alice,
            "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>"
            "<item jid='carol@example.test'/></query></iq>",
        )
        [push] = named(pushes, "iq", type="set")
        assert push.find("query", NS_ROSTER).get("ver") is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("payload", "condition", "text"),
    [
        (
            "<item jid='bob@example.test'/><item jid='carol@example.test'/>",
            "bad-request",
            "exactly one item",
        ),
        ("", "bad-request", "exactly one item"),
        ("<item name='x'/>", "bad-request", "no jid"),
        ("<item jid='a@b@c'/>", "jid-malformed", ""),
        ("<item jid='alice@example.test'/>", "not-allowed", "yourself"),
        ("<item jid='Alice@example.test/phone'/>", "not-allowed", "yourself"),
        ("<item jid='bob@example.test' name='" + "n" * 1025 + "'/>", "not-acceptable", "name"),
        ("<item jid='bob@example.test'><group> </group></item>", "not-acceptable", "empty"),
        (
            "<item jid='bob@example.test'><group>" + "g" * 1025 + "</group></item>",
            "not-acceptable",
            "group",
        ),
        (
            "<item jid='bob@example.test'><group>A</group><group>A</group></item>",
            "bad-request",
            "duplicate",
        ),
    ],
    ids=[
        "two-items",
        "no-item",
        "no-jid",
        "bad-jid",
        "own-jid",
        "own-full-jid",
        "long-name",
        "empty-group",
        "long-group",
        "duplicate-group",
    ],
)
async def test_invalid_roster_sets_are_refused(payload: str, condition: str, text: str) -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, GET)
        reply, pushes = await exchange(
            alice, f"<iq type='set' id='bad'><query xmlns='jabber:iq:roster'>{payload}</query></iq>"
        )
        assert error_of(reply) == condition
        assert text in error_text(reply)
        assert named(pushes, "iq", type="set") == []
        _, stored = await h.backend.get_roster(DOMAIN, "alice")
        assert stored == []


@pytest.mark.parametrize("kind", ["get", "set"])
async def test_another_users_roster_is_forbidden(kind: str) -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_item(DOMAIN, "bob", RosterItem("carol@example.test"))
        alice = await h.online("alice")
        payload = "<item jid='carol@example.test' name='x'/>" if kind == "set" else ""
        reply, _ = await exchange(
            alice,
            f"<iq type='{kind}' id='f1' to='bob@example.test'>"
            f"<query xmlns='jabber:iq:roster'>{payload}</query></iq>",
        )
        assert error_of(reply) == "forbidden"
        _, stored = await h.backend.get_roster(DOMAIN, "bob")
        assert stored == [RosterItem("carol@example.test")]


async def test_roster_of_an_account_on_another_tenant_is_unreachable() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice,
            "<iq type='get' id='x1' to='mallory@other.test'><query xmlns='jabber:iq:roster'/></iq>",
        )
        assert error_of(reply) == "remote-server-not-found"


async def test_roster_get_is_served_from_memory_while_bound_and_released_after_logout() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        module = h.server.router.hosts[DOMAIN].modules[0]
        assert isinstance(module, RosterModule)
        assert module.cached("alice") is not None
        # a change made directly in the store is not seen while cached (no store read per get)
        await h.backend.set_item(DOMAIN, "alice", RosterItem("zed@example.test"))
        reply, _ = await exchange(alice, GET)
        assert items_of(reply) == {}
        alice.send("</stream:stream>")
        await alice.recv()
        assert module.cached("alice") is None
