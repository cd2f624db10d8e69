"""End to end: the built-in engine on loopback, on the test database, with a real client
(slixmpp) logging in to an account created through the service; then the organization is
suspended and the client's session is closed with ``policy-violation``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.config import Settings, XmppSettings
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.hosting.engines.builtin import HostedXmppServer, start_builtin_engine
from imhost.kit.clock import SystemClock
from imhost.metering.models import UsageRecord as MeteredUsage
from imhost.runtime import Runtime, build_runtime

from .factories import PASSWORD, make_org

slixmpp = pytest.importorskip("slixmpp")

pytestmark = [pytest.mark.anyio, pytest.mark.interop]
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)

DOMAIN = "e2e.example"


class Client(slixmpp.ClientXMPP):  # type: ignore[misc,name-defined]
    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.stream_errors: asyncio.Queue[Any] = asyncio.Queue()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_plaintext = False
        self.register_plugin("xep_0092", {"software_name": "e2e-client", "version": "4.2"})
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("failed_auth", lambda *_: self.failed.set())
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)
        self.add_event_handler("message", self.inbox.put_nowait)

    async def _start(self, _: Any) -> None:
        self.send_presence()
        self.started.set()


@dataclass
class Live:
    runtime: Runtime
    server: HostedXmppServer
    org_id: str
    passwords: dict[str, str]


@pytest.fixture
async def live(
    engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[Live]:
    settings = Settings(
        data_dir=tmp_path,
        xmpp=XmppSettings(
            c2s_port=0,
            c2s_direct_tls_port=0,
            metering_flush_seconds=0.2,
            idle_parser_seconds=0,
        ),
    )
    runtime = build_runtime(settings, engine=engine, clock=SystemClock())
    with transaction(runtime.session_factory) as session:
        org = make_org(session, runtime.clock)
        service = hosting.create_service(
            session, runtime.clock, org, base_domain="im.test", domain=DOMAIN
        )
        passwords = {"alice": PASSWORD}
        hosting.create_account(
            session,
            runtime.clock,
            service,
            username="alice",
            password=PASSWORD,
            security=settings.security,
        )
        _, generated = hosting.create_account(
            session,
            runtime.clock,
            service,
            username="bob",
            password=None,
            security=settings.security,
        )
        assert generated is not None
        passwords["bob"] = generated
        org_id = org.id
    server = await start_builtin_engine(runtime)
    assert (tmp_path / "tls" / "xmpp-cert.pem").exists()
    yield Live(runtime, server, org_id, passwords)
    await server.stop()


async def _login(live: Live, user: str) -> Client:
    client = Client(f"{user}@{DOMAIN}/e2e", live.passwords[user])
    client.connect("127.0.0.1", live.server.c2s_port)
    done, _ = await asyncio.wait(
        [asyncio.ensure_future(client.started.wait()), asyncio.ensure_future(client.failed.wait())],
        timeout=10,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert done, "no answer from the server"
    return client


async def test_messages_between_online_users_touch_no_store(live: Live) -> None:
    from sqlalchemy import event

    alice = await _login(live, "alice")
    bob = await _login(live, "bob")
    await asyncio.sleep(0.5)  # logins, initial presence, rosters and version queries done
    assert live.server.connections(DOMAIN) == 2
    assert live.server.connections("elsewhere.example") == 0
    reads: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.search(r"\bxmpp_\w+|hosted_services", statement) and not statement.startswith(
            "UPDATE"
        ):
            reads.append(statement)

    event.listen(live.runtime.engine, "before_cursor_execute", watch)
    try:
        for n in range(20):
            alice.send_message(mto=f"bob@{DOMAIN}", mbody=f"m{n}", mtype="chat")
        for _ in range(20):
            await asyncio.wait_for(bob.inbox.get(), 5)
        assert reads == []
        # The watch does see the store: a message to an unknown account looks it up.
        alice.send_message(mto=f"zed@{DOMAIN}", mbody="anyone?", mtype="chat")
        for _ in range(50):
            if reads:
                break
            await asyncio.sleep(0.02)
        assert any("xmpp_accounts" in r for r in reads)
    finally:
        event.remove(live.runtime.engine, "before_cursor_execute", watch)
    for client in (alice, bob):
        client.abort()


async def test_a_real_client_logs_in_then_is_closed_when_the_organization_is_suspended(
    live: Live,
) -> None:
    alice = await _login(live, "alice")
    bob = await _login(live, "bob")
    assert alice.started.is_set() and bob.started.is_set()
    await asyncio.sleep(0.3)  # both initial presences processed: bob is available
    alice.send_message(mto=f"bob@{DOMAIN}", mbody="hello from the database", mtype="chat")
    got = await asyncio.wait_for(bob.inbox.get(), 5)
    assert got["body"] == "hello from the database"

    with transaction(live.runtime.session_factory, write=True) as session:
        events.publish(
            session,
            events.OrganizationSuspended(
                at=live.runtime.clock.now(),
                organization_id=live.org_id,
                reason="Suspended: invoice INV-9 is unpaid.",
            ),
        )
    error = await asyncio.wait_for(alice.stream_errors.get(), 5)
    assert error["condition"] == "policy-violation"
    assert error["text"] == "Suspended: invoice INV-9 is unpaid."

    again = await _login(live, "alice")
    assert again.failed.is_set() and not again.started.is_set()
    for client in (alice, bob, again):
        client.abort()

    await asyncio.sleep(0.5)  # a metering flush
    with transaction(live.runtime.session_factory) as session:
        metrics = set(
            session.scalars(
                select(MeteredUsage.metric).where(MeteredUsage.organization_id == live.org_id)
            )
        )
    assert "messages" in metrics
    await live.server.backend.auth.flush_batches()
    with transaction(live.runtime.session_factory) as session:
        service = hosting.get_service_by_domain(session, DOMAIN)
        alice_row = hosting.get_account(session, service, "alice")
        assert alice_row.last_login_at is not None
        assert (alice_row.client_version or "").startswith("e2e-client 4.2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scram_sha256_final(password: str, client_first_bare: str, server_first: str) -> str:
    """RFC 5802 §3 client proof for SCRAM-SHA-256 (no channel binding)."""
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_a_websocket_client_logs_in_through_the_web_app(live: Live) -> None:
    import uvicorn
    import websockets

    from imhost.web.app import create_app

    live.runtime.xmpp = live.server
    port = _free_port()
    web = uvicorn.Server(
        uvicorn.Config(
            create_app(live.runtime),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
        )
    )
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.02)
    framing = "urn:ietf:params:xml:ns:xmpp-framing"
    try:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/xmpp-websocket",
            subprotocols=["xmpp"],  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "xmpp"

            async def recv() -> str:
                return str(await asyncio.wait_for(ws.recv(), 5))

            await ws.send(f"<open xmlns='{framing}' to='{DOMAIN}' version='1.0'/>")
            assert "<open" in await recv()
            assert "SCRAM-SHA-256" in await recv()
            first_bare = "n=alice,r=websocketnonce"
            await ws.send(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
                f"{_b64('n,,' + first_bare)}</auth>"
            )
            challenge = re.search(r">([^<]+)</challenge>", await recv())
            assert challenge is not None
            server_first = base64.b64decode(challenge.group(1)).decode()
            final = _scram_sha256_final(live.passwords["alice"], first_bare, server_first)
            await ws.send(
                f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{_b64(final)}</response>"
            )
            assert "<success" in await recv()
            await ws.send(f"<open xmlns='{framing}' to='{DOMAIN}' version='1.0'/>")
            assert "<open" in await recv()
            assert "bind" in await recv()
            await ws.send(
                "<iq type='set' id='b1' xmlns='jabber:client'>"
                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind>"
                "</iq>"
            )
            assert f"alice@{DOMAIN}/web" in await recv()

            with transaction(live.runtime.session_factory, write=True) as session:
                service = hosting.get_service_by_domain(session, DOMAIN)
                account = hosting.get_account(session, service, "alice")
                hosting.disable_account(
                    session, live.runtime.clock, service, account, "Account closed by IT."
                )
            closing = ""
            while "<close" not in closing:
                closing += await recv()
            assert "policy-violation" in closing and "Account closed by IT." in closing
    finally:
        web.should_exit = True
        await task
