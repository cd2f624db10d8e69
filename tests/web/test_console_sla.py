"""Console: SLA settings (calendar and targets per tier), saved, validated and audited."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent, StaffRole
from imhost.kit.clock import FrozenClock
from imhost.support import sla_service
from tests.factories import World, make_world
from tests.web.test_pages import as_user

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def test_support_staff_set_the_calendar_and_targets(
    world: World, app: FastAPI, db: Session
) -> None:
    client, _ = as_user(app, world.staff[StaffRole.SUPPORT])
    page = client.get("/console/sla")
    assert page.status_code == 200
    assert 'href="/console/sla"' in page.text and "Business calendar" in page.text
    token = CSRF.search(page.text)
    assert token is not None
    calendar = {
        "csrf_token": token.group(1),
        "timezone": "Europe/Berlin",
        "monday": "09:00-12:00, 13:00-17:00",
        "tuesday": "09:00-17:00",
        "holidays": "2026-12-25\r\n2026-12-26",
    }
    saved = client.post("/console/sla/calendar", data=calendar)
    assert saved.status_code == 303
    bad = client.post("/console/sla/calendar", data={**calendar, "monday": "nine to five"})
    assert bad.status_code == 422 and "error-summary" in bad.text
    assert "write it like 09:00-17:00" in bad.text
    bad_zone = client.post("/console/sla/calendar", data={**calendar, "timezone": "Mars/Base"})
    assert bad_zone.status_code == 422 and "not a known time zone" in bad_zone.text
    policy = {
        "csrf_token": token.group(1),
        "first_response": "0.5",
        "resolution": "6",
        "warn_before": "10",
    }
    assert client.post("/console/sla/policies/top", data=policy).status_code == 303
    bad_policy = client.post("/console/sla/policies/top", data={**policy, "resolution": "abc"})
    assert bad_policy.status_code == 422 and "Resolution must be a number." in bad_policy.text
    assert client.post("/console/sla/policies/gold", data=policy).status_code in (404, 422)
    db.expire_all()
    stored = sla_service.load_calendar(db)
    assert stored.timezone == "Europe/Berlin" and date(2026, 12, 26) in stored.holidays
    assert sla_service.load_policies(db)["top"].first_response == timedelta(minutes=30)
    again = client.get("/console/sla").text
    assert 'value="09:00-12:00, 13:00-17:00"' in again and 'value="0.5"' in again
    actions = set(db.scalars(select(AuditEvent.action).where(AuditEvent.action.like("sla.%"))))
    assert actions == {"sla.calendar_changed", "sla.policy_changed"}


def test_read_only_staff_read_and_billing_staff_do_not_see_it(world: World, app: FastAPI) -> None:
    reader, _ = as_user(app, world.staff[StaffRole.READ_ONLY])
    page = reader.get("/console/sla")
    assert page.status_code == 200 and "Save calendar" not in page.text
    billing, _ = as_user(app, world.staff[StaffRole.BILLING])
    assert billing.get("/console/sla").status_code == 403
