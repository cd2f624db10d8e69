"""Console monitoring pages: staff see open incidents and failing checks, post updates, hold
an incident open, resolve it and schedule maintenance; bad input is a plain 4xx on the page;
read-only staff may look but not act."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import StaffRole
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.models import Incident, MaintenanceWindow
from imhost.monitoring.probes import ProbeResult, Step
from imhost.web import console, portal
from tests.factories import make_world
from tests.web.conftest import signed_in


def _incident(session_factory: sessionmaker[Session], clock: FrozenClock) -> str:
    failed = ProbeResult("x", [Step("http", False, 0.1, "the server answered 503")])
    with transaction(session_factory, write=True) as s:
        monitoring.record_result(
            s, clock, "component:api", "readyz", failed, policy=rules.Policy(down_after=1)
        )
        return s.scalars(select(Incident.reference)).one()


def test_staff_run_an_incident_and_schedule_maintenance(
    app: FastAPI, session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    portal.install(app)
    console.install(app)
    with session_factory() as s:
        world = make_world(s, clock)
        s.commit()
    reference = _incident(session_factory, clock)
    admin = signed_in(app, world.staff[StaffRole.SUPPORT])
    token = admin.headers["X-CSRF-Token"]
    home = admin.get("/console/monitoring")
    assert home.status_code == 200
    assert reference in home.text and "the server answered 503" in home.text
    page = admin.get(f"/console/monitoring/incidents/{reference}")
    assert page.status_code == 200 and "API is not working" in page.text

    bad = admin.post(
        f"/console/monitoring/incidents/{reference}/updates",
        data={"csrf_token": token, "status": "identified", "body": " "},
    )
    assert bad.status_code == 422 and "Write what customers should know." in bad.text
    ok = admin.post(
        f"/console/monitoring/incidents/{reference}/updates",
        data={"csrf_token": token, "status": "identified", "body": "The database filled up."},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    held = admin.post(
        f"/console/monitoring/incidents/{reference}/hold",
        data={"csrf_token": token, "held": "yes"},
        follow_redirects=False,
    )
    assert held.status_code == 303
    with session_factory() as s:
        incident = s.scalars(select(Incident)).one()
        assert incident.held and incident.status == "identified"
    admin.post(
        f"/console/monitoring/incidents/{reference}/updates",
        data={"csrf_token": token, "status": "resolved", "body": "Disk grown; all good."},
    )
    with session_factory() as s:
        assert s.scalars(select(Incident.status)).one() == "resolved"

    wrong = admin.post(
        "/console/monitoring/maintenance",
        data={
            "csrf_token": token,
            "title": "Upgrade",
            "local_start": "tomorrow",
            "timezone": "UTC",
            "duration_minutes": "60",
        },
    )
    assert wrong.status_code == 422 and "Type the start as a date and time" in wrong.text
    wrong = admin.post(
        "/console/monitoring/maintenance",
        data={
            "csrf_token": token,
            "title": "Upgrade",
            "local_start": "2026-02-01T02:00",
            "timezone": "Mars/Olympus",
            "duration_minutes": "60",
            "subjects": ["component:web"],
        },
    )
    assert wrong.status_code == 422 and "is not a time zone" in wrong.text
    assert 'value="component:web" checked' in wrong.text  # the choice is kept
    done = admin.post(
        "/console/monitoring/maintenance",
        data={
            "csrf_token": token,
            "title": "Database upgrade",
            "local_start": "2026-02-01T02:00",
            "timezone": "Europe/Berlin",
            "duration_minutes": "45",
            "recurrence": "weekly",
            "subjects": ["component:web", "component:api", "not-a-subject"],
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    with session_factory() as s:
        window = s.scalars(select(MaintenanceWindow)).one()
        assert window.subjects == ["component:web", "component:api"]
        assert window.recurrence == "weekly" and window.timezone == "Europe/Berlin"

    reader = signed_in(app, world.staff[StaffRole.READ_ONLY])
    assert reader.get("/console/monitoring").status_code == 200
    refused = reader.post(
        "/console/monitoring/maintenance",
        data={"csrf_token": reader.headers["X-CSRF-Token"], "title": "x"},
    )
    assert refused.status_code == 403
    missing = admin.get("/console/monitoring/incidents/INC-NOPE")
    assert missing.status_code == 404 and "There is no incident INC-NOPE." in missing.text
