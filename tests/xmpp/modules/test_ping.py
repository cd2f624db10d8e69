"""XEP-0199 conversations."""

from __future__ import annotations

import pytest

from imhost.xmpp.modules.ping import PingModule

from ..harness import DOMAIN
from .conv import Harness, error_of, exchange

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("to", [f" to='{DOMAIN}'", "", " to='alice@example.test'"])
async def test_server_answers_pings(to: str) -> None:
    async with Harness(modules=[PingModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='p1'{to}><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert reply.get("type") == "result" and reply.children == []
        assert reply.get("to") == "alice@example.test/res"


async def test_ping_to_a_full_jid_is_forwarded_to_the_client() -> None:
    async with Harness(modules=[PingModule]) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        alice.send(
            "<iq type='get' id='p2' to='bob@example.test/res'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        ping = await bob.wait_for("iq")
        assert ping.get("from") == "alice@example.test/res" and ping.get("type") == "get"


async def test_ping_set_is_not_a_ping() -> None:
    async with Harness(modules=[PingModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='set' id='p3' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"


async def test_without_the_module_pings_are_unsupported() -> None:
    async with Harness(modules=[]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='p4' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"
