"""Stream conversations (XML in, XML out) for the RFC 6120 rules, no sockets."""

from __future__ import annotations

import asyncio
import base64

import pytest

from imhost.xmpp.core.xml import NS_SASL, NS_STREAM_ERRORS

from .harness import DOMAIN, HEADER, PASSWORD, Client, Harness

pytestmark = pytest.mark.anyio


def stream_error(client: Client) -> str | None:
    for el in client.received:
        if el.name == "error" and el.ns == "http://etherx.jabber.org/streams":
            for child in el.elements():
                if child.ns == NS_STREAM_ERRORS and child.name != "text":
                    return child.name
    return None


async def error_of(client: Client) -> str | None:
    await client.recv(5)
    client._pump()
    return stream_error_from_raw(client)


def stream_error_from_raw(client: Client) -> str | None:
    raw = client.raw
    start = raw.find("<stream:error>")
    if start < 0:
        return None
    inner = raw[start + len("<stream:error>") :]
    return inner[1 : inner.find(" ")]


# -- stream header (RFC 6120 §4.7, §4.9) ----------------------------------------------------


async def test_header_answered_with_header_and_features() -> None:
    async with Harness() as h:
        c = h.client()
        els = await c.open()
        assert c.header is not None
        assert c.header["from"] == DOMAIN and c.header["version"] == "1.0" and c.header["id"]
        features = els[0]
        assert features.name == "features"
        mechs = [m.text for m in features.find("mechanisms", NS_SASL).elements()]
        assert mechs == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


async def test_unknown_host_gets_host_unknown() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open("nowhere.example")
        assert stream_error_from_raw(c) == "host-unknown"
        assert c.transport.closed
        assert c.raw.endswith("</stream:stream>")


async def test_missing_to_gets_host_unknown() -> None:
    async with Harness() as h:
        c = h.client()
        c.send(
            "<stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        )
        assert await error_of(c) == "host-unknown"


async def test_wrong_stream_namespace_gets_invalid_namespace() -> None:
    async with Harness() as h:
        c = h.client()
        c.send(
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' "
            f"to='{DOMAIN}' version='1.0'>"
        )
        assert await error_of(c) == "invalid-namespace"


async def test_wrong_content_namespace_gets_invalid_namespace() -> None:
    async with Harness() as h:
        c = h.client()
        c.send(
            "<stream:stream xmlns='jabber:server' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
        )
        assert await error_of(c) == "invalid-namespace"


async def test_missing_version_gets_unsupported_version() -> None:
    async with Harness() as h:
        c = h.client()
        c.send(
            "<stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}'>"
        )
        assert await error_of(c) == "unsupported-version"


async def test_not_well_formed() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send("<message><body>oops</message>")
        assert await error_of(c) == "not-well-formed"


@pytest.mark.parametrize(
    "payload",
    [
        "<!DOCTYPE x [<!ENTITY a 'b'>]>",
        "<!-- a comment -->",
        "<?pi something?>",
    ],
)
async def test_restricted_xml_before_header(payload: str) -> None:
    async with Harness() as h:
        c = h.client()
        c.send("<?xml version='1.0'?>" + payload)
        assert await error_of(c) == "restricted-xml"
        assert c.transport.closed


async def test_comment_inside_stream_is_restricted() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send("<!-- hi -->")
        assert await error_of(c) == "restricted-xml"


async def test_undefined_entity_is_refused() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send("<message><body>&lol;</body></message>")
        assert await error_of(c) in ("restricted-xml", "not-well-formed")


async def test_invalid_utf8_is_not_well_formed() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send(b"<message><body>\xff\xfe</body></message>")
        assert await error_of(c) == "not-well-formed"


async def test_non_utf8_declaration_is_refused() -> None:
    async with Harness() as h:
        c = h.client()
        c.send("<?xml version='1.0' encoding='ISO-8859-1'?>" + HEADER.format(to=DOMAIN)[21:])
        assert await error_of(c) == "unsupported-encoding"


async def test_stanza_size_limit_applies_while_parsing() -> None:
    async with Harness(max_stanza_bytes=4096) as h:
        c = h.client()
        await c.open()
        c.send("<message><body>")
        for _ in range(3):
            c.send("x" * 2000)  # never closed: the limit must trip without the end tag
        assert await error_of(c) == "policy-violation"


async def test_depth_limit() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send("<a>" * 100)
        assert await error_of(c) == "policy-violation"


async def test_attribute_count_limit() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        attrs = " ".join(f"a{i}='x'" for i in range(200))
        c.send(f"<message {attrs}/>")
        assert await error_of(c) == "policy-violation"


async def test_stanza_before_auth_is_not_authorized() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send("<message to='bob@example.test'><body>x</body></message>")
        assert await error_of(c) == "not-authorized"


async def test_stanza_before_bind_is_not_authorized() -> None:
    async with Harness() as h:
        c = h.client()
        assert (await c.login_plain("alice")).name == "success"
        c.restart()
        await c.open()
        c.send("<message to='bob@example.test'><body>x</body></message>")
        assert await error_of(c) == "not-authorized"


async def test_whitespace_keepalive_is_accepted() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("   \n  ")
        a.send(" ")
        assert await a.recv() == []
        assert not a.transport.closed


async def test_text_at_stream_level_is_bad_format() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("hello")
        assert await error_of(a) == "bad-format"


async def test_client_closing_stream_gets_closed() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("</stream:stream>")
        await a.recv()
        assert a.raw.endswith("</stream:stream>")
        assert a.transport.closed
        assert h.server.router.sessions_of(DOMAIN, "alice") == []


async def test_negotiation_timeout() -> None:
    async with Harness(negotiation_timeout_seconds=0.05) as h:
        c = h.client()
        c.send("<?xml version='1.0'?>")
        import asyncio

        await asyncio.sleep(0.15)
        assert stream_error_from_raw(c) == "connection-timeout"
        assert c.transport.closed


async def test_unauthenticated_connections_per_address_are_limited() -> None:
    async with Harness(unauthenticated_per_address=3) as h:
        clients = [h.client("198.51.100.7") for _ in range(4)]
        await clients[-1].recv()
        assert stream_error_from_raw(clients[-1]) == "policy-violation"
        assert not clients[0].transport.closed
        other = h.client("198.51.100.8")
        await other.open()
        assert not other.transport.closed


async def test_unsupported_stanza_type() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send("<foo/>")
        assert await error_of(a) == "unsupported-stanza-type"


async def test_invalid_from_is_a_stream_error() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        a.send(
            "<message from='bob@example.test/x' to='carol@example.test'><body>x</body></message>"
        )
        assert await error_of(a) == "invalid-from"


# -- SASL (RFC 6120 §6) -----------------------------------------------------------------------


async def test_plain_success_and_wrong_password_look_alike_for_unknown_user() -> None:
    async with Harness() as h:
        wrong = h.client()
        r1 = await wrong.login_plain("alice", "not the password")
        unknown = h.client()
        r2 = await unknown.login_plain("nobody", "not the password")
        assert r1.serialize() == r2.serialize()
        assert r1.find("not-authorized") is not None


async def test_scram_unknown_user_gets_a_challenge_like_a_known_one() -> None:
    async with Harness() as h:
        c = h.client()
        result = await c.login_scram("nobody", "whatever")
        assert result.name == "failure" and result.find("not-authorized") is not None
        # the same fake salt every time (RFC 5802 §9)
        c1, c2 = h.client(), h.client()
        salts = []
        for c in (c1, c2):
            await c.open()
            msg = base64.b64encode(b"n,,n=nobody,r=abc").decode()
            c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{msg}</auth>")
            ch = await c.wait_for("challenge")
            salts.append(base64.b64decode(ch.text).decode().split(",")[1])
        assert salts[0] == salts[1]


async def test_scram_sha1_and_sha256_succeed() -> None:
    async with Harness() as h:
        for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
            c = h.client()
            assert (await c.login_scram("alice", mech=mech)).name == "success"
            assert h.backend.auth_log[-1].mechanism == mech


async def test_plain_is_not_offered_without_tls_by_default() -> None:
    async with Harness(allow_plain_without_tls=False) as h:
        c = h.client()
        features = (await c.open())[0]
        mechs = [m.text for m in features.find("mechanisms", NS_SASL).elements()]
        assert "PLAIN" not in mechs
        blob = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{blob}</auth>")
        failure = await c.wait_for("failure")
        assert failure.find("invalid-mechanism") is not None


async def test_unknown_mechanism() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='X-MAGIC'>=</auth>")
        assert (await c.wait_for("failure")).find("invalid-mechanism") is not None


async def test_bad_base64_is_incorrect_encoding() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>!!!notbase64</auth>")
        assert (await c.wait_for("failure")).find("incorrect-encoding") is not None


async def test_abort() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'/>")
        await c.wait_for("challenge")
        c.send(f"<abort xmlns='{NS_SASL}'/>")
        assert (await c.wait_for("failure")).find("aborted") is not None


async def test_three_failures_close_the_connection() -> None:
    async with Harness() as h:
        c = h.client()
        await c.open()
        blob = base64.b64encode(b"\0alice\0nope").decode()
        for _ in range(3):
            c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{blob}</auth>")
            await c.wait_for("failure")
        await c.recv()
        assert stream_error_from_raw(c) == "policy-violation"
        assert c.transport.closed


async def test_lockout_after_repeated_failures_is_reported_and_enforced() -> None:
    async with Harness() as h:
        for _ in range(5):
            c = h.client()
            await c.login_plain("bob", "wrong password")
        assert [a.success for a in h.backend.auth_log] == [False] * 5
        c = h.client()
        result = await c.login_plain("bob", PASSWORD)
        assert result.name == "failure"
        assert result.find("temporary-auth-failure") is not None


async def test_disabled_account_gets_account_disabled_with_reason() -> None:
    async with Harness() as h:
        h.backend.disable_account(DOMAIN, "carol", "left the company")
        c = h.client()
        result = await c.login_plain("carol")
        assert result.find("account-disabled") is not None
        assert result.find_text("text") == "left the company"
        # and a wrong password does not reveal the account's state
        other = h.client()
        result = await other.login_plain("carol", "wrong")
        assert result.find("not-authorized") is not None


async def test_a_suspended_service_tells_its_reason_only_after_a_right_password() -> None:
    async with Harness() as h:
        h.backend.suspend_host(DOMAIN, "Payment overdue: contact billing")
        for user, password in (("nobody", PASSWORD), ("bob", "wrong password")):
            c = h.client()
            result = await c.login_plain(user, password)
            assert result.find("not-authorized") is not None, user
            assert "Payment overdue" not in c.raw, user
        result = await h.client().login_plain("bob")
        assert result.find("account-disabled") is not None
        assert result.find_text("text") == "Payment overdue: contact billing"


async def test_sasl_answers_wait_the_growing_delay_of_the_lockout_model() -> None:
    async with Harness() as h:
        loop = asyncio.get_running_loop()
        waits = []
        for _ in range(4):
            c = h.client()
            started = loop.time()
            result = await c.login_plain("bob", "wrong password")
            waits.append(loop.time() - started)
            assert result.find("not-authorized") is not None
        assert waits[0] < 0.4 and waits[1] < 0.4
        assert 0.5 <= waits[2] < 0.9
        assert 1.0 <= waits[3] < 1.5


async def test_pipelined_restart_after_success() -> None:
    """Bytes after <auth/> wait for the exchange and then go to the restarted stream."""
    async with Harness() as h:
        c = h.client()
        await c.open()
        blob = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        c.send(
            f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{blob}</auth>" + HEADER.format(to=DOMAIN)
        )
        await c.wait_for("success")
        c.restart()
        features = await c.wait_for("features")
        assert features.find("bind") is not None


# -- resource binding (RFC 6120 §7) ---------------------------------------------------------


async def test_bind_server_generated_resource() -> None:
    async with Harness() as h:
        c = h.client()
        await c.login_plain("alice")
        iq = await c.bind(None)
        jid = iq.find("bind").find_text("jid")
        assert jid.startswith("alice@example.test/") and len(jid) > len("alice@example.test/")


async def test_bind_resource_conflict_kicks_old_session() -> None:
    async with Harness() as h:
        first = await h.online("alice", "phone")
        second = await h.online("alice", "phone")
        await first.recv()
        assert stream_error_from_raw(first) == "conflict"
        sessions = h.server.router.sessions_of(DOMAIN, "alice")
        assert [s.stream_id for s in sessions] == [second.stream.stream_id]


async def test_legacy_session_iq_is_accepted() -> None:
    async with Harness() as h:
        c = await h.online("alice", presence=False)
        c.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        iq = await c.wait_for("iq")
        assert iq.get("type") == "result" and iq.get("id") == "s1"


async def test_per_account_connection_limit() -> None:
    from imhost.xmpp.ports import HostLimits

    async with Harness(limits=HostLimits(message_rate=None, max_connections_per_account=2)) as h:
        await h.online("alice", "a")
        await h.online("alice", "b")
        c = h.client()
        await c.login_plain("alice")
        iq = await c.bind("c")
        assert iq.get("type") == "error"
        assert iq.find("error").find("resource-constraint") is not None


async def test_per_service_connection_limit() -> None:
    from imhost.xmpp.ports import HostLimits

    async with Harness(limits=HostLimits(message_rate=None, max_connections=2)) as h:
        await h.online("alice")
        await h.online("bob")
        c = h.client()
        await c.login_plain("carol")
        iq = await c.bind("c")
        assert iq.find("error").find("resource-constraint") is not None


async def test_idle_parser_is_freed_and_recreated_transparently() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        assert a.stream.park_parser()
        assert a.stream.parser is None
        a.send("<message to='bob@example.test'><body>after a nap</body></message>")
        assert [m.find_text("body") for m in await b.recv()] == ["after a nap"]
        assert a.stream.parser is not None
        # not at a stanza boundary: never parked
        a.send("<message to='bob@example.test'><body>half")
        assert not a.stream.park_parser()
        a.send(" done</body></message>")
        assert [m.find_text("body") for m in await b.recv()] == ["half done"]
