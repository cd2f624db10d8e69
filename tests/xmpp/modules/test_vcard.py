"""XEP-0054 conversations: own vCard get/set, others' vCards, limits and errors."""

from __future__ import annotations

import pytest

from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.blocking import BlockingModule
from imhost.xmpp.modules.vcard import MAX_VCARD_BYTES, NS_VCARD, VCardModule

from ..harness import DOMAIN
from .conv import Harness, error_of, exchange

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [BlockingModule, VCardModule]
SET = (
    "<iq type='set' id='s1'><vCard xmlns='vcard-temp'><FN>Alice &amp; Co</FN>"
    "<NICKNAME>ally</NICKNAME></vCard></iq>"
)


async def test_own_vcard_is_empty_then_stored_and_returned() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, "<iq type='get' id='g0'><vCard xmlns='vcard-temp'/></iq>")
        vcard = reply.find("vCard", NS_VCARD)
        assert reply.get("type") == "result" and vcard is not None and vcard.children == []
        reply, _ = await exchange(alice, SET)
        assert reply.get("type") == "result"
        assert "Alice &amp; Co" in (await h.backend.get_vcard(DOMAIN, "alice") or "")
        reply, _ = await exchange(alice, "<iq type='get' id='g1'><vCard xmlns='vcard-temp'/></iq>")
        vcard = reply.find("vCard", NS_VCARD)
        assert vcard is not None
        assert vcard.find_text("FN") == "Alice & Co" and vcard.find_text("NICKNAME") == "ally"


async def test_another_users_vcard_is_readable_even_when_they_are_offline() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, SET)
        alice.send("</stream:stream>")
        bob = await h.online("bob")
        reply, _ = await exchange(
            bob, "<iq type='get' id='g2' to='alice@example.test'><vCard xmlns='vcard-temp'/></iq>"
        )
        assert reply.get("from") == "alice@example.test"
        assert reply.find("vCard", NS_VCARD).find_text("FN") == "Alice & Co"  # type: ignore[union-attr]


async def test_setting_another_users_vcard_is_forbidden() -> None:
    async with Harness(modules=MODULES) as h:
        bob = await h.online("bob")
        reply, _ = await exchange(bob, SET.replace("id='s1'", "id='s1' to='alice@example.test'"))
        assert error_of(reply) == "forbidden"
        assert await h.backend.get_vcard(DOMAIN, "alice") is None


async def test_an_oversized_vcard_is_not_acceptable() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        big = "A" * (MAX_VCARD_BYTES + 1)
        reply, _ = await exchange(
            alice,
            f"<iq type='set' id='s2'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>{big}</BINVAL>"
            "</PHOTO></vCard></iq>",
        )
        assert error_of(reply) == "not-acceptable"
        assert await h.backend.get_vcard(DOMAIN, "alice") is None


async def test_vcard_of_a_nonexistent_account_is_service_unavailable() -> None:
    async with Harness(modules=MODULES) as h:
        bob = await h.online("bob")
        reply, _ = await exchange(
            bob, "<iq type='get' id='g3' to='ghost@example.test'><vCard xmlns='vcard-temp'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"


async def test_vcard_of_someone_who_blocked_you_is_service_unavailable() -> None:
    async with Harness(modules=MODULES) as h:
        await h.backend.set_vcard(DOMAIN, "alice", "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
        await h.backend.block(DOMAIN, "alice", ["bob@example.test"])
        bob = await h.online("bob")
        reply, _ = await exchange(
            bob, "<iq type='get' id='g4' to='alice@example.test'><vCard xmlns='vcard-temp'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"


async def test_vcard_across_tenants_is_unreachable() -> None:
    async with Harness(modules=MODULES) as h:
        bob = await h.online("bob")
        reply, _ = await exchange(
            bob, "<iq type='get' id='g5' to='mallory@other.test'><vCard xmlns='vcard-temp'/></iq>"
        )
        assert error_of(reply) == "remote-server-not-found"
