"""The plan's storage limit (``HostLimits.max_storage_bytes``): offline messages (XEP-0160)
and private XML (XEP-0049) of a host share it; past it a write is refused with a text the
user sees, and what frees space (delivery of offline messages, a smaller element) always
passes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.offline import OfflineModule
from imhost.xmpp.modules.private import NS_PRIVATE, PrivateModule
from imhost.xmpp.ports import HostLimits

from ..harness import DOMAIN
from .conv import Harness, error_of, error_text, exchange, named

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [OfflineModule, PrivateModule]
LIMIT = 1000
FULL_TEXT = "the storage of example.test is full (its plan allows 1,000 bytes)"


def limited(max_storage_bytes: int | None = LIMIT) -> HostLimits:
    return HostLimits(message_rate=None, max_storage_bytes=max_storage_bytes)


def private_set(inner: str, id_: str) -> str:
    return f"<iq type='set' id='{id_}'><query xmlns='{NS_PRIVATE}'>{inner}</query></iq>"


def private_get(inner: str, id_: str) -> str:
    return f"<iq type='get' id='{id_}'><query xmlns='{NS_PRIVATE}'>{inner}</query></iq>"


def element(ns: str, text_bytes: int) -> str:
    return f"<x xmlns='{ns}'>{'y' * text_bytes}</x>"


async def test_private_set_past_the_limit_is_refused_with_resource_constraint() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, private_set(element("urn:a", 600), "p1"))
        assert reply.get("type") == "result"
        used = h.backend.stored_bytes(DOMAIN)
        assert 600 < used < LIMIT

        reply, _ = await exchange(alice, private_set(element("urn:b", 400), "p2"))
        assert error_of(reply) == "resource-constraint"
        error = reply.find("error")
        assert error is not None and error.get("type") == "wait"
        assert error_text(reply) == f"{FULL_TEXT}; nothing was stored"
        assert h.backend.stored_bytes(DOMAIN) == used
        reply, _ = await exchange(alice, private_get("<x xmlns='urn:b'/>", "p3"))
        [x] = list(reply.find("query", NS_PRIVATE).elements())  # type: ignore[union-attr]
        assert x.children == []


async def test_emptying_an_element_is_allowed_when_full_and_makes_room_again() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        await exchange(alice, private_set(element("urn:a", 600), "p1"))
        reply, _ = await exchange(alice, private_set(element("urn:b", 400), "p2"))
        assert error_of(reply) == "resource-constraint"
        # Same size again: does not grow the storage, so it passes even this close to full.
        reply, _ = await exchange(alice, private_set(element("urn:a", 600), "p3"))
        assert reply.get("type") == "result"
        reply, _ = await exchange(alice, private_set("<x xmlns='urn:a'/>", "p4"))
        assert reply.get("type") == "result"
        reply, _ = await exchange(alice, private_set(element("urn:b", 400), "p5"))
        assert reply.get("type") == "result"
        assert h.backend.stored_bytes(DOMAIN) <= LIMIT


async def test_a_set_of_several_elements_is_stored_whole_or_not_at_all() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        both = element("urn:a", 450) + element("urn:b", 450) + element("urn:c", 450)
        reply, _ = await exchange(alice, private_set(both, "p1"))
        assert error_of(reply) == "resource-constraint"
        assert [k for k in h.backend.private if k[0] == DOMAIN] == []
        assert h.backend.stored_bytes(DOMAIN) == 0


async def test_the_limit_is_for_the_whole_host_not_per_account() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await exchange(alice, private_set(element("urn:a", 600), "p1"))
        reply, _ = await exchange(bob, private_set(element("urn:a", 400), "p1"))
        assert error_of(reply) == "resource-constraint"


def chat(n: int, body_bytes: int = 300) -> str:
    body = "z" * body_bytes
    return f"<message to='carol@example.test' type='chat' id='m{n}'><body>{body}</body></message>"


async def test_offline_message_past_the_limit_bounces_and_delivery_makes_room() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        for n in range(3):
            alice.send(chat(n))
        errors = named(await alice.recv(), "message", type="error")
        assert [e.get("id") for e in errors] == ["m2"]
        assert error_of(errors[0]) == "service-unavailable"
        assert error_text(errors[0]) == f"{FULL_TEXT}; the message was not stored"
        assert await h.backend.count(DOMAIN, "carol") == 2
        assert 0 < h.backend.stored_bytes(DOMAIN) <= LIMIT

        carol = await h.online("carol", presence=False)
        carol.send("<presence/>")  # initial presence: the two stored messages arrive
        assert len(named(await carol.recv(), "message")) == 2
        assert h.backend.stored_bytes(DOMAIN) == 0
        carol.send("<presence type='unavailable'/>")
        await carol.recv()
        alice.send(chat(3))
        assert named(await alice.recv(), "message", type="error") == []
        assert await h.backend.count(DOMAIN, "carol") == 1


async def test_offline_messages_and_private_xml_share_the_limit() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(alice, private_set(element("urn:a", 800), "p1"))
        assert reply.get("type") == "result"
        alice.send(chat(0))
        [bounce] = named(await alice.recv(), "message", type="error")
        assert error_of(bounce) == "service-unavailable"
        assert "full" in error_text(bounce)
        assert await h.backend.count(DOMAIN, "carol") == 0


async def test_a_raised_limit_applies_at_once() -> None:
    async with Harness(modules=MODULES, limits=limited()) as h:
        alice = await h.online("alice")
        await exchange(alice, private_set(element("urn:a", 600), "p1"))
        reply, _ = await exchange(alice, private_set(element("urn:b", 600), "p2"))
        assert error_of(reply) == "resource-constraint"
        host = h.backend.hosts[DOMAIN]
        h.backend.put_host(replace(host, limits=limited(10 * LIMIT)))
        reply, _ = await exchange(alice, private_set(element("urn:b", 600), "p3"))
        assert reply.get("type") == "result"
        h.backend.put_host(replace(host, limits=limited(None)))  # unlimited
        reply, _ = await exchange(alice, private_set(element("urn:c", 20_000), "p4"))
        assert reply.get("type") == "result"
        # Lowered under what is stored: nothing is deleted, growth is refused, shrinking is not.
        h.backend.put_host(replace(host, limits=limited(LIMIT)))
        reply, _ = await exchange(alice, private_set(element("urn:d", 1), "p5"))
        assert error_of(reply) == "resource-constraint"
        reply, _ = await exchange(alice, private_set("<x xmlns='urn:c'/>", "p6"))
        assert reply.get("type") == "result"
