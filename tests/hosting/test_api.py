"""The hosting REST API: customers manage their service's accounts; staff suspend services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole, StaffRole
from imhost.catalog.models import PlanLimits
from imhost.config import SecuritySettings, load_settings
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime, build_runtime
from imhost.web.app import create_app
from tests.factories import World, make_world
from tests.web.conftest import signed_in

from .factories import PASSWORD, make_service


@pytest.fixture
def runtime(
    engine: Engine, session_factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path
) -> Runtime:
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        security=SecuritySettings(cookie_secure=False),
    )
    return build_runtime(settings, clock=clock, engine=engine)


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture
def world(runtime: Runtime) -> World:
    with runtime.session_factory() as session:
        world = make_world(session, runtime.clock)
        for org, domain in (
            (world.org, "chat.acme.example"),
            (world.other_org, "talk.beta.example"),
        ):
            make_service(
                session, runtime.clock, org, domain=domain, limits=PlanLimits(max_xmpp_accounts=3)
            )
        session.commit()
    return world


def _service_id(runtime: Runtime, domain: str) -> str:
    with runtime.session_factory() as session:
        return hosting.get_service_by_domain(session, domain).id


@pytest.fixture
def owner(app: FastAPI, world: World) -> Iterator[TestClient]:
    with signed_in(app, world.members[OrgRole.OWNER]) as client:
        yield client


def _base(world: World, runtime: Runtime) -> str:
    return f"/api/v1/orgs/{world.org.id}/services/{_service_id(runtime, 'chat.acme.example')}"


def test_the_owner_sees_the_service_with_usage_and_connection_info(
    owner: TestClient, world: World, runtime: Runtime
) -> None:
    listing = owner.get(f"/api/v1/orgs/{world.org.id}/services")
    assert listing.status_code == 200
    [item] = listing.json()["items"]
    assert item["domain"] == "chat.acme.example"
    assert item["limits"]["max_accounts"] == 3
    assert item["usage"] == {"accounts": 0, "connections": None}
    assert item["connection"]["uri"] == "xmpp:chat.acme.example"
    assert item["connection"]["c2s_port"] == 5222
    assert item["connection"]["websocket_url"].endswith("/xmpp-websocket")


def test_accounts_are_created_listed_and_the_generated_password_shown_once(
    owner: TestClient, world: World, runtime: Runtime
) -> None:
    base = _base(world, runtime)
    made = owner.post(f"{base}/accounts", json={"username": "Alice", "name": "Alice A"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["account"]["jid"] == "alice@chat.acme.example"
    assert len(body["generated_password"]) >= 20
    chosen = owner.post(f"{base}/accounts", json={"username": "bob", "password": PASSWORD})
    assert chosen.status_code == 201 and chosen.json()["generated_password"] is None
    page = owner.get(f"{base}/accounts", params={"limit": 1})
    assert page.json()["total"] == 2 and [a["localpart"] for a in page.json()["items"]] == ["alice"]
    one = owner.get(f"{base}/accounts/alice").json()
    secrets_shown = {k for k in one if any(w in k for w in ("password", "key", "salt"))}
    assert secrets_shown == {"password_changed_at"}
    assert set(one) >= {"jid", "disabled", "last_login_at", "client_version"}


def test_a_weak_password_and_the_account_limit_give_clear_errors(
    owner: TestClient, world: World, runtime: Runtime
) -> None:
    base = _base(world, runtime)
    weak = owner.post(f"{base}/accounts", json={"username": "alice", "password": "password"})
    assert weak.status_code == 422
    assert "at least 12 characters" in weak.json()["detail"]
    for name in ("a1", "a2", "a3"):
        assert owner.post(f"{base}/accounts", json={"username": name}).status_code == 201
    over = owner.post(f"{base}/accounts", json={"username": "a4"})
    assert over.status_code == 409
    assert "3 accounts" in over.json()["detail"]


def test_disable_enable_reset_and_delete(owner: TestClient, world: World, runtime: Runtime) -> None:
    base = _base(world, runtime)
    owner.post(f"{base}/accounts", json={"username": "alice", "password": PASSWORD})
    disabled = owner.post(f"{base}/accounts/alice/disable", json={"reason": "lost phone"})
    assert disabled.json()["disabled"] and disabled.json()["disabled_reason"] == "lost phone"
    assert not owner.post(f"{base}/accounts/alice/enable").json()["disabled"]
    generated = owner.post(f"{base}/accounts/alice/password", json={})
    assert generated.status_code == 200 and generated.json()["generated_password"]
    chosen = owner.post(f"{base}/accounts/alice/password", json={"password": PASSWORD})
    assert chosen.json() == {"generated_password": None}
    assert owner.delete(f"{base}/accounts/alice").status_code == 204
    assert owner.get(f"{base}/accounts/alice").status_code == 404


def test_csv_import_as_text_and_as_upload_reports_each_row(
    owner: TestClient, world: World, runtime: Runtime
) -> None:
    base = _base(world, runtime)
    text = f"username,password,name\nalice,{PASSWORD},Alice\nbob,weak\n"
    report = owner.post(
        f"{base}/accounts/import", content=text, headers={"Content-Type": "text/csv"}
    )
    assert report.status_code == 200, report.text
    assert report.json()["created"] == 1 and report.json()["refused"] == 1
    assert [r["status"] for r in report.json()["rows"]] == ["created", "refused"]
    upload = owner.post(
        f"{base}/accounts/import",
        files={"file": ("people.csv", f"carol,{PASSWORD}\n".encode(), "text/csv")},
    )
    assert upload.status_code == 200 and upload.json()["created"] == 1
    wrong = owner.post(f"{base}/accounts/import", json={"username": "x"})
    assert wrong.status_code == 422
    huge = owner.post(
        f"{base}/accounts/import",
        content=b"a," * (hosting.CSV_MAX_BYTES // 2 + 10),
        headers={"Content-Type": "text/csv"},
    )
    assert huge.status_code == 422 and "larger than" in huge.json()["detail"]


def test_a_read_only_member_reads_but_cannot_change(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    base = _base(world, runtime)
    with signed_in(app, world.members[OrgRole.READ_ONLY]) as reader:
        assert reader.get(f"{base}/accounts").status_code == 200
        assert reader.post(f"{base}/accounts", json={"username": "x"}).status_code == 403


def test_another_organization_cannot_see_or_touch_the_service(
    app: FastAPI, world: World, runtime: Runtime, owner: TestClient
) -> None:
    base = _base(world, runtime)
    with signed_in(app, world.outsider) as outsider:
        assert outsider.get(f"{base}/accounts").status_code == 404
        foreign = _service_id(runtime, "chat.acme.example")
        path = f"/api/v1/orgs/{world.other_org.id}/services/{foreign}/accounts"
        response = outsider.post(path, json={"username": "mallory"})
        assert response.status_code == 404 and "no such service" in response.json()["detail"]
    other = _service_id(runtime, "talk.beta.example")
    assert owner.get(f"/api/v1/orgs/{world.org.id}/services/{other}").status_code == 404


def test_staff_suspend_and_reactivate_a_service_with_a_reason(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    service_id = _service_id(runtime, "chat.acme.example")
    with signed_in(app, world.staff[StaffRole.SUPPORT]) as support:
        listing = support.get("/api/v1/admin/services").json()
        assert listing["total"] == 2
        done = support.post(
            f"/api/v1/admin/services/{service_id}/suspend", json={"reason": "spam wave"}
        )
        assert done.status_code == 200
        assert done.json()["status"] == "suspended" and done.json()["status_reason"] == "spam wave"
        back = support.post(f"/api/v1/admin/services/{service_id}/reactivate")
        assert back.json()["status"] == "active"
    with signed_in(app, world.members[OrgRole.OWNER]) as owner:
        refused = owner.post(f"/api/v1/admin/services/{service_id}/suspend", json={"reason": "x"})
        assert refused.status_code == 403


def test_the_websocket_endpoint_refuses_without_an_engine_or_the_xmpp_subprotocol(
    app: FastAPI,
) -> None:
    from starlette.websockets import WebSocketDisconnect

    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/xmpp-websocket", subprotocols=["xmpp"]) as ws,
    ):
        ws.receive_text()
