"""XEP-0092 conversations: the server's version, and the client's kept for support."""

from __future__ import annotations

import pytest

from imhost.xmpp.modules.version import CLIENT_VERSION, NS_VERSION, VersionModule, server_version

from ..harness import DOMAIN
from .conv import Harness, error_of, exchange

pytestmark = pytest.mark.anyio


async def test_server_answers_its_name_and_version_without_os() -> None:
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='v1' to='{DOMAIN}'><query xmlns='{NS_VERSION}'/></iq>"
        )
        query = reply.find("query", NS_VERSION)
        assert reply.get("type") == "result" and query is not None
        assert query.find_text("name") == "imhost"
        assert query.find_text("version") == server_version()
        assert query.find("os") is None


async def test_the_server_asks_a_new_session_its_version_and_keeps_it() -> None:
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice", presence=False)
        ask = await alice.wait_for("iq")
        assert ask.get("type") == "get" and ask.get("from") == DOMAIN
        assert ask.find("query", NS_VERSION) is not None
        alice.send(
            f"<iq type='result' id='{ask.get('id')}' to='{DOMAIN}'><query xmlns='{NS_VERSION}'>"
            "<name>Conversations</name><version>2.16</version><os>Android 14</os></query></iq>"
        )
        await alice.recv()
        info = alice.stream.get(CLIENT_VERSION)
        assert info is not None
        assert (info.name, info.version, info.os) == ("Conversations", "2.16", "Android 14")
        module = h.server.router.hosts[DOMAIN].modules[0]
        assert isinstance(module, VersionModule)
        assert module.client_versions() == {"alice@example.test/res": info}


async def test_a_client_answering_with_an_error_is_not_identified() -> None:
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice", presence=False)
        ask = await alice.wait_for("iq")
        alice.send(
            f"<iq type='error' id='{ask.get('id')}' to='{DOMAIN}'><error type='cancel'>"
            "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
        await alice.recv()
        assert alice.stream.get(CLIENT_VERSION) is None


async def test_overlong_client_fields_are_cut() -> None:
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice", presence=False)
        ask = await alice.wait_for("iq")
        alice.send(
            f"<iq type='result' id='{ask.get('id')}'><query xmlns='{NS_VERSION}'>"
            f"<name>{'x' * 5000}</name><version>1</version></query></iq>"
        )
        await alice.recv()
        info = alice.stream.get(CLIENT_VERSION)
        assert info is not None and len(info.name) == 200 and info.os == ""


async def test_version_of_another_account_is_not_answered_by_the_server() -> None:
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice, f"<iq type='get' id='v2' to='bob@{DOMAIN}'><query xmlns='{NS_VERSION}'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"


async def test_the_question_is_abandoned_when_the_session_ends() -> None:
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice", presence=False)
        ask = await alice.wait_for("iq")
        assert ask.find("query", NS_VERSION) is not None
        pending = dict(h.server.router.pending_iq)
        assert len(pending) == 1
        alice.send("</stream:stream>")
        await alice.recv()
        assert h.server.router.pending_iq == {}


async def test_the_client_version_is_kept_on_the_account_through_the_port() -> None:
    """The server's ClientVersionLog (the database in production) gets what each account's
    client said, for support: name, version and OS in one line."""
    async with Harness(modules=[VersionModule]) as h:
        alice = await h.online("alice", presence=False)
        ask = await alice.wait_for("iq")
        alice.send(
            f"<iq type='result' id='{ask.get('id')}' to='{DOMAIN}'><query xmlns='{NS_VERSION}'>"
            "<name>Conversations</name><version>2.16</version><os>Android 14</os></query></iq>"
        )
        await alice.recv()
        assert h.backend.client_versions == {(DOMAIN, "alice"): "Conversations 2.16 (Android 14)"}
