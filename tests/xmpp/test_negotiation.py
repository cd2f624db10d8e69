"""The stream's negotiation steps (SASL, resource binding, XEP-0198): what each offers in which
state, and that each takes only its own elements (core/negotiation.py)."""

from __future__ import annotations

import pytest

from imhost.xmpp.core.binding import ResourceBinding
from imhost.xmpp.core.negotiation import NegotiationStep, State
from imhost.xmpp.core.parser import parse_fragment
from imhost.xmpp.core.saslauth import SaslAuth
from imhost.xmpp.core.stream_management import StreamManagement
from imhost.xmpp.core.xml import NS_BIND, NS_SASL, NS_SESSION, NS_SM

from .harness import DOMAIN, HEADER, Harness

pytestmark = pytest.mark.anyio

BIND = f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{NS_BIND}'/></iq>"
RESUME = f"<resume xmlns='{NS_SM}' previd='x' h='0'/>"
AUTH = f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGFsaWNlAHg=</auth>"


async def test_the_stream_drives_sasl_binding_and_sm_in_that_order() -> None:
    async with Harness() as h:
        stream = h.client().stream
        steps: tuple[NegotiationStep, ...] = stream.steps
        assert [type(step) for step in steps] == [SaslAuth, ResourceBinding, StreamManagement]
        assert steps == (stream.sasl, stream.binding, stream.sm)


async def test_before_authentication_only_sasl_offers_something() -> None:
    async with Harness() as h:
        c = h.client()
        [features] = await c.open()
        stream = c.stream
        assert "<mechanism>SCRAM-SHA-256</mechanism>" in stream.sasl.offer()
        assert (stream.binding.offer(), stream.sm.offer()) == ("", "")
        assert [(e.name, e.ns) for e in features.elements()] == [("mechanisms", NS_SASL)]


async def test_after_authentication_binding_and_sm_offer_and_sasl_does_not() -> None:
    async with Harness() as h:
        c = h.client()
        assert (await c.login_plain("alice")).name == "success"
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        features = await c.wait_for("features")
        stream = c.stream
        assert stream.sasl.offer() == ""
        assert [(e.name, e.ns) for e in features.elements()] == [
            ("bind", NS_BIND),
            ("session", NS_SESSION),
            ("sm", NS_SM),
        ]


async def test_a_step_takes_only_its_own_elements_in_its_state() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        stream = c.stream
        # not authenticated: binding and resumption are not theirs yet
        assert stream.binding.negotiate(parse_fragment(BIND)) is False
        assert stream.sm.negotiate(parse_fragment(RESUME)) is False
        assert stream.sasl.negotiate(parse_fragment(BIND)) is False
        assert stream.state is State.NEGOTIATING
        assert await c.recv() == []


async def test_sasl_after_authentication_is_a_policy_violation() -> None:
    async with Harness() as h:
        c = h.client()
        assert (await c.login_plain("alice")).name == "success"
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        await c.wait_for("features")
        c.send(AUTH)
        error = await c.wait_for("error")
        assert error.find("policy-violation") is not None
        assert c.stream.state is State.CLOSED


async def test_resumption_moves_the_session_and_its_counters_to_the_new_stream() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob", "phone")
        b.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        [enabled] = await b.recv()
        a.send("<message to='bob@example.test/phone'><body>one</body></message>")
        await b.recv()
        old = b.stream
        sent, received, previd = old.sm.sent, old.sm.received, enabled.get("id")
        old.connection_lost(ConnectionResetError())
        assert old.state is State.HIBERNATING
        b2 = h.client()
        assert (await b2.login_plain("bob")).name == "success"
        b2.restart()
        b2.send(HEADER.format(to=DOMAIN))
        await b2.wait_for("features")
        b2.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>")
        resumed = await b2.wait_for("resumed")
        assert resumed.get("h") == str(received)
        new = b2.stream
        assert old.state is State.CLOSED and new.state is State.BOUND
        assert (new.sm.sent, new.sm.received, new.sm.id) == (sent, received, previd)
        assert new.jid_str == "bob@example.test/phone"
        assert h.server.router.resumable[previd] is new
