"""Interop with slixmpp on a server with the default IM modules: roster and subscriptions
between two accounts, presence, carbons to a second resource."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

from .conftest import LiveServer
from .harness import DOMAIN, PASSWORD, settings
from .test_interop_slixmpp import close, connect, make_bot

pytestmark = [pytest.mark.anyio, pytest.mark.interop]


@pytest.fixture
async def live_im(cert_dir: Path) -> AsyncIterator[LiveServer]:
    backend = MemoryBackend(iterations=4096)
    backend.add_host(DOMAIN, limits=HostLimits(message_rate=None))
    for user in ("alice", "bob"):
        backend.create_account(DOMAIN, user, PASSWORD)
    server = XmppServer.with_memory_backend(
        settings(
            require_encryption=True,
            allow_plain_without_tls=False,
            direct_tls_enabled=True,
            c2s_direct_tls_port=0,
            certificate_dir=cert_dir,
        ),
        backend,
        modules=DEFAULT_MODULES,
    )
    await server.start()
    assert server.c2s_port and server.direct_tls_port
    yield LiveServer(server, backend, server.c2s_port, server.direct_tls_port)
    await server.stop()


async def wait_until(check: Any, timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_subscription_roster_and_presence(live_im: LiveServer) -> None:
    alice = make_bot(live_im, "alice")
    bob = make_bot(live_im, "bob")
    await connect(alice, live_im)
    await connect(bob, live_im)
    # requesting the roster makes each an "interested resource" (RFC 6121 §2.1.6): pushes
    await alice.get_roster()
    await bob.get_roster()
    alice.send_presence(pto="bob@example.test", ptype="subscribe")
    # slixmpp auto-authorizes and auto-subscribes back by default: both end with 'both'
    await wait_until(lambda: alice.client_roster["bob@example.test"]["subscription"] == "both")
    await wait_until(lambda: bob.client_roster["alice@example.test"]["subscription"] == "both")
    stored = await live_im.backend.get_roster(DOMAIN, "alice")
    assert [(i.jid, i.subscription) for i in stored[1]] == [("bob@example.test", "both")]
    # presence flows both ways once subscribed
    await wait_until(lambda: bool(alice.client_roster["bob@example.test"].resources))
    await wait_until(lambda: bool(bob.client_roster["alice@example.test"].resources))
    bob.send_presence(pshow="away", pstatus="lunch")
    await wait_until(
        lambda: any(
            r.get("show") == "away"
            for r in alice.client_roster["bob@example.test"].resources.values()
        )
    )
    await close(alice, bob)


async def test_carbons_to_a_second_resource(live_im: LiveServer) -> None:
    phone = make_bot(live_im, "alice", resource="phone")
    laptop = make_bot(live_im, "alice", resource="laptop")
    bob = make_bot(live_im, "bob")
    for bot in (phone, laptop):
        bot.register_plugin("xep_0280")
    carbons: asyncio.Queue[Any] = asyncio.Queue()
    laptop.add_event_handler("carbon_received", carbons.put_nowait)
    await connect(phone, live_im)
    await connect(laptop, live_im)
    await connect(bob, live_im)
    await laptop.plugin["xep_0280"].enable()
    await phone.plugin["xep_0280"].enable()
    bob.send_message(mto=str(phone.boundjid), mbody="to the phone", mtype="chat")
    got = await asyncio.wait_for(phone.inbox.get(), 5)
    assert got["body"] == "to the phone"
    carbon = await asyncio.wait_for(carbons.get(), 5)
    assert carbon["carbon_received"]["body"] == "to the phone"
    await close(phone, laptop, bob)
