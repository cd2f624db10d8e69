"""Staff alerts: grouped (one message for services that fail together), rate-limited, one
resolved notice, reminders for incidents still open; e-mail to admin and support staff and a
signed webhook to the provider's endpoints."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import service as accounts
from imhost.accounts.models import StaffRole
from imhost.config import Settings
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.alerts import AlertPolicy, flush_alerts
from imhost.monitoring.models import AlertNotice
from imhost.monitoring.probes import ProbeResult, Step
from imhost.notify.models import OutboundEmail, WebhookDelivery, WebhookEndpoint
from imhost.runtime import Runtime, build_runtime

POLICY = rules.Policy(down_after=1, up_after=1)
ALERTS = AlertPolicy()


def _result(ok: bool) -> ProbeResult:
    return ProbeResult("x", [Step("connect", ok, 0.002, "" if ok else "the port is closed")])


def _probe(runtime: Runtime, subject: str, ok: bool) -> None:
    with transaction(runtime.session_factory, write=True) as s:
        monitoring.record_result(s, runtime.clock, subject, "tcp", _result(ok), policy=POLICY)


def _flush(runtime: Runtime) -> object:
    with transaction(runtime.session_factory, write=True) as s:
        return flush_alerts(s, runtime.clock, ALERTS, status_url="https://im.example/status")


def _mails(runtime: Runtime) -> list[OutboundEmail]:
    with runtime.session_factory() as s:
        return list(
            s.scalars(
                select(OutboundEmail)
                .where(OutboundEmail.kind == "monitoring-alert")
                .order_by(OutboundEmail.created_at)
            )
        )


def test_alerts_are_grouped_rate_limited_and_resolved_once(
    engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    clock = FrozenClock()
    runtime = build_runtime(Settings(data_dir=tmp_path), engine=engine, clock=clock)
    with transaction(runtime.session_factory) as s:
        for email, role in (
            ("admin@provider.example.com", StaffRole.ADMIN),
            ("support@provider.example.com", StaffRole.SUPPORT),
            ("billing@provider.example.com", StaffRole.BILLING),
        ):
            accounts.create_user(s, clock, email=email, staff_role=role)
        s.add(
            WebhookEndpoint(
                organization_id=None,
                url="https://hooks.provider.test/im",
                secret="s" * 32,
                created_at=clock.now(),
            )
        )
    for c in ("web", "api", "email"):
        _probe(runtime, f"component:{c}", True)
    clock.advance(60)
    _probe(runtime, "component:web", False)
    _probe(runtime, "component:api", False)
    assert _flush(runtime) is None  # waiting for the group to fill
    clock.advance(10)
    _probe(runtime, "component:email", False)
    clock.advance(15)
    assert _flush(runtime) is None  # the group waits 30 s from its first notice (25 s now)
    clock.advance(5)
    _flush(runtime)
    [mail] = _mails(runtime)
    assert mail.to == ["admin@provider.example.com", "support@provider.example.com"]
    assert mail.subject.startswith("[monitoring] 3 incidents open: ")
    assert "Web portal is not working: opened (investigating)" in mail.text
    assert "the port is closed" in mail.text
    assert "https://im.example/status" in mail.text
    # flapping and recovering within the group interval sends nothing yet
    for _ in range(5):
        clock.advance(20)
        _probe(runtime, "component:web", True)
        _probe(runtime, "component:web", False)
    assert _flush(runtime) is None and len(_mails(runtime)) == 1
    for c in ("web", "api", "email"):
        _probe(runtime, f"component:{c}", True)
    clock.advance(timedelta(minutes=6))
    with transaction(runtime.session_factory, write=True) as s:
        assert len(monitoring.settle_incidents(s, clock)) == 3
    clock.advance(timedelta(seconds=31))
    _flush(runtime)
    mails = _mails(runtime)
    assert len(mails) == 2
    assert mails[1].subject.startswith("[monitoring] Resolved: ")
    assert mails[1].text.count(": resolved;") == 3
    clock.advance(timedelta(hours=5))
    assert _flush(runtime) is None  # nothing open, nothing pending: quiet
    with runtime.session_factory() as s:
        hooks = s.scalars(select(WebhookDelivery.event_type)).all()
    assert hooks == ["monitoring.alert", "monitoring.alert"]


def test_an_incident_left_open_is_reminded_every_repeat_interval(
    engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    clock = FrozenClock()
    runtime = build_runtime(Settings(data_dir=tmp_path), engine=engine, clock=clock)
    with transaction(runtime.session_factory) as s:
        accounts.create_user(
            s, clock, email="admin@provider.example.com", staff_role=StaffRole.ADMIN
        )
    _probe(runtime, "component:api", True)
    _probe(runtime, "component:api", False)
    clock.advance(31)
    _flush(runtime)
    clock.advance(timedelta(hours=3, minutes=59))
    assert _flush(runtime) is None
    clock.advance(timedelta(minutes=1))
    assert _flush(runtime) is None  # a reminder is due: it waits its group wait too
    clock.advance(timedelta(seconds=15))
    assert _flush(runtime) is None  # (and is not added twice)
    clock.advance(timedelta(seconds=15))
    _flush(runtime)
    mails = _mails(runtime)
    assert len(mails) == 2
    assert "API is not working: still open (investigating)" in mails[1].text
    with runtime.session_factory() as s:
        kinds = s.scalars(select(AlertNotice.kind).order_by(AlertNotice.at)).all()
    assert kinds == ["firing", "repeat"]
    clock.advance(timedelta(minutes=10))
    assert _flush(runtime) is None
