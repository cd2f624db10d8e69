"""The tickets API: a member opens and answers a ticket; an outsider gets a 404; staff read the
queue and see internal notes the customer never does."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import OrgRole, StaffRole
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime
from imhost.support import tickets
from tests.factories import World, make_world
from tests.web.conftest import signed_in


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def test_tickets_through_the_api(app: FastAPI, world: World, runtime: Runtime) -> None:
    member = signed_in(app, world.members[OrgRole.TECHNICAL])
    base = f"/api/v1/orgs/{world.org.id}/tickets"
    bad = member.post(base, json={"subject": "", "message": "x"})
    assert bad.status_code == 422
    made = member.post(base, json={"subject": "TLS error", "message": "Cert expired?"})
    assert made.status_code == 201, made.text
    public_id = made.json()["public_id"]
    assert made.json()["status"] == "new"
    replied = member.post(f"{base}/{public_id}/replies", json={"message": "Any news?"})
    assert replied.status_code == 201 and len(replied.json()["messages"]) == 2
    assert [t["public_id"] for t in member.get(base).json()["items"]] == [public_id]
    outsider = signed_in(app, world.outsider)
    assert outsider.get(f"/api/v1/orgs/{world.other_org.id}/tickets/{public_id}").status_code == 404
    with transaction(runtime.session_factory) as s:
        ticket = tickets.get_ticket(s, public_id)
        agent = tickets.Author.of_user(world.staff[StaffRole.SUPPORT])
        tickets.add_reply(s, runtime.clock, ticket, agent, "Checking DNS.", internal=True)
    staff = signed_in(app, world.staff[StaffRole.SUPPORT])
    queue = staff.get("/api/v1/admin/tickets?view=all")
    assert queue.status_code == 200 and queue.json()["items"][0]["public_id"] == public_id
    staff_view = staff.get(f"/api/v1/admin/tickets/{public_id}").json()
    assert [m["kind"] for m in staff_view["messages"]] == ["reply", "reply", "note"]
    customer_view = member.get(f"{base}/{public_id}").json()
    assert "Checking DNS." not in [m["body"] for m in customer_view["messages"]]
    assert staff.get("/api/v1/admin/tickets?cursor=nonsense").status_code == 422
