"""Interop of the message archive (XEP-0313) with slixmpp's ``xep_0313`` plugin, a client
we did not write: its paged retrieval (XEP-0059, forward and reverse), a ``with`` filter,
the query form, and the XEP-0359 stanza id on a delivered message.

aioxmpp (0.13) has no MAM support, so it is not tested here."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

from ..conftest import LiveServer

slixmpp = pytest.importorskip("slixmpp")

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


class Bot(slixmpp.ClientXMPP):  # type: ignore[misc,name-defined]
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.started = asyncio.Event()
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_plaintext = False
        for plugin in ("xep_0030", "xep_0059", "xep_0313", "xep_0359"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)

    async def _start(self, _: Any) -> None:
        self.send_presence()
        self.started.set()

    def _message(self, msg: Any) -> None:
        if msg["type"] == "chat" and msg["body"]:
            self.messages.put_nowait(msg)


async def connect(live: LiveServer, user: str) -> Bot:
    bot = Bot(f"{user}@{live.domain}/slix", live.password)
    bot.connect("127.0.0.1", live.port)
    await asyncio.wait_for(bot.started.wait(), 10)
    return bot


def body_of(result: Any) -> str:
    return str(result["mam_result"]["forwarded"]["stanza"]["body"])


async def test_slixmpp_pages_through_the_archive(live_im: LiveServer) -> None:
    alice = await connect(live_im, "alice")
    bob = await connect(live_im, "bob")
    try:
        own = slixmpp.JID(f"alice@{live_im.domain}")
        for i in range(7):
            bob.send_message(mto=own, mbody=f"note {i}", mtype="chat")
        ids = []
        for _ in range(7):
            msg = await asyncio.wait_for(alice.messages.get(), 5)
            ids.append(msg["stanza_id"]["id"])
            assert msg["stanza_id"]["by"] == own
        assert len(set(ids)) == 7
        features = await alice.plugin["xep_0030"].get_info(jid=own, local=False, cached=False)
        assert "urn:xmpp:mam:2" in features["disco_info"]["features"]
        form = await alice.plugin["xep_0313"].get_fields(jid=own)
        assert {"with", "start", "end"} <= {f["var"] for f in form["fields"]}
        got = [body_of(m) async for m in alice.plugin["xep_0313"].iterate(jid=own, rsm={"max": 3})]
        assert got == [f"note {i}" for i in range(7)]
        newest_first = [
            body_of(m)
            async for m in alice.plugin["xep_0313"].iterate(jid=own, rsm={"max": 3}, reverse=True)
        ]
        assert newest_first == [f"note {i}" for i in reversed(range(7))]
        with_bob = [
            body_of(m)
            async for m in alice.plugin["xep_0313"].iterate(
                jid=own, with_jid=slixmpp.JID(f"bob@{live_im.domain}"), rsm={"max": 5}
            )
        ]
        assert len(with_bob) == 7
        nobody = [
            m
            async for m in alice.plugin["xep_0313"].iterate(
                jid=own, with_jid=slixmpp.JID(f"carol@{live_im.domain}")
            )
        ]
        assert nobody == []
        # bob's own archive has the sent copies
        sent = [
            body_of(m)
            async for m in bob.plugin["xep_0313"].iterate(
                jid=slixmpp.JID(f"bob@{live_im.domain}"), rsm={"max": 10}
            )
        ]
        assert sent == [f"note {i}" for i in range(7)]
    finally:
        for bot in (alice, bob):
            bot.disconnect(wait=0.2)
        await asyncio.sleep(0.3)
