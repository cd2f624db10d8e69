"""Routing rules (RFC 6121 §8), offline storage (XEP-0160/0203), tenant isolation, limits,
runtime host changes, and the module API."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.api import (
    Hook,
    IqTarget,
    IqType,
    Module,
    SessionEvent,
    SessionKey,
    StanzaEvent,
    result_of,
)
from imhost.xmpp.ports import HostLimits

from .harness import DOMAIN, OTHER, Harness
from .test_stream import stream_error_from_raw

pytestmark = pytest.mark.anyio


def bodies(els: list[Element]) -> list[str]:
    return [el.find_text("body") or "" for el in els if el.name == "message"]


def error_condition(el: Element) -> str | None:
    err = el.find("error")
    if err is None:
        return None
    for child in err.elements():
        if child.name != "text":
            return child.name
    return None


async def test_message_to_full_jid_goes_to_that_resource_only() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b1 = await h.online("bob", "one")
        b2 = await h.online("bob", "two")
        a.send("<message to='bob@example.test/two' type='chat'><body>to two</body></message>")
        assert bodies(await b2.recv()) == ["to two"]
        assert bodies(await b1.recv()) == []


async def test_bare_jid_chat_goes_to_highest_priority() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        low = await h.online("bob", "low", priority=1)
        high = await h.online("bob", "high", priority=5)
        a.send("<message to='bob@example.test' type='chat'><body>hi</body></message>")
        assert bodies(await high.recv()) == ["hi"]
        assert bodies(await low.recv()) == []


async def test_bare_jid_equal_priorities_all_receive() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b1 = await h.online("bob", "one", priority=2)
        b2 = await h.online("bob", "two", priority=2)
        a.send("<message to='bob@example.test'><body>both</body></message>")
        assert bodies(await b1.recv()) == ["both"]
        assert bodies(await b2.recv()) == ["both"]


async def test_negative_priority_does_not_get_bare_messages_they_go_offline() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        neg = await h.online("bob", "bot", priority=-1)
        a.send("<message to='bob@example.test' type='chat'><body>stored</body></message>")
        assert bodies(await neg.recv()) == []
        assert await h.backend.count(DOMAIN, "bob") == 1


async def test_headline_to_bare_goes_to_all_non_negative_and_is_never_stored() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b1 = await h.online("bob", "one", priority=0)
        b2 = await h.online("bob", "two", priority=3)
        a.send("<message to='bob@example.test' type='headline'><body>news</body></message>")
        assert bodies(await b1.recv()) == ["news"]
        assert bodies(await b2.recv()) == ["news"]
        a.send("<message to='carol@example.test' type='headline'><body>news</body></message>")
        await a.recv()
        assert await h.backend.count(DOMAIN, "carol") == 0


async def test_groupchat_to_account_is_service_unavailable() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        await h.online("bob")
        a.send("<message to='bob@example.test' type='groupchat' id='g'><body>x</body></message>")
        [err] = await a.recv()
        assert err.get("type") == "error" and error_condition(err) == "service-unavailable"


async def test_message_to_offline_full_jid_falls_back_to_bare() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob", "phone")
        a.send("<message to='bob@example.test/gone' type='chat'><body>fallback</body></message>")
        assert bodies(await b.recv()) == ["fallback"]


async def test_offline_storage_and_delivery_with_delay_stamp() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("<message to='carol@example.test' type='chat' id='o1'><body>one</body></message>")
        a.send("<message to='carol@example.test'><body>two</body></message>")
        a.send(
            "<message to='carol@example.test' type='chat'><active "
            "xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        await a.recv()
        assert await h.backend.count(DOMAIN, "carol") == 2
        c = await h.online("carol", presence=False)
        assert await c.recv() == []  # nothing until available presence
        c.send("<presence/>")
        got = await c.recv()
        assert bodies(got) == ["one", "two"]
        delay = got[0].find("delay", "urn:xmpp:delay")
        assert delay is not None and delay.get("stamp", "").endswith("Z")
        assert got[0].get("from") == "alice@example.test/res"
        assert await h.backend.count(DOMAIN, "carol") == 0


async def test_offline_limit_then_service_unavailable() -> None:
    async with Harness(limits=HostLimits(message_rate=None, max_offline_messages=2)) as h:
        a = await h.online("alice")
        for i in range(3):
            a.send(f"<message to='carol@example.test' id='m{i}'><body>{i}</body></message>")
        got = await a.recv()
        assert [error_condition(e) for e in got] == ["service-unavailable"]
        assert got[0].get("id") == "m2"


async def test_message_to_unknown_account_is_service_unavailable() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("<message to='nobody@example.test' id='x'><body>?</body></message>")
        [err] = await a.recv()
        assert error_condition(err) == "service-unavailable"


async def test_message_without_to_goes_to_own_bare_jid() -> None:
    async with Harness() as h:
        a1 = await h.online("alice", "one")
        a1.send("<message><body>note to self</body></message>")
        assert bodies(await a1.recv()) == ["note to self"]


async def test_from_is_stamped_and_content_reserialised() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        a.send(
            "<message to='BOB@Example.Test' from='alice@example.test'>"
            "<body>a &lt; b &amp; &quot;c&quot;</body>"
            "<x xmlns='urn:custom' k='v&apos;'>deep<y/></x></message>"
        )
        await b.recv(5)
        raw = b.raw
        assert "from='alice@example.test/res'" in raw
        assert "to='bob@example.test'" in raw
        assert '<body>a &lt; b &amp; "c"</body>' in raw
        assert "<x xmlns='urn:custom' k='v&apos;'>deep<y/></x>" in raw


async def test_malformed_to_is_jid_malformed() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("<message to='a@b@c/' id='j'><body>x</body></message>")
        [err] = await a.recv()
        assert error_condition(err) == "jid-malformed"


# -- tenant isolation ---------------------------------------------------------------------


async def test_tenants_are_isolated() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        m = h.client()
        assert (await m.login_plain("mallory", to=OTHER)).name == "success"
        m.restart()
        m.send(
            f"<stream:stream xmlns='jabber:client' xmlns:stream="
            f"'http://etherx.jabber.org/streams' to='{OTHER}' version='1.0'>"
        )
        await m.wait_for("features")
        m.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        await m.wait_for("iq")
        m.send("<presence/>")
        m.send("<message to='alice@example.test' id='x1'><body>hi from other</body></message>")
        m.send("<message to='alice@example.test/res' id='x2'><body>full</body></message>")
        m.send(
            "<iq to='alice@example.test/res' type='get' id='x3'><ping xmlns='urn:xmpp:ping'/></iq>"
        )
        m.send("<presence to='alice@example.test' type='subscribe'/>")
        got = await m.recv()
        assert [error_condition(e) for e in got] == ["remote-server-not-found"] * 4
        assert await a.recv() == []
        # and logging in to a host with another host's account fails
        x = h.client()
        assert (await x.login_plain("alice", to=OTHER)).name == "failure"


async def test_federation_between_local_hosts_only_when_both_allow() -> None:
    async with Harness() as h:
        h.backend.put_host(
            replace(
                h.backend.hosts[DOMAIN],
                limits=HostLimits(message_rate=None, federation_allowed=True),
            )
        )
        a = await h.online("alice")
        a.send(f"<message to='mallory@{OTHER}' id='f'><body>x</body></message>")
        [err] = await a.recv()
        assert error_condition(err) == "remote-server-not-found"


# -- runtime host changes -------------------------------------------------------------------


async def test_suspension_closes_sessions_and_refuses_logins_until_reactivated() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        h.backend.suspend_host(DOMAIN, "Payment overdue: contact billing")
        await a.recv()
        assert stream_error_from_raw(a) == "policy-violation"
        assert "Payment overdue: contact billing" in a.raw
        assert a.transport.closed
        c = h.client()
        result = await c.login_plain("bob")
        assert result.find("account-disabled") is not None
        assert result.find_text("text") == "Payment overdue: contact billing"
        h.backend.reactivate_host(DOMAIN)
        assert (await h.client().login_plain("bob")).name == "success"


async def test_host_added_and_removed_at_runtime() -> None:
    async with Harness() as h:
        h.backend.add_host("new.test")
        h.backend.create_account("new.test", "zed", "password123")
        c = h.client()
        assert (await c.login_plain("zed", "password123", to="new.test")).name == "success"
        h.backend.remove_host("new.test")
        await c.recv()
        assert stream_error_from_raw(c) == "host-gone"
        d = h.client()
        await d.open("new.test")
        assert stream_error_from_raw(d) == "host-unknown"


async def test_disabling_an_account_closes_its_sessions() -> None:
    async with Harness() as h:
        b = await h.online("bob")
        a = await h.online("alice")
        h.backend.disable_account(DOMAIN, "bob", "disabled by your administrator")
        await b.recv()
        assert stream_error_from_raw(b) == "policy-violation"
        assert "disabled by your administrator" in b.raw
        assert not a.transport.closed


# -- rate limit -----------------------------------------------------------------------------


async def test_message_rate_shapes_then_refuses() -> None:
    async with Harness(limits=HostLimits(message_rate=1.0, message_burst=3)) as h:
        a = await h.online("alice")
        await h.online("bob")
        for i in range(8):
            a.send(f"<message to='bob@example.test' id='r{i}'><body>{i}</body></message>")
        got = await a.recv()
        refused = [e.get("id") for e in got if error_condition(e) == "policy-violation"]
        assert refused, "a flood far beyond the burst is refused"
        assert "r0" not in refused and "r2" not in refused
        assert a.transport.paused, "a sender over its rate is slowed down first"


# -- iq rules ---------------------------------------------------------------------------------


async def test_unhandled_iq_is_service_unavailable_and_result_is_not_answered() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("<iq type='get' id='q1' to='example.test'><query xmlns='urn:unknown'/></iq>")
        a.send("<iq type='result' id='q2' to='example.test'/>")
        got = await a.recv()
        assert len(got) == 1 and error_condition(got[0]) == "service-unavailable"
        assert got[0].get("id") == "q1"


async def test_iq_needs_exactly_one_payload_and_an_id() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("<iq type='get' id='q1'><a xmlns='x'/><b xmlns='y'/></iq>")
        a.send("<iq type='get'><a xmlns='x'/></iq>")
        got = await a.recv()
        assert [error_condition(e) for e in got] == ["bad-request", "bad-request"]


async def test_iq_to_full_jid_is_forwarded_and_answer_returns() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        a.send(
            "<iq type='get' id='v1' to='bob@example.test/res'>"
            "<query xmlns='jabber:iq:version'/></iq>"
        )
        [iq] = await b.recv()
        assert iq.get("from") == "alice@example.test/res"
        b.send(
            "<iq type='result' id='v1' to='alice@example.test/res'>"
            "<query xmlns='jabber:iq:version'><name>x</name></query></iq>"
        )
        [answer] = await a.recv()
        assert answer.get("type") == "result" and answer.get("from") == "bob@example.test/res"
        a.send("<iq type='get' id='v2' to='bob@example.test/nope'><q xmlns='a'/></iq>")
        [err] = await a.recv()
        assert error_condition(err) == "service-unavailable"


# -- presence defaults ---------------------------------------------------------------------


async def test_directed_presence_and_unavailable() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        a.send("<presence to='bob@example.test'><show>away</show></presence>")
        [p] = await b.recv()
        assert p.get("from") == "alice@example.test/res" and p.find_text("show") == "away"
        a.send("<presence type='unavailable'/>")
        await a.recv()
        session = h.server.router.sessions_of(DOMAIN, "alice")[0]
        assert not session.available


# -- module API -----------------------------------------------------------------------------

SEEN = SessionKey[int]("seen", 0)


class EchoModule(Module):
    """A test module: iq handler (sync and async), hooks, stream feature, session state."""

    name = "echo"

    def load(self) -> None:
        self.bound: list[str] = []
        self.closed: list[str] = []
        self.ctx.add_feature("urn:test:echo")
        self.ctx.iq_handler("urn:test:echo", IqType.GET, self.echo, IqTarget.BOTH)
        self.ctx.iq_handler("urn:test:slow", IqType.GET, self.slow, IqTarget.HOST)
        self.ctx.hook(Hook.MESSAGE_OUT, self.count, priority=10)
        self.ctx.hook(Hook.MESSAGE_TO_BARE, self.swallow_secret)
        self.ctx.hook(Hook.DELIVER, self.block_spam)
        self.ctx.hook(Hook.SESSION_BOUND, lambda e: self.bound.append(e.session.jid_str))
        self.ctx.hook(Hook.SESSION_CLOSED, self.on_closed)
        self.ctx.add_stream_feature(lambda s: Element("echo", "urn:test:echo"))

    def echo(self, event: StanzaEvent) -> Element:
        reply = result_of(event.stanza)
        reply.sub("echo", "urn:test:echo", text=str(event.to))
        return reply

    async def slow(self, event: StanzaEvent) -> Element:
        await asyncio.sleep(0.02)
        return result_of(event.stanza)

    def count(self, event: StanzaEvent) -> None:
        assert event.session is not None
        event.session.set(SEEN, event.session.get(SEEN) + 1)

    async def swallow_secret(self, event: StanzaEvent) -> bool:
        await asyncio.sleep(0)
        return event.stanza.find_text("body") == "secret"

    def block_spam(self, event: StanzaEvent) -> bool:
        return event.stanza.find_text("body") == "spam"

    def on_closed(self, event: SessionEvent) -> None:
        self.closed.append(event.session.jid_str)


async def test_module_api() -> None:
    async with Harness(modules=[EchoModule]) as h:
        module = h.server.router.hosts[DOMAIN].modules[0]
        assert isinstance(module, EchoModule)
        a = await h.online("alice")
        b = await h.online("bob")
        assert "<echo xmlns='urn:test:echo'/>" in a.raw
        assert module.bound == ["alice@example.test/res", "bob@example.test/res"]
        a.send("<iq type='get' id='e1'><echo xmlns='urn:test:echo'/></iq>")
        a.send("<iq type='get' id='e2' to='example.test'><slow xmlns='urn:test:slow'/></iq>")
        a.send("<iq type='get' id='e3' to='example.test'><echo xmlns='urn:test:echo'/></iq>")
        await asyncio.sleep(0.1)
        got = await a.recv(40)
        # in-order processing: e2 (async) is answered before e3
        assert [e.get("id") for e in got] == ["e1", "e2", "e3"]
        assert got[0].find("echo").text == "alice@example.test"
        assert got[2].find("echo").text == "example.test"
        a.send("<message to='bob@example.test'><body>secret</body></message>")
        a.send("<message to='bob@example.test/res'><body>spam</body></message>")
        a.send("<message to='bob@example.test'><body>fine</body></message>")
        assert bodies(await b.recv(40)) == ["fine"]
        assert h.server.router.sessions_of(DOMAIN, "alice")[0].get(SEEN) == 3
        b.send("</stream:stream>")
        await b.recv()
        assert module.closed == ["bob@example.test/res"]


class NonzaAndPreauthModule(Module):
    """Registers a top-level element handler and a pre-authentication iq handler."""

    name = "nonza"

    def load(self) -> None:
        self.seen: list[str] = []
        self.ctx.nonza_handler("urn:test:nonza", lambda s, el: self.seen.append(el.name))
        self.ctx.preauth_iq_handler("urn:test:pre", self.pre)

    async def pre(self, session: object, iq: Element) -> Element:
        await asyncio.sleep(0)
        reply = result_of(iq)
        reply.sub("pre", "urn:test:pre", text="before auth")
        return reply


async def test_nonza_and_preauth_iq_dispatch() -> None:
    async with Harness(modules=[NonzaAndPreauthModule]) as h:
        module = h.server.router.hosts[DOMAIN].modules[0]
        c = h.client()
        await c.open()
        c.send("<iq type='get' id='p1'><q xmlns='urn:test:pre'/></iq>")
        reply = await c.wait_for("iq")
        assert reply.get("id") == "p1" and reply.find("pre").text == "before auth"
        # an iq nobody handles before authentication is still refused
        c.send("<iq type='get' id='p2'><q xmlns='urn:other'/></iq>")
        await c.recv()
        assert stream_error_from_raw(c) == "not-authorized"
        a = await h.online("alice")
        a.send("<inactive xmlns='urn:test:nonza'/>")
        await a.recv()
        assert module.seen == ["inactive"]
        a.send("<unknown xmlns='urn:test:nothing'/>")
        await a.recv()
        assert stream_error_from_raw(a) == "unsupported-stanza-type"
