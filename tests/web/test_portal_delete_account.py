"""Deleting an XMPP account from the portal: a confirmation that says what is lost, the
account and its stored data gone, the address free again, the deletion audited, usage kept
for billing, and the running engine closing the account's session and refusing its login."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent, OrgRole
from imhost.config import SecuritySettings, XmppSettings, load_settings
from imhost.hosting import service as hosting
from imhost.hosting.engines.builtin import start_builtin_engine
from imhost.hosting.models import XmppAccount, XmppOfflineMessage, XmppRosterItem
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import NotFound
from imhost.metering.models import UsageRecord
from imhost.runtime import Runtime, build_runtime
from imhost.web import portal
from imhost.web.app import create_app
from tests.factories import World, make_world
from tests.web.test_pages import as_user
from tests.xmpp.harness import Client

XMPP_PASSWORD = "a long and unguessable passphrase 42"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def runtime(engine: Engine, clock: FrozenClock, tmp_path: Path) -> Runtime:
    """The web runtime, with an XMPP engine that takes logins without TLS (the in-memory
    client of the XMPP tests speaks no TLS)."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        security=SecuritySettings(cookie_secure=False),
        xmpp=XmppSettings(
            require_encryption=False,
            allow_plain_without_tls=True,
            c2s_port=0,
            direct_tls_enabled=False,
            idle_parser_seconds=0,
            metering_flush_seconds=3600,
        ),
    )
    return build_runtime(settings, clock=clock, engine=engine)


@pytest.fixture
def pages(runtime: Runtime) -> FastAPI:
    app = create_app(runtime)
    portal.install(app)
    return app


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def _service_with_ann(runtime: Runtime, world: World) -> tuple[str, str]:
    with runtime.session_factory() as session:
        org = accounts.get_organization(session, world.org.id)
        service = hosting.create_service(session, runtime.clock, org, base_domain="chat.example")
        ann, _ = hosting.create_account(
            session,
            runtime.clock,
            service,
            username="ann",
            password=XMPP_PASSWORD,
            name="Ann",
            security=runtime.settings.security,
            actor=Actor.system(),
        )
        hosting.create_account(
            session,
            runtime.clock,
            service,
            username="bob",
            password=XMPP_PASSWORD,
            name="Bob",
            security=runtime.settings.security,
            actor=Actor.system(),
        )
        session.add(XmppRosterItem(account_id=ann.id, jid="bob@" + service.domain))
        session.add(
            XmppOfflineMessage(
                account_id=ann.id,
                service_id=service.id,
                stanza="<message><body>hi</body></message>",
                size=34,
                stored_at=runtime.clock.now(),
            )
        )
        session.add(
            UsageRecord(
                organization_id=org.id,
                service_id=service.id,
                metric="messages",
                bucket_start=runtime.clock.now(),
                quantity=Decimal(12),
                subject="ann@" + service.domain,
                idempotency_key="before-the-deletion",
                received_at=runtime.clock.now(),
            )
        )
        session.commit()
        return service.id, service.domain


def test_deleting_asks_first_and_says_what_is_lost(
    pages: FastAPI, runtime: Runtime, world: World
) -> None:
    service_id, domain = _service_with_ann(runtime, world)
    client, csrf = as_user(pages, world.members[OrgRole.TECHNICAL])
    base = f"/portal/orgs/{world.org.slug}/service/{service_id}/accounts"
    listing = client.get(base)
    assert f'action="{base}/ann/delete"' in listing.text

    asked = client.post(f"{base}/ann/delete", data={"csrf_token": csrf})
    assert asked.status_code == 200
    assert f"Delete ann@{domain}?" in asked.text
    for words in ("contact list", "offline", "cannot be brought back", "becomes free"):
        assert words in asked.text
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(XmppAccount)) == 2

    done = client.post(f"{base}/ann/delete", data={"csrf_token": csrf, "confirmed": "yes"})
    assert done.status_code == 303 and done.headers["location"] == base
    shown = client.get(base)
    assert f"ann@{domain} is deleted" in shown.text
    assert f"ann@{domain}</td>" not in shown.text and f"bob@{domain}</td>" in shown.text

    with runtime.session_factory() as session:
        service = hosting.get_service(session, service_id)
        with pytest.raises(NotFound):
            hosting.get_account(session, service, "ann")
        assert session.scalar(select(func.count()).select_from(XmppRosterItem)) == 0
        assert session.scalar(select(func.count()).select_from(XmppOfflineMessage)) == 0
        # Usage already recorded stays to be billed.
        assert session.scalar(select(func.sum(UsageRecord.quantity))) == Decimal(12)
        audit = [
            e
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action == "xmpp.account_changed")
            )
            if e.details.get("change") == "deleted"
        ]
        assert len(audit) == 1 and audit[0].target_label == f"ann@{domain}"
        assert audit[0].actor_user_id == world.members[OrgRole.TECHNICAL].id
        assert audit[0].organization_id == world.org.id

    # The address is free: the same username can be created again.
    again = client.post(
        base, data={"csrf_token": csrf, "username": "ann", "name": "New Ann", "password": ""}
    )
    assert again.status_code == 200 and f"ann@{domain}" in again.text
    with runtime.session_factory() as session:
        service = hosting.get_service(session, service_id)
        assert hosting.get_account(session, service, "ann").name == "New Ann"


def test_deleting_an_account_that_is_gone_is_a_plain_not_found(
    pages: FastAPI, runtime: Runtime, world: World
) -> None:
    service_id, _ = _service_with_ann(runtime, world)
    client, csrf = as_user(pages, world.members[OrgRole.ADMIN])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/accounts/nobody/delete"
    gone = client.post(url, data={"csrf_token": csrf, "confirmed": "yes"})
    assert gone.status_code == 404 and "text/html" in gone.headers["content-type"]


@pytest.mark.parametrize("role", [OrgRole.BILLING, OrgRole.READ_ONLY])
def test_who_may_not_manage_accounts_cannot_delete_one(
    pages: FastAPI, runtime: Runtime, world: World, role: OrgRole
) -> None:
    service_id, _ = _service_with_ann(runtime, world)
    client, csrf = as_user(pages, world.members[role])
    base = f"/portal/orgs/{world.org.slug}/service/{service_id}/accounts"
    assert "/ann/delete" not in client.get(base).text
    refused = client.post(f"{base}/ann/delete", data={"csrf_token": csrf, "confirmed": "yes"})
    assert refused.status_code == 403
    with runtime.session_factory() as session:
        service = hosting.get_service(session, service_id)
        assert hosting.get_account(session, service, "ann").localpart == "ann"


@pytest.mark.anyio
async def test_the_engine_closes_the_deleted_accounts_session_and_refuses_its_login(
    pages: FastAPI, runtime: Runtime, world: World, clock: FrozenClock
) -> None:
    service_id, domain = await asyncio.to_thread(_service_with_ann, runtime, world)
    server = await start_builtin_engine(runtime, listen=False)
    try:
        online = Client(server)
        result = await online.login_plain("ann", XMPP_PASSWORD, to=domain)
        assert result.name == "success", result
        bound = await online.bind()
        assert bound.get("type") == "result", bound

        client, csrf = as_user(pages, world.members[OrgRole.OWNER])
        url = f"/portal/orgs/{world.org.slug}/service/{service_id}/accounts/ann/delete"
        done = await asyncio.to_thread(
            client.post, url, data={"csrf_token": csrf, "confirmed": "yes"}
        )
        assert done.status_code == 303

        # The open session is closed at once, with a reason.
        for _ in range(200):
            await asyncio.sleep(0.01)
            if online.transport.closed:
                break
        assert online.transport.closed
        assert "this account was deleted" in online.raw

        clock.advance(timedelta(minutes=1))  # past any login throttling window
        again = Client(server, address="192.0.2.9")
        refused = await again.login_plain("ann", XMPP_PASSWORD, to=domain)
        assert refused.name == "failure", refused
        # bob, on the same service, still signs in.
        other = Client(server, address="192.0.2.10")
        assert (await other.login_plain("bob", XMPP_PASSWORD, to=domain)).name == "success"
    finally:
        await server.stop()
