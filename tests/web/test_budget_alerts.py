"""Budget alerts end to end: the worker's job compares the forecast of the next invoice with
the budget, records each threshold once per period, and e-mails the owners and billing
contacts through the outbox; the e-mail goes out over real SMTP; the page says the same."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import Iterator
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import Organization, OrgRole
from imhost.billing import service as billing
from imhost.billing.budgets import budget_forecast
from imhost.billing.flows import run_billing
from imhost.billing.forecast import forecast_invoice
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.money import format_money
from imhost.metering import budgets
from imhost.metering.models import BudgetAlert
from imhost.metering.schemas import BudgetIn
from imhost.metering.tasks import scheduled_budget_check
from imhost.notify.mail import MailDelivery
from imhost.notify.models import OutboundEmail
from imhost.runtime import Runtime
from imhost.web import portal
from tests.billing.factories import add_usage, make_plan, messages_per_unit
from tests.factories import World, make_world
from tests.web.conftest import signed_in


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, int, _Sink]]:
    sink = _Sink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, sink
    finally:
        controller.stop()


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with transaction(session_factory) as s:
        world = make_world(s, clock)
        org = s.get(Organization, world.org.id)
        assert org is not None
        org.billing_email = "invoices@acme.example"
        billing.set_tax_rate(s, clock, "DE", "19")
        pv = make_plan(
            s,
            clock,
            base_fee="19.00",
            setup_fee="10.00",
            components=[messages_per_unit("0.001", included="1000")],
        )
        billing.start_subscription(s, clock, world.org.id, pv.id)
    run_billing(session_factory, clock, clock.now())  # the opening invoice
    with transaction(session_factory) as s:
        budgets.set_budget(s, clock, world.org.id, BudgetIn(amount=Decimal(100), currency="EUR"))
    return world


def _alerts(factory: sessionmaker[Session]) -> list[OutboundEmail]:
    with factory() as s:
        return list(
            s.scalars(
                select(OutboundEmail)
                .where(OutboundEmail.kind == "budget-alert")
                .order_by(OutboundEmail.created_at, OutboundEmail.subject)
            )
        )


def test_the_forecast_crossing_a_threshold_is_e_mailed_once_to_owners_and_billing(
    app: FastAPI,
    world: World,
    clock: FrozenClock,
    session_factory: sessionmaker[Session],
    smtp_server: tuple[str, int, _Sink],
    tmp_path: Path,
) -> None:
    runtime: Runtime = app.state.runtime
    clock.set(utc(2026, 11, 11))  # a third of November
    with transaction(session_factory) as s:
        add_usage(s, clock, world.org.id, utc(2026, 11, 5), 11_000)
    # Spent so far: 10.00 of usage; forecast: 33,000 messages -> 32.00 + 19.00 next base
    # fee, + 19 % tax = 60.69: past 50 %, not 80 %.
    assert scheduled_budget_check(runtime.session_factory, clock, budget_forecast) == 1
    assert scheduled_budget_check(runtime.session_factory, clock, budget_forecast) == 0  # once
    with session_factory() as s:
        fc = forecast_invoice(s, clock, world.org.id)
        assert fc is not None and fc.total == Decimal("60.69")
    mails = _alerts(session_factory)
    assert len(mails) == 1
    mail = mails[0]
    owner, billing_member = world.members[OrgRole.OWNER], world.members[OrgRole.BILLING]
    assert sorted(mail.to) == sorted([owner.email, billing_member.email, "invoices@acme.example"])
    assert world.members[OrgRole.TECHNICAL].email not in mail.to
    assert format_money(fc.total, "EUR") in mail.text
    assert "61 % of your monthly budget of" in mail.text and "passes 50 %" in mail.text
    assert "next invoice on 1 December 2026 is" in mail.text
    link = f"{runtime.settings.public_url.rstrip('/')}/portal/orgs/{world.org.slug}/billing"
    assert link in mail.text

    clock.set(utc(2026, 11, 21))  # the pace goes up: 80 % and 100 % in one check
    with transaction(session_factory) as s:
        add_usage(s, clock, world.org.id, utc(2026, 11, 20), 60_000)
    assert scheduled_budget_check(runtime.session_factory, clock, budget_forecast) == 2
    assert scheduled_budget_check(runtime.session_factory, clock, budget_forecast) == 0
    mails = _alerts(session_factory)
    assert len(mails) == 3
    with session_factory() as s:
        recorded = sorted(s.scalars(select(BudgetAlert.threshold)))
    assert recorded == [50, 80, 100]

    # Out over real SMTP, each once.
    host, port, sink = smtp_server
    delivery = MailDelivery(
        smtp_url=f"smtp://{host}:{port}",
        outbox_dir=tmp_path,
        mail_from="imhost <noreply@provider.example.com>",
        clock=clock,
    )
    delivery.deliver_pending(session_factory)
    delivery.deliver_pending(session_factory)
    sent: list[Message] = [email.message_from_bytes(raw) for _rcpts, raw in sink.messages]
    alerts = [m for m in sent if str(m["Subject"]).startswith("Budget alert")]
    assert len(alerts) == 3
    body = alerts[0].get_payload(decode=True) if not alerts[0].is_multipart() else None
    text = (
        body.decode() if isinstance(body, bytes) else str(alerts[0].get_body().get_content())  # type: ignore[attr-defined]
    )
    assert "/billing" in text and "forecast" in text

    # The link leads to the page, which says what the job does.
    portal.install(app)
    page = signed_in(app, owner).get(f"/portal/orgs/{world.org.slug}/billing")
    assert page.status_code == 200
    assert "forecast of your next invoice" in page.text
    assert "once per period" in page.text


def test_a_trial_forecast_is_the_first_paid_invoice_not_the_free_usage(
    app: FastAPI, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    runtime: Runtime = app.state.runtime
    clock.set(utc(2026, 11, 1, 8))
    with transaction(session_factory) as s:
        world = make_world(s, clock)
        billing.set_tax_rate(s, clock, "DE", "19")
        pv = make_plan(
            s,
            clock,
            base_fee="19.00",
            setup_fee="10.00",
            trial_days=14,
            components=[messages_per_unit("0.001")],
        )
        billing.start_subscription(s, clock, world.org.id, pv.id)
        budgets.set_budget(s, clock, world.org.id, BudgetIn(amount=Decimal(150), currency="EUR"))
    clock.set(utc(2026, 11, 3))
    with transaction(session_factory) as s:  # would be 1,940.00 at this pace if billed
        add_usage(s, clock, world.org.id, utc(2026, 11, 2), 277_000)
    assert scheduled_budget_check(runtime.session_factory, clock, budget_forecast) == 0  # 34.51
    portal.install(app)
    page = signed_in(app, world.members[OrgRole.OWNER]).get(
        f"/portal/orgs/{world.org.slug}/billing"
    )
    assert page.status_code == 200
    text = " ".join(re.sub(r"<[^>]+>", "", page.text).replace("\xa0", " ").split())
    assert "Free trial until 2026-11-15; first invoice on 2026-11-15: about €34.51" in text
    assert "1,940" not in text
    assert "free trial" in text and "trialing" not in text  # the status in words
