"""Custom domains through the portal, the console and the API, with a real DNS server on
loopback answering the checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts import sessions
from imhost.accounts.models import AuditEvent, OrgRole, StaffRole, User
from imhost.config import SecuritySettings, load_settings
from imhost.domains.models import CustomDomain
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime, build_runtime
from imhost.web import console, portal
from imhost.web.app import create_app
from tests.domains.dns_server import DnsServer
from tests.factories import World, make_world

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TARGET = "xmpp.provider.example"
METRICS_TOKEN = "m" * 40


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer({})
    yield server
    server.close()


@pytest.fixture
def runtime(engine: Engine, clock: FrozenClock, tmp_path: Path, dns_server: DnsServer) -> Runtime:
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        webhooks_allow_private=True,
        base_domain="im.test",
        security=SecuritySettings(cookie_secure=False),
        metrics={"token": METRICS_TOKEN},
        dns={
            "resolvers": [dns_server.address],
            "timeout_seconds": 1,
            "lifetime_seconds": 2,
            "srv_target": TARGET,
        },
    )
    return build_runtime(settings, clock=clock, engine=engine)


@pytest.fixture
def pages(runtime: Runtime) -> FastAPI:
    app = create_app(runtime)
    portal.install(app)
    console.install(app)
    return app


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


@pytest.fixture
def service_id(session_factory: sessionmaker[Session], clock: FrozenClock, world: World) -> str:
    with session_factory() as session:
        org = accounts.get_organization(session, world.org.id)
        service = hosting.create_service(session, clock, org, base_domain="im.test")
        session.commit()
        return service.id


def as_user(app: FastAPI, user: User) -> tuple[TestClient, str]:
    runtime: Runtime = app.state.runtime
    with runtime.session_factory() as session:
        new = sessions.start_session(
            session,
            runtime.clock,
            runtime.settings.security,
            user_id=user.id,
            address="testclient",
            user_agent="pytest",
            mfa_verified=True,
        )
        session.commit()
    client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    client.cookies.set(sessions.COOKIE_NAME, new.cookie_value)
    return client, new.session.csrf_token


def good_zone(name: str, token: str) -> dict[tuple[str, str], list[str]]:
    return {
        (f"_imhost-verify.{name}.", "TXT"): [f'"imhost-verify={token}"'],
        (f"_xmpp-client._tcp.{name}.", "SRV"): [f"5 0 5222 {TARGET}."],
        (f"_xmpps-client._tcp.{name}.", "SRV"): [f"5 0 5223 {TARGET}."],
        (f"_xmpp-server._tcp.{name}.", "SRV"): [f"5 0 5269 {TARGET}."],
    }


def test_a_customer_adds_a_domain_checks_it_and_removes_it(
    pages: FastAPI,
    world: World,
    service_id: str,
    dns_server: DnsServer,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.TECHNICAL])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/domains"
    page = client.get(url)
    assert page.status_code == 200 and "No custom domain yet" in page.text
    assert (
        f"/service/{service_id}/domains"
        in client.get(f"/portal/orgs/{world.org.slug}/service").text
    )

    added = client.post(url, data={"csrf_token": csrf, "domain": "Chat.Acme.Example"})
    assert added.status_code == 303
    with session_factory() as session:
        domain = session.scalars(select(CustomDomain)).one()
        name, token, domain_id = domain.name, domain.token, domain.id
    assert name == "chat.acme.example"
    page = client.get(url)
    assert f'_imhost-verify.chat.acme.example. 3600 IN TXT "imhost-verify={token}"' in unescape(
        page.text
    )
    assert f"_xmpp-client._tcp.chat.acme.example. 3600 IN SRV 5 0 5222 {TARGET}." in page.text
    assert "Not checked yet" in page.text

    # Nothing in DNS: the check says what is missing.
    checked = client.post(f"{url}/{domain_id}/check", data={"csrf_token": csrf})
    assert checked.status_code == 303
    page = client.get(url)
    assert "Records missing or wrong" in page.text and "Missing" in page.text
    # The records appear; a second click within 10 s shows the last result, later asks again.
    dns_server.zone.load(good_zone(name, token))
    client.post(f"{url}/{domain_id}/check", data={"csrf_token": csrf})
    assert "Records missing or wrong" in client.get(url).text
    clock.advance(timedelta(seconds=11))
    client.post(f"{url}/{domain_id}/check", data={"csrf_token": csrf})
    page = client.get(url)
    assert "Verified" in page.text and "not offered yet" in page.text

    asked = client.post(f"{url}/{domain_id}/remove", data={"csrf_token": csrf})
    assert asked.status_code == 200 and "Remove chat.acme.example" in asked.text
    done = client.post(f"{url}/{domain_id}/remove", data={"csrf_token": csrf, "confirmed": "yes"})
    assert done.status_code == 303
    with session_factory() as session:
        assert session.scalar(select(CustomDomain)) is None
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"domain.added", "domain.verified", "domain.removed"} <= actions
    assert "domain.verification_failed" in actions


def test_a_bad_name_shows_the_error_summary_and_keeps_what_was_typed(
    pages: FastAPI, world: World, service_id: str
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.ADMIN])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/domains"
    bad = client.post(url, data={"csrf_token": csrf, "domain": "not a domain!"})
    assert bad.status_code == 422
    assert "data-error-summary" in bad.text and '<a href="#f-domain">' in bad.text
    assert 'value="not a domain!"' in bad.text
    ours = client.post(url, data={"csrf_token": csrf, "domain": "x.im.test"})
    assert ours.status_code == 422 and "are ours" in ours.text


def test_a_domain_of_another_customer_is_refused_without_saying_whose(
    pages: FastAPI,
    world: World,
    service_id: str,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
) -> None:
    with session_factory() as session:
        other = accounts.get_organization(session, world.other_org.id)
        other_service = hosting.create_service(session, clock, other, base_domain="im.test")
        session.commit()
        other_id = other_service.id
    outsider, csrf_o = as_user(pages, world.outsider)
    taken = outsider.post(
        f"/portal/orgs/{world.other_org.slug}/service/{other_id}/domains",
        data={"csrf_token": csrf_o, "domain": "talk.shared.example"},
    )
    assert taken.status_code == 303
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    refused = client.post(
        f"/portal/orgs/{world.org.slug}/service/{service_id}/domains",
        data={"csrf_token": csrf, "domain": "TALK.shared.example"},
    )
    assert refused.status_code == 409 and "in use by another customer" in refused.text
    assert world.other_org.name not in refused.text
    # And the outsider cannot see or touch this organization's domains page.
    assert (
        outsider.get(f"/portal/orgs/{world.org.slug}/service/{service_id}/domains").status_code
        == 404
    )


def test_a_read_only_member_sees_the_records_but_has_no_buttons(
    pages: FastAPI, world: World, service_id: str, session_factory: sessionmaker[Session]
) -> None:
    owner, csrf = as_user(pages, world.members[OrgRole.OWNER])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/domains"
    owner.post(url, data={"csrf_token": csrf, "domain": "chat.acme.example"})
    reader, csrf_r = as_user(pages, world.members[OrgRole.READ_ONLY])
    page = reader.get(url)
    assert page.status_code == 200 and "chat.acme.example" in page.text
    assert "Check now" not in page.text and "Add a domain" not in page.text
    with session_factory() as session:
        domain_id = session.scalars(select(CustomDomain.id)).one()
    assert reader.post(f"{url}/{domain_id}/check", data={"csrf_token": csrf_r}).status_code == 403


def test_the_console_lists_domains_failing_verification(
    pages: FastAPI,
    world: World,
    service_id: str,
    session_factory: sessionmaker[Session],
) -> None:
    owner, csrf = as_user(pages, world.members[OrgRole.OWNER])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/domains"
    owner.post(url, data={"csrf_token": csrf, "domain": "bad.acme.example"})
    owner.post(url, data={"csrf_token": csrf, "domain": "new.acme.example"})
    with session_factory() as session:
        bad_id = session.scalars(
            select(CustomDomain.id).where(CustomDomain.name == "bad.acme.example")
        ).one()
    staff, staff_csrf = as_user(pages, world.staff[StaffRole.SUPPORT])
    assert (
        staff.post(f"/console/domains/{bad_id}/check", data={"csrf_token": staff_csrf}).status_code
        == 303
    )
    failing = staff.get("/console/domains?status=failing")
    assert failing.status_code == 200
    assert "bad.acme.example" in failing.text and "new.acme.example" not in failing.text
    assert "_imhost-verify.bad.acme.example" in failing.text  # what is wrong, by record
    assert world.org.name in failing.text
    everything = staff.get("/console/domains")
    assert "new.acme.example" in everything.text
    assert staff.get("/console/domains?status=bogus").status_code == 422
    reader, _ = as_user(pages, world.staff[StaffRole.READ_ONLY])
    assert "Check now" not in reader.get("/console/domains").text


def test_the_api_adds_lists_checks_and_removes(
    pages: FastAPI,
    world: World,
    service_id: str,
    dns_server: DnsServer,
) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.TECHNICAL])
    client.headers["X-CSRF-Token"] = csrf
    base = f"/api/v1/orgs/{world.org.id}/services/{service_id}/domains"
    created = client.post(base, json={"name": "chat.bücher.example"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "chat.xn--bcher-kva.example"
    assert body["display_name"] == "chat.bücher.example"
    assert [r["state"] for r in body["records"]] == ["unchecked"] * 4
    dns_server.zone.load(good_zone(body["name"], body["verification_token"]))
    checked = client.post(f"{base}/{body['id']}/check")
    assert checked.status_code == 200 and checked.json()["status"] == "verified"
    assert [r["state"] for r in checked.json()["records"]] == ["ok"] * 4
    assert [d["id"] for d in client.get(base).json()] == [body["id"]]
    bad = client.post(base, json={"name": "a" * 300})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith(
        "application/problem+json"
    )
    dup = client.post(base, json={"name": "CHAT.BÜCHER.EXAMPLE"})
    assert dup.status_code == 409
    assert client.delete(f"{base}/{body['id']}").status_code == 204
    assert client.get(f"{base}/{body['id']}").status_code == 404


def test_metrics_count_domains_by_status(pages: FastAPI, world: World, service_id: str) -> None:
    client, csrf = as_user(pages, world.members[OrgRole.OWNER])
    url = f"/portal/orgs/{world.org.slug}/service/{service_id}/domains"
    client.post(url, data={"csrf_token": csrf, "domain": "one.acme.example"})
    client.post(url, data={"csrf_token": csrf, "domain": "two.acme.example"})
    scrape = TestClient(pages).get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scrape.status_code == 200
    assert 'imhost_custom_domains{status="pending"} 2' in scrape.text
    assert 'imhost_custom_domains{status="verified"} 0' in scrape.text
