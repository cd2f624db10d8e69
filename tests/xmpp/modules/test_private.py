"""XEP-0049 conversations: store, read back, refused namespaces, limits."""

from __future__ import annotations

import pytest

from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.private import MAX_ELEMENT_BYTES, NS_PRIVATE, PrivateModule

from ..harness import DOMAIN
from .conv import Harness, error_of, exchange

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [PrivateModule]


def q(type_: str, inner: str, id_: str = "p1", to: str = "") -> str:
    to_attr = f" to='{to}'" if to else ""
    return (
        f"<iq type='{type_}' id='{id_}'{to_attr}><query xmlns='{NS_PRIVATE}'>{inner}</query></iq>"
    )


async def test_stored_element_comes_back_and_unknown_ones_come_back_empty() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, q("set", "<prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs>")
        )
        assert reply.get("type") == "result"
        reply, _ = await exchange(alice, q("get", "<prefs xmlns='urn:example:prefs'/>", "p2"))
        query = reply.find("query", NS_PRIVATE)
        assert query is not None
        [prefs] = list(query.elements())
        assert prefs.ns == "urn:example:prefs" and prefs.find_text("theme") == "dark"
        reply, _ = await exchange(alice, q("get", "<other xmlns='urn:example:none'/>", "p3"))
        [empty] = list(reply.find("query", NS_PRIVATE).elements())  # type: ignore[union-attr]
        assert (empty.name, empty.ns, empty.children) == ("other", "urn:example:none", [])


async def test_same_name_in_another_namespace_is_another_element() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, q("set", "<x xmlns='urn:a'>A</x>"))
        await exchange(alice, q("set", "<x xmlns='urn:b'>B</x>", "p2"))
        reply, _ = await exchange(alice, q("get", "<x xmlns='urn:a'/>", "p3"))
        [x] = list(reply.find("query", NS_PRIVATE).elements())  # type: ignore[union-attr]
        assert x.text == "A"


async def test_storage_is_per_account() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, q("set", "<x xmlns='urn:a'>secret</x>"))
        reply, _ = await exchange(bob, q("get", "<x xmlns='urn:a'/>"))
        [x] = list(reply.find("query", NS_PRIVATE).elements())  # type: ignore[union-attr]
        assert x.children == []


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (q("set", "<x xmlns='jabber:client'/>"), "not-acceptable"),
        (q("set", "<x xmlns='jabber:server'/>"), "not-acceptable"),
        (q("set", f"<x xmlns='{NS_PRIVATE}'/>"), "not-acceptable"),
        (q("get", "<x xmlns='jabber:client'/>"), "not-acceptable"),
        (q("set", "<x xmlns='urn:a'>" + "y" * (MAX_ELEMENT_BYTES + 1) + "</x>"), "not-acceptable"),
        (q("set", ""), "bad-request"),
        (q("set", "".join(f"<x{i} xmlns='urn:a'/>" for i in range(17))), "bad-request"),
        (q("get", ""), "bad-request"),
        (q("get", "<x xmlns='urn:a'/><y xmlns='urn:b'/>"), "bad-request"),
        (q("set", "<x xmlns='urn:a'/>", to="bob@example.test"), "forbidden"),
        (q("get", "<x xmlns='urn:a'/>", to="bob@example.test"), "forbidden"),
    ],
    ids=[
        "jabber-client",
        "jabber-server",
        "iq-private",
        "get-jabber-client",
        "too-large",
        "empty-set",
        "too-many-in-set",
        "empty-get",
        "two-in-get",
        "others-set",
        "others-get",
    ],
)
async def test_refused_requests(xml: str, condition: str) -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, xml)
        assert error_of(reply) == condition
        assert [k for k in h.backend.private if k[0] == DOMAIN] == []
