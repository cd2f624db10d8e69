"""SLA settings (stored, validated, audited) and the alert pass: a warning before the breach
and an alert at it, each sent once by e-mail to staff and as a webhook."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import AuditEvent, StaffRole
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import InvalidInput
from imhost.notify.mail import Mailer
from imhost.notify.models import OutboundEmail, WebhookDelivery
from imhost.notify.webhooks import WebhookService
from imhost.support import sla_service
from imhost.support.sla import add_business_time
from imhost.support.sla_service import RunningTarget
from imhost.worker.support_sla import sla_notifier
from tests.factories import make_user

STAFF = Actor(user_id=None, label="admin@imhost.example")


def test_calendar_is_saved_loaded_and_audited(db: Session, clock: FrozenClock) -> None:
    assert sla_service.load_calendar(db).timezone == "UTC"  # shipped default: Mon-Fri 9-17
    sla_service.save_calendar(
        db,
        clock,
        timezone="Europe/Berlin",
        weekly={"monday": "09:00-12:00, 13:00-17:00", "friday": "09:00-15:00"},
        holidays="2026-12-25, 2026-12-26\n2027-01-01",
        actor=STAFF,
    )
    calendar = sla_service.load_calendar(db)
    assert calendar.timezone == "Europe/Berlin"
    assert date(2026, 12, 26) in calendar.holidays and len(calendar.holidays) == 3
    assert calendar.weekly[0][1].start == 13 * 60 and calendar.weekly[1] == ()
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "sla.calendar_changed"))
    assert len(list(events)) == 1


def test_bad_calendar_settings_say_what_is_wrong(db: Session, clock: FrozenClock) -> None:
    with pytest.raises(InvalidInput, match="2026-12-25"):
        sla_service.save_calendar(
            db,
            clock,
            timezone="UTC",
            weekly={"monday": "09:00-17:00"},
            holidays="Xmas",
            actor=STAFF,
        )
    with pytest.raises(InvalidInput, match="time zone"):
        sla_service.save_calendar(
            db,
            clock,
            timezone="Nowhere/City",
            weekly={"monday": "09:00-17:00"},
            holidays="",
            actor=STAFF,
        )


def test_policies_default_and_are_edited(db: Session, clock: FrozenClock) -> None:
    assert sla_service.load_policies(db)["top"].first_response == timedelta(hours=1)
    sla_service.save_policy(
        db,
        clock,
        tier="top",
        first_response_minutes=30,
        resolution_minutes=240,
        warn_before_minutes=10,
        actor=STAFF,
    )
    top = sla_service.load_policies(db)["top"]
    assert (top.first_response, top.resolution, top.warn_before) == (
        timedelta(minutes=30),
        timedelta(hours=4),
        timedelta(minutes=10),
    )
    with pytest.raises(InvalidInput, match="no such support tier"):
        sla_service.save_policy(
            db,
            clock,
            tier="gold",
            first_response_minutes=1,
            resolution_minutes=2,
            warn_before_minutes=0,
            actor=STAFF,
        )
    with pytest.raises(InvalidInput, match="cannot be shorter"):
        sla_service.save_policy(
            db,
            clock,
            tier="basic",
            first_response_minutes=60,
            resolution_minutes=30,
            warn_before_minutes=0,
            actor=STAFF,
        )


def test_alerts_warn_then_breach_each_once(db: Session, clock: FrozenClock) -> None:
    make_user(db, clock, "agent@imhost.example", staff_role=StaffRole.SUPPORT)
    webhooks = WebhookService(allow_private=True)
    webhooks.create_endpoint(db, clock, organization_id=None, url="https://hooks.example/sla")
    notify = sla_notifier(clock, Mailer("imhost <noreply@imhost.example>"), webhooks)
    clock.set(datetime(2026, 11, 30, 9, tzinfo=UTC))  # Monday 09:00 UTC
    calendar = sla_service.load_calendar(db)
    due = add_business_time(clock.now(), timedelta(hours=8), calendar)
    assert due == datetime(2026, 11, 30, 17, tzinfo=UTC)
    target = RunningTarget(
        "t1", "IMH-7K3Q-2D9F", "Cannot log in", None, "first_response", due, timedelta(hours=1)
    )

    def run() -> list[str]:
        alerts = sla_service.send_alerts(
            db, clock, [target], notify, console_url="https://imhost.example"
        )
        return [a.kind for a in alerts]

    assert run() == []
    clock.set(datetime(2026, 11, 30, 16, 5, tzinfo=UTC))
    assert run() == ["warning"]
    assert run() == []
    clock.set(datetime(2026, 11, 30, 17, 0, tzinfo=UTC))
    assert run() == ["breached"]
    assert run() == []
    mails = list(db.scalars(select(OutboundEmail).order_by(OutboundEmail.created_at)))
    assert [m.kind for m in mails] == ["sla_warning", "sla_breached"]
    assert mails[1].to == ["agent@imhost.example"]
    assert (
        mails[1].subject
        == "SLA breached: IMH-7K3Q-2D9F first response was due 2026-11-30 17:00 UTC"
    )
    hooks = list(db.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at)))
    assert [h.event_type for h in hooks] == ["ticket.sla_warning", "ticket.sla_breached"]
    # a paused target never alerts; a due time moved by a pause may warn again, once
    moved = RunningTarget(
        "t1",
        "IMH-7K3Q-2D9F",
        "x",
        None,
        "first_response",
        due + timedelta(hours=24),
        timedelta(hours=1),
        paused=True,
    )
    clock.set(due + timedelta(hours=23, minutes=30))
    assert sla_service.send_alerts(db, clock, [moved], notify, console_url="https://x") == []
    running = RunningTarget(
        *[
            getattr(moved, f)
            for f in (
                "ticket_id",
                "public_id",
                "subject",
                "organization_id",
                "target",
                "due_at",
                "warn_before",
            )
        ]
    )
    assert [
        a.kind
        for a in sla_service.send_alerts(db, clock, [running], notify, console_url="https://x")
    ] == ["warning"]
