"""XEP-0115 conversations: the server's caps in stream features, and clients' caps cached."""

from __future__ import annotations

import base64
import hashlib

import pytest

from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.caps import CLIENT_CAPS, NS_CAPS, CapsModule
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.modules.disco import CAPS_NODE, NS_DISCO_INFO, DiscoModule, verification_string
from imhost.xmpp.modules.ping import PingModule

from ..harness import DOMAIN, HEADER
from .conv import Client, Harness, exchange

pytestmark = pytest.mark.anyio


async def features_after_auth(c: Client) -> Element:
    assert (await c.login_plain("alice")).name == "success"
    c.restart()
    c.send(HEADER.format(to=DOMAIN))
    return await c.wait_for("features")


def test_verification_string_matches_the_xep_0115_example() -> None:
    # XEP-0115 §5.2 simple generation example (Exodus 0.9.1).
    ver = verification_string(
        [("client", "pc", "Exodus 0.9.1")],
        [
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
        ],
    )
    assert ver == "QgayPKawpkPSDYmwT/WM94uAlu0="


async def test_server_caps_in_stream_features_hash_what_disco_answers() -> None:
    async with Harness(modules=DEFAULT_MODULES) as h:
        c = h.client()
        features = await features_after_auth(c)
        cap = features.find("c", NS_CAPS)
        assert cap is not None and cap.get("hash") == "sha-1" and cap.get("node") == CAPS_NODE
        ver = cap.get("ver", "")
        c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        assert (await c.wait_for("iq")).get("type") == "result"
        reply, _ = await exchange(
            c,
            f"<iq type='get' id='n1' to='{DOMAIN}'>"
            f"<query xmlns='{NS_DISCO_INFO}' node='{CAPS_NODE}#{ver}'/></iq>",
        )
        query = reply.find("query", NS_DISCO_INFO)
        assert reply.get("type") == "result" and query is not None
        assert query.get("node") == f"{CAPS_NODE}#{ver}"
        s = "".join(
            f"{i.get('category')}/{i.get('type')}//{i.get('name', '')}<"
            for i in query.elements()
            if i.name == "identity"
        ) + "".join(
            f"{v}<"
            for v in sorted(f.get("var", "") for f in query.elements() if f.name == "feature")
        )
        expected = base64.b64encode(hashlib.sha1(s.encode(), usedforsecurity=False).digest())
        assert ver == expected.decode()


async def test_server_ver_changes_with_the_loaded_features() -> None:
    vers = []
    for modules in ([DiscoModule, CapsModule], [DiscoModule, CapsModule, PingModule]):
        async with Harness(modules=modules) as h:
            cap = (await features_after_auth(h.client())).find("c", NS_CAPS)
            assert cap is not None
            vers.append(cap.get("ver"))
    assert vers[0] != vers[1]


CLIENT_IDENTITY = ("client", "phone", "Test Client")
CLIENT_FEATURES = ["http://jabber.org/protocol/caps", "urn:xmpp:ping"]


async def announce(h: Harness, resource: str, ver: str, answer_with: str | None) -> Client:
    c = await h.online("alice", resource, presence=False)
    await c.recv()
    c.send(
        f"<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='https://client.example' "
        f"ver='{ver}'/></presence>"
    )
    if answer_with is None:
        return c
    query = await c.wait_for("iq")
    assert query.get("type") == "get"
    q = query.find("query", NS_DISCO_INFO)
    assert q is not None and q.get("node") == f"https://client.example#{ver}"
    feats = "".join(f"<feature var='{f}'/>" for f in CLIENT_FEATURES)
    c.send(
        f"<iq type='result' id='{query.get('id')}' to='{DOMAIN}'>"
        f"<query xmlns='{NS_DISCO_INFO}' node='https://client.example#{ver}'>"
        f"<identity category='client' type='phone' name='{answer_with}'/>{feats}</query></iq>"
    )
    await c.recv()
    return c


async def test_client_caps_are_resolved_once_verified_and_cached() -> None:
    ver = verification_string([CLIENT_IDENTITY], CLIENT_FEATURES)
    async with Harness(modules=[DiscoModule, CapsModule]) as h:
        first = await announce(h, "one", ver, "Test Client")
        caps = first.stream.get(CLIENT_CAPS)
        assert caps is not None and caps.features == frozenset(CLIENT_FEATURES)
        second = await announce(h, "two", ver, None)  # known ver: no query this time
        assert [e for e in await second.recv() if e.name == "iq"] == []
        caps2 = second.stream.get(CLIENT_CAPS)
        assert caps2 is not None and caps2.features == frozenset(CLIENT_FEATURES)


async def test_client_caps_with_a_wrong_hash_are_not_trusted() -> None:
    async with Harness(modules=[DiscoModule, CapsModule]) as h:
        c = await announce(h, "one", "bm90IHRoZSByaWdodCBoYXNo", "Liar")
        caps = c.stream.get(CLIENT_CAPS)
        assert caps is not None and caps.features is None
