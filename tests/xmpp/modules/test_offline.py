"""XEP-0160 + XEP-0203 conversations (storage by the core, hints and feature by the module)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imhost.kit.clock import FrozenClock
from imhost.xmpp.core.xml import NS_DELAY
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.offline import OfflineModule
from imhost.xmpp.ports import HostLimits

from ..harness import DOMAIN
from .conv import Harness, error_of, error_text, named

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [OfflineModule]


async def test_message_to_an_offline_user_arrives_at_next_login_with_a_delay_stamp() -> None:
    clock = FrozenClock(datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC))
    async with Harness(modules=MODULES, clock=clock) as h:
        alice = await h.online("alice")
        alice.send(
            "<message to='carol@example.test' type='chat' id='o1'><body>later</body></message>"
        )
        await alice.recv()
        carol = await h.online("carol", presence=False)
        assert named(await carol.recv(), "message") == []  # not before initial presence
        carol.send("<presence/>")
        [msg] = named(await carol.recv(), "message")
        assert msg.find_text("body") == "later" and msg.get("from") == "alice@example.test/res"
        delay = msg.find("delay", NS_DELAY)
        assert delay is not None
        assert delay.get("from") == DOMAIN and delay.get("stamp") == "2026-03-01T12:30:05Z"


async def test_past_the_per_account_limit_the_sender_gets_service_unavailable() -> None:
    async with Harness(
        modules=MODULES, limits=HostLimits(message_rate=None, max_offline_messages=2)
    ) as h:
        alice = await h.online("alice")
        for i in range(3):
            alice.send(f"<message to='carol@example.test' id='m{i}'><body>{i}</body></message>")
        errors = named(await alice.recv(), "message", type="error")
        assert [e.get("id") for e in errors] == ["m2"]
        assert error_of(errors[0]) == "service-unavailable"
        assert "full" in error_text(errors[0])
        assert await h.backend.count(DOMAIN, "carol") == 2


@pytest.mark.parametrize("hint", ["no-store", "no-permanent-store"])
async def test_store_hints_keep_a_message_out_of_offline_storage(hint: str) -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send(
            "<message to='carol@example.test' type='chat'><body>ephemeral</body>"
            f"<{hint} xmlns='urn:xmpp:hints'/></message>"
        )
        assert named(await alice.recv(), "message") == []
        assert await h.backend.count(DOMAIN, "carol") == 0


async def test_headline_and_bodiless_messages_are_not_stored() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send("<message to='carol@example.test' type='headline'><body>news</body></message>")
        alice.send(
            "<message to='carol@example.test' type='chat'>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        await alice.recv()
        assert await h.backend.count(DOMAIN, "carol") == 0


async def test_message_to_a_nonexistent_account_is_service_unavailable() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send("<message to='ghost@example.test' type='chat' id='g'><body>?</body></message>")
        [err] = named(await alice.recv(), "message", type="error")
        assert error_of(err) == "service-unavailable"


async def test_msgoffline_is_advertised() -> None:
    from imhost.xmpp.modules.disco import DiscoModule

    from .conv import exchange

    async with Harness(modules=[OfflineModule, DiscoModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='d' to='{DOMAIN}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        query = reply.find("query")
        assert query is not None
        assert "msgoffline" in {f.get("var") for f in query.elements()}
