"""Group chat rooms in the API and the portal: the customer's admin and staff list a
service's rooms and destroy one with a reason (audited, told to the engine after commit)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent, OrgRole, StaffRole
from imhost.catalog.models import PlanLimits
from imhost.config import SecuritySettings, load_settings
from imhost.hosting import changes
from imhost.hosting import service as hosting
from imhost.hosting.models import XmppRoom
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime, build_runtime
from imhost.web.app import create_app
from tests.factories import World, make_world
from tests.web.conftest import signed_in
from tests.web.test_pages import as_user

from .factories import make_service

DOMAIN = "chat.acme.example"


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
        service = make_service(
            session,
            runtime.clock,
            world.org,
            domain=DOMAIN,
            limits=PlanLimits(max_rooms=20, max_room_occupants=50),
        )
        make_service(session, runtime.clock, world.other_org, domain="talk.beta.example")
        session.add(
            XmppRoom(
                service_id=service.id,
                name="team",
                config={"muc#roomconfig_roomname": "The team"},
                affiliations={"alice@chat.acme.example": "owner"},
                nicks={},
                subject="",
                subject_by="",
                created_at=runtime.clock.now(),
            )
        )
        session.commit()
    return world


@pytest.fixture
def delivered(runtime: Runtime) -> Iterator[list[changes.Change]]:
    got: list[changes.Change] = []

    def keep(items: Sequence[changes.Change]) -> None:
        got.extend(items)

    hub = changes.install_hub(runtime.session_factory)
    hub.subscribe(keep)
    yield got
    hub.unsubscribe(keep)


def _service_id(runtime: Runtime) -> str:
    with runtime.session_factory() as session:
        return hosting.get_service_by_domain(session, DOMAIN).id


def _rooms_left(runtime: Runtime) -> list[str]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(XmppRoom.name)))


def test_the_admin_lists_and_destroys_a_room_with_a_reason(
    app: FastAPI, world: World, runtime: Runtime, delivered: list[changes.Change]
) -> None:
    base = f"/api/v1/orgs/{world.org.id}/services/{_service_id(runtime)}/rooms"
    with signed_in(app, world.members[OrgRole.ADMIN]) as admin:
        listing = admin.get(base)
        assert listing.status_code == 200
        body = listing.json()
        assert body["conference"] == f"conference.{DOMAIN}"
        assert (body["max_rooms"], body["max_room_occupants"]) == (20, 50)
        assert body["items"] == [
            {
                "name": "team",
                "jid": f"team@conference.{DOMAIN}",
                "title": "The team",
                "persistent": True,
                "occupants": None,
            }
        ]
        missing = admin.post(f"{base}/nothing/destroy", json={"reason": "cleanup"})
        assert missing.status_code == 404
        assert "no room called nothing" in missing.json()["detail"]
        assert admin.post(f"{base}/team/destroy", json={"reason": ""}).status_code == 422
        done = admin.post(f"{base}/team/destroy", json={"reason": "moved to #general"})
        assert done.status_code == 204
    assert _rooms_left(runtime) == []
    assert changes.RoomDestroyed(DOMAIN, "team", "moved to #general") in delivered
    with runtime.session_factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.target_label == DOMAIN)).all()
        [event] = [e for e in events if e.details.get("change") == "room_destroyed"]
        assert event is not None
        assert event.details["change"] == "room_destroyed"
        assert event.details["room"] == "team"


def test_read_only_members_read_outsiders_see_nothing_staff_destroy(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    service_id = _service_id(runtime)
    base = f"/api/v1/orgs/{world.org.id}/services/{service_id}/rooms"
    with signed_in(app, world.members[OrgRole.READ_ONLY]) as reader:
        assert reader.get(base).status_code == 200
        assert reader.post(f"{base}/team/destroy", json={"reason": "x"}).status_code == 403
    with signed_in(app, world.outsider) as outsider:
        assert outsider.get(base).status_code == 404
    with signed_in(app, world.staff[StaffRole.SUPPORT]) as support:
        admin_base = f"/api/v1/admin/services/{service_id}/rooms"
        assert [r["name"] for r in support.get(admin_base).json()["items"]] == ["team"]
        done = support.post(f"{admin_base}/team/destroy", json={"reason": "abuse report"})
        assert done.status_code == 204
    assert _rooms_left(runtime) == []


def test_the_portal_lists_rooms_and_asks_before_destroying(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    client, csrf = as_user(app, world.members[OrgRole.OWNER])
    page = client.get(f"/portal/orgs/{world.org.slug}/service")
    assert page.status_code == 200
    assert f"team@conference.{DOMAIN}" in page.text and "Group chats" in page.text
    assert "Group chat rooms" in page.text  # the plan's limit, beside the others
    action = f"/portal/orgs/{world.org.slug}/service/{_service_id(runtime)}/rooms/team/destroy"
    ask = client.post(action, data={"csrf_token": csrf})
    assert ask.status_code == 200 and "Destroy the group chat" in ask.text
    assert _rooms_left(runtime) == ["team"]
    no_reason = client.post(action, data={"csrf_token": csrf, "confirmed": "yes", "reason": " "})
    assert no_reason.status_code == 200 and 'id="e-reason"' in no_reason.text
    assert _rooms_left(runtime) == ["team"]
    done = client.post(action, data={"csrf_token": csrf, "confirmed": "yes", "reason": "old room"})
    assert done.status_code == 303
    assert _rooms_left(runtime) == []
    gone = client.post(action, data={"csrf_token": csrf, "confirmed": "yes", "reason": "again"})
    assert gone.status_code == 404 and "no room called team" in gone.text


def test_staff_see_the_rooms_on_the_customer_page_and_destroy_one(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    client, csrf = as_user(app, world.staff[StaffRole.ADMIN])
    page = client.get(f"/console/customers/{world.org.id}")
    assert page.status_code == 200
    assert f"Group chats on conference.{DOMAIN}" in page.text
    assert f"team@conference.{DOMAIN}" in page.text
    action = f"/console/customers/{world.org.id}/services/{_service_id(runtime)}/rooms/team/destroy"
    ask = client.post(action, data={"csrf_token": csrf})
    assert ask.status_code == 200 and "Destroy the group chat" in ask.text
    done = client.post(action, data={"csrf_token": csrf, "confirmed": "yes", "reason": "abuse"})
    assert done.status_code == 303
    assert _rooms_left(runtime) == []
    reader, reader_csrf = as_user(app, world.staff[StaffRole.READ_ONLY])
    assert "Destroy…" not in reader.get(f"/console/customers/{world.org.id}").text
    refused = reader.post(action, data={"csrf_token": reader_csrf})
    assert refused.status_code == 403
    # another customer's service is not reachable through this customer's page
    other = (
        f"/console/customers/{world.other_org.id}/services/{_service_id(runtime)}/rooms/x/destroy"
    )
    assert client.post(other, data={"csrf_token": csrf}).status_code == 404
