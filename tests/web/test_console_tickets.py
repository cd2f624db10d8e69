"""Console tickets: the queue's views, a ticket's page with the customer beside it, replies and
internal notes (the customer never sees a note), changes recorded in the history, canned
replies filled in, merge, and a ticket opened on a customer's behalf."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.accounts.models import OrgRole, StaffRole
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime
from imhost.support import tickets
from imhost.support.ticket_models import Ticket
from tests.factories import World, make_world
from tests.web.conftest import signed_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    with session_factory() as session:
        world = make_world(session, clock)
        session.commit()
        return world


def _open(runtime: Runtime, world: World, subject: str) -> str:
    with transaction(runtime.session_factory) as s:
        ticket = tickets.open_ticket(
            s,
            runtime.clock,
            subject=subject,
            body="Nothing works since the update.",
            requester=tickets.Author.of_user(world.members[OrgRole.OWNER]),
            organization_id=world.org.id,
        )
        return ticket.public_id


def test_staff_work_a_ticket_from_the_queue(
    app: FastAPI, world: World, runtime: Runtime, clock: FrozenClock
) -> None:
    first = _open(runtime, world, "Login broken")
    clock.advance(60)
    dup = _open(runtime, world, "Login broken again")
    agent = signed_in(app, world.staff[StaffRole.SUPPORT])
    queue = agent.get("/console/support/tickets")
    assert queue.status_code == 200 and first in queue.text and dup in queue.text
    assert first not in agent.get("/console/support/tickets?view=mine").text
    url = f"/console/support/tickets/{first}"
    page = agent.get(url)
    assert page.status_code == 200
    assert "Acme Chat" in page.text and "Open invoices" in page.text and dup in page.text
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    with transaction(runtime.session_factory) as s:
        canned = tickets.save_canned(
            s,
            runtime.clock,
            title="Reset",
            body="Hello {customer_name}, about {ticket_id}: try a reset. {agent_name}",
            actor=Actor.system(),
        )
        canned_id = canned.id
    filled = agent.get(f"{url}?canned={canned_id}")
    assert f"Hello Olga Owner, about {first}: try a reset." in filled.text
    note = agent.post(
        f"{url}/reply", data={"csrf_token": token, "message": "Looks like DNS.", "kind": "note"}
    )
    assert note.status_code == 200 and "internal note" in note.text
    sent = agent.post(
        f"{url}/reply", data={"csrf_token": token, "message": "Try again now.", "kind": "reply"}
    )
    assert sent.status_code == 200
    staff_id = world.staff[StaffRole.SUPPORT].id
    changed = agent.post(
        f"{url}/update",
        data={
            "csrf_token": token,
            "status": "open",
            "priority": "high",
            "department": "technical",
            "assignee": staff_id,
            "tags": "dns login",
        },
    )
    assert changed.status_code == 200
    assert "priority: normal → high" in changed.text
    assert first in agent.get("/console/support/tickets?view=mine").text
    bad = agent.post(f"{url}/update", data={"csrf_token": token, "tags": "<b>"})
    assert bad.status_code == 422
    # The customer sees the reply, never the note.
    owner = signed_in(app, world.members[OrgRole.OWNER])
    thread = owner.get(f"/portal/orgs/{world.org.slug}/support/tickets/{first}")
    assert "Try again now." in thread.text and "Looks like DNS." not in thread.text
    merged = agent.post(
        f"/console/support/tickets/{dup}/merge",
        data={"csrf_token": token, "into": first},
        follow_redirects=False,
    )
    assert merged.status_code == 303 and merged.headers["location"].endswith(first)
    nowhere = agent.post(f"{url}/merge", data={"csrf_token": token, "into": "IMH-0000-0000"})
    assert nowhere.status_code == 422


def test_staff_open_a_ticket_on_a_customers_behalf(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    agent = signed_in(app, world.staff[StaffRole.SUPPORT])
    form = agent.get("/console/support/tickets/new")
    token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    data = {
        "csrf_token": token,
        "customer": world.org.slug,
        "email": "nobody@x.example",
        "subject": "Your certificate expires",
        "message": "We renewed it for you; nothing to do.",
        "department": "domains",
    }
    refused = agent.post("/console/support/tickets/new", data=data)
    assert refused.status_code == 422 and "member" in refused.text
    data["email"] = world.members[OrgRole.OWNER].email
    done = agent.post("/console/support/tickets/new", data=data, follow_redirects=False)
    assert done.status_code == 303
    public_id = done.headers["location"].rsplit("/", 1)[-1]
    with runtime.session_factory() as s:
        ticket = tickets.find_ticket_by_public_id(s, public_id)
        assert isinstance(ticket, Ticket)
        assert ticket.status == "waiting_on_customer" and ticket.via == "staff"
        assert ticket.requester_email == world.members[OrgRole.OWNER].email


def test_read_only_staff_read_the_queue_but_change_nothing(
    app: FastAPI, world: World, runtime: Runtime
) -> None:
    public_id = _open(runtime, world, "Question")
    reader = signed_in(app, world.staff[StaffRole.READ_ONLY])
    page = reader.get(f"/console/support/tickets/{public_id}")
    assert page.status_code == 200 and "Send to the customer" not in page.text
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    reply = reader.post(
        f"/console/support/tickets/{public_id}/reply", data={"csrf_token": token, "message": "x"}
    )
    assert reply.status_code == 403
    billing = signed_in(app, world.staff[StaffRole.BILLING])
    assert billing.get("/console/support/tickets").status_code == 403
