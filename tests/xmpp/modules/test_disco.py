"""XEP-0030 conversations: the host's and accounts' identities, features and items."""

from __future__ import annotations

import pytest

from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.modules.disco import NS_DISCO_INFO, NS_DISCO_ITEMS, DiscoModule
from imhost.xmpp.modules.ping import NS_PING, PingModule
from imhost.xmpp.modules.roster import RosterModule
from imhost.xmpp.ports import RosterItem

from ..harness import DOMAIN
from .conv import Harness, error_of, exchange

pytestmark = pytest.mark.anyio


def info(to: str = DOMAIN, node: str = "", id_: str = "i1") -> str:
    node_attr = f" node='{node}'" if node else ""
    return f"<iq type='get' id='{id_}' to='{to}'><query xmlns='{NS_DISCO_INFO}'{node_attr}/></iq>"


def features(reply: Element) -> set[str]:
    query = reply.find("query", NS_DISCO_INFO)
    assert query is not None, reply
    return {f.get("var", "") for f in query.elements() if f.name == "feature"}


def identities(reply: Element) -> list[tuple[str | None, str | None]]:
    query = reply.find("query", NS_DISCO_INFO)
    assert query is not None
    return [(i.get("category"), i.get("type")) for i in query.elements() if i.name == "identity"]


async def test_server_info_lists_the_identity_and_every_loaded_modules_features() -> None:
    async with Harness(modules=DEFAULT_MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, info())
        assert reply.get("type") == "result" and reply.get("from") == DOMAIN
        assert identities(reply) == [("server", "im")]
        assert {
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_PING,
            "urn:xmpp:carbons:2",
            "urn:xmpp:blocking",
            "vcard-temp",
            "jabber:iq:private",
            "jabber:iq:version",
            "jabber:iq:register",
            "msgoffline",
        } <= features(reply)


async def test_features_of_modules_not_loaded_are_not_advertised() -> None:
    async with Harness(modules=[DiscoModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, info())
        assert features(reply) == {NS_DISCO_INFO, NS_DISCO_ITEMS}
    async with Harness(modules=[DiscoModule, PingModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, info())
        assert NS_PING in features(reply)


async def test_server_items_are_empty() -> None:
    async with Harness(modules=[DiscoModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='it' to='{DOMAIN}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"
        )
        query = reply.find("query", NS_DISCO_ITEMS)
        assert reply.get("type") == "result" and query is not None and query.children == []


async def test_own_account_info_is_a_registered_account() -> None:
    async with Harness(modules=[RosterModule, DiscoModule]) as h:
        alice = await h.online("alice")
        for xml in (info("alice@example.test"), info().replace(f" to='{DOMAIN}'", "")):
            reply, _ = await exchange(alice, xml)
            assert identities(reply) == [("account", "registered")]
            assert NS_DISCO_INFO in features(reply)


async def test_account_info_for_a_subscriber_but_not_for_strangers_or_ghosts() -> None:
    async with Harness(modules=[RosterModule, DiscoModule]) as h:
        await h.backend.set_item(
            DOMAIN, "bob", RosterItem("alice@example.test", subscription="from")
        )
        alice = await h.online("alice")
        carol = await h.online("carol")
        reply, _ = await exchange(alice, info("bob@example.test"))
        assert identities(reply) == [("account", "registered")]
        reply, _ = await exchange(carol, info("bob@example.test"))
        assert error_of(reply) == "service-unavailable"
        reply, _ = await exchange(carol, info("ghost@example.test"))
        assert error_of(reply) == "service-unavailable"


async def test_unknown_node_is_item_not_found() -> None:
    async with Harness(modules=[DiscoModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, info(node="urn:nowhere"))
        assert error_of(reply) == "item-not-found"


async def test_other_tenants_are_not_discoverable() -> None:
    async with Harness(modules=[DiscoModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, info("other.test"))
        assert error_of(reply) == "remote-server-not-found"
