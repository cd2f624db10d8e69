"""RFC 7395 XMPP over WebSocket through ``XmppServer.serve_websocket`` (a real WebSocket
server from the ``websockets`` package on loopback stands in for the web app's route)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from imhost.xmpp.core.parser import parse_fragment
from imhost.xmpp.core.xml import Element

from .harness import DOMAIN, PASSWORD, Harness

pytestmark = pytest.mark.anyio

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


class Adapter:
    """What the web team's FastAPI route would pass: receive_text/send_text/close."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.client_address = "127.0.0.1"
        self.is_secure = False

    async def receive_text(self) -> str:
        data = await self.ws.recv()
        return data if isinstance(data, str) else data.decode()

    async def send_text(self, data: str) -> None:
        await self.ws.send(data)

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)


@pytest.fixture
async def ws_url() -> AsyncIterator[tuple[str, Harness]]:
    async with Harness(allow_plain_without_tls=False) as h:

        async def handler(ws: ServerConnection) -> None:
            await h.server.serve_websocket(Adapter(ws))

        async with serve(handler, "127.0.0.1", 0, subprotocols=["xmpp"]) as srv:  # type: ignore[list-item]
            port = next(iter(srv.sockets)).getsockname()[1]
            yield f"ws://127.0.0.1:{port}/xmpp-websocket", h


async def recv_el(ws: Any) -> Element:
    return parse_fragment(await asyncio.wait_for(ws.recv(), 5))


async def test_websocket_login_bind_and_message(ws_url: tuple[str, Harness]) -> None:
    url, h = ws_url
    bob = await h.online("bob")
    async with connect(url, subprotocols=["xmpp"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "xmpp"
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        opened = await recv_el(ws)
        assert opened.name == "open" and opened.ns == FRAMING and opened.get("from") == DOMAIN
        features = await recv_el(ws)
        assert features.name == "features"
        mechs = [m.text for m in features.find("mechanisms").elements()]
        assert "SCRAM-SHA-256" in mechs and "PLAIN" not in mechs  # not secure: no PLAIN
        # SCRAM over WebSocket
        from .harness import Client

        first = "n,,n=alice,r=wsnonce"
        await ws.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
            f"{base64.b64encode(first.encode()).decode()}</auth>"
        )
        challenge = await recv_el(ws)
        assert challenge.name == "challenge"
        final = _scram_final(challenge.text, "n=alice,r=wsnonce", PASSWORD)
        await ws.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
        assert (await recv_el(ws)).name == "success"
        await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
        assert (await recv_el(ws)).name == "open"
        features = await recv_el(ws)
        assert features.find("bind") is not None
        await ws.send(
            "<iq xmlns='jabber:client' type='set' id='b'>"
            "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource>"
            "</bind></iq>"
        )
        bound = await recv_el(ws)
        assert bound.find("bind").find_text("jid") == "alice@example.test/web"
        await ws.send("<presence xmlns='jabber:client'/>")
        await ws.send(
            "<message xmlns='jabber:client' to='bob@example.test' type='chat'>"
            "<body>over websocket</body></message>"
        )
        got = await bob.recv()
        assert [m.find_text("body") for m in got] == ["over websocket"]
        bob.send("<message to='alice@example.test/web' type='chat'><body>back</body></message>")
        msg = await recv_el(ws)
        # RFC 7395 §3.5: every element carries its namespace
        assert msg.ns == "jabber:client" and msg.find_text("body") == "back"
        await ws.send(f"<close xmlns='{FRAMING}'/>")
        closing = await recv_el(ws)
        assert closing.name == "close"
        _ = Client
    await asyncio.sleep(0.05)
    assert h.server.router.sessions_of(DOMAIN, "alice") == []


async def test_websocket_unknown_host(ws_url: tuple[str, Harness]) -> None:
    url, _ = ws_url
    async with connect(url, subprotocols=["xmpp"]) as ws:  # type: ignore[list-item]
        await ws.send(f"<open xmlns='{FRAMING}' to='nowhere.test' version='1.0'/>")
        assert (await recv_el(ws)).name == "open"
        err = await recv_el(ws)
        assert err.name == "error" and err.find("host-unknown") is not None
        assert (await recv_el(ws)).name == "close"


def _scram_final(challenge_b64: str, first_bare: str, password: str) -> str:
    import hashlib
    import hmac

    server_first = base64.b64decode(challenge_b64).decode()
    attrs = dict(p.split("=", 1) for p in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha1", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    ck = hmac.new(salted, b"Client Key", "sha1").digest()
    sk = hashlib.sha1(ck).digest()  # noqa: S324 - SCRAM-SHA-1 is what is being tested
    without = f"c=biws,r={attrs['r']}"
    sig = hmac.new(sk, f"{first_bare},{server_first},{without}".encode(), "sha1").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig, strict=True))).decode()
    return base64.b64encode(f"{without},p={proof}".encode()).decode()
