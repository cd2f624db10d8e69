"""Every e-mail imhost sends is rendered, and every link in it leads to a page (no 404).

The e-mails are made by the subscribers in ``src/imhost/notify/`` from real events (a billing
run, a payment, a reminder, a credit note, a budget alert, an invitation, a verification, an
alert, an access review, a password reset, a sign-up for a new and for an existing address). A
new kind of e-mail fails ``test_every_kind_of_email_is_covered`` until it is added to
``_send_every_email`` here.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.accounts import audit, recovery, reviews, threats
from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.email_change import request_change
from imhost.accounts.models import Organization, OrgRole, SecurityAlert, StaffRole, User
from imhost.accounts.signup import SignupForm, request_signup
from imhost.accounts.verification import request_verification
from imhost.billing import sepa
from imhost.billing import service as billing
from imhost.billing.budgets import budget_forecast
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, PaymentAttempt
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.metering import budgets
from imhost.metering.schemas import BudgetIn
from imhost.metering.tasks import scheduled_budget_check
from imhost.monitoring.alerts import scheduled_alerts
from imhost.monitoring.probes import ProbeResult, Step
from imhost.monitoring.rules import Policy
from imhost.monitoring.service import record_result
from imhost.notify.models import OutboundEmail
from imhost.offboarding.export import build_export
from imhost.offboarding.flows import close_organization
from imhost.runtime import Runtime
from imhost.support import tickets
from imhost.support.tickets import Author
from imhost.web import console, portal
from tests.billing.factories import make_plan
from tests.billing.sepa.helpers import Tx, camt053, set_up_creditor
from tests.factories import World, make_world
from tests.web.conftest import signed_in

NOTIFY_DIR = Path(__file__).parents[2] / "src" / "imhost" / "notify"
SUPPORT_NOTICES = NOTIFY_DIR.parent / "support" / "notices.py"
URL = re.compile(r"""https?://[^\s"'<>]+""")


@pytest.fixture
def world(session_factory: sessionmaker[Session], clock: FrozenClock) -> World:
    clock.set(utc(2026, 11, 1, 8))
    with session_factory() as session:
        world = make_world(session, clock)
        org = session.get(Organization, world.org.id)
        assert org is not None
        org.billing_email = world.members[OrgRole.OWNER].email
        session.commit()
        return world


def _send_every_email(runtime: Runtime, clock: FrozenClock, world: World) -> None:
    owner = world.members[OrgRole.OWNER]
    with transaction(runtime.session_factory) as s:
        billing.start_subscription(s, clock, world.org.id, make_plan(s, clock).id)
    run_billing(runtime.session_factory, clock, clock.now())  # "invoice"
    with transaction(runtime.session_factory) as s:  # "budget-alert"
        budgets.set_budget(s, clock, world.org.id, BudgetIn(amount=Decimal(10), currency="EUR"))
    scheduled_budget_check(runtime.session_factory, clock, budget_forecast)
    with transaction(runtime.session_factory) as s:
        invoice = s.scalars(select(Invoice).where(Invoice.status == "open")).one()
        s.add(  # the reminder says the charge of the saved card failed, with its links
            PaymentAttempt(
                organization_id=invoice.organization_id,
                invoice_id=invoice.id,
                gateway="manual",
                idempotency_key=f"{invoice.id}:dunning:reminder",
                source="dunning:reminder",
                amount=invoice.amount_due,
                currency=invoice.currency,
                status="failed",
                failure_message="Your card was declined.",
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
        s.flush()
        events.publish(  # "invoice-reminder"
            s,
            events.DunningReminderDue(
                organization_id=invoice.organization_id,
                invoice_id=invoice.id,
                step="reminder",
                days_from_due=3,
                at=clock.now(),
            ),
        )
        _direct_debit_emails(s, clock, invoice, owner)
        billing.record_payment(  # "invoice-paid"
            s, clock, invoice.id, amount=invoice.amount_due, currency=invoice.currency
        )
        billing.issue_credit_note(s, clock, invoice.id, reason="goodwill")  # "credit-note"
        org = accounts.get_organization(s, world.org.id)
        user = accounts.get_user(s, owner.id)
        accounts.invite(  # "invitation"
            s,
            clock,
            org,
            email="new@a.example.com",
            role=OrgRole.TECHNICAL,
            actor=Actor(user_id=user.id, label=user.email),
            actor_role=OrgRole.OWNER,
        )
        request_verification(s, clock, user)  # "verify-email"
        request_change(s, clock, user, "olga@new.example.com")  # "email-change", "-notice"
        raise_security_alerts(s, clock, owner, org.id)  # "security-alert", two of them
        review = reviews.open_review(s, clock, runtime.settings.security, org)  # "access-review"
        assert review is not None
        security = runtime.settings.security
        recovery.request_reset(  # "password-reset"
            s, clock, security, email=user.email, address="192.0.2.1"
        )
        for email in ("new-owner@d.example.com", user.email):  # "sign-up", "sign-up-existing"
            request_signup(
                s,
                clock,
                security,
                SignupForm(
                    email=email,
                    password="violet tractor kettle summit",
                    name="Dana",
                    organization_name="Delta Chat",
                    country="NL",
                ),
                address="192.0.2.1",
            )
    _ticket_emails(runtime, clock, world)
    with transaction(runtime.session_factory) as s:  # "org-closed": the other organization
        other = accounts.get_organization(s, world.other_org.id)
        outsider = Actor(user_id=world.outsider.id, label=world.outsider.email)
        build_export(s, clock, other, actor=outsider)
        close_organization(s, clock, other, confirm_name=other.name, actor=outsider)
    with transaction(runtime.session_factory) as s:  # "monitoring-alert" (to staff)
        failed = ProbeResult("http", [Step("http", False, 0.1, "the server answered 503")])
        record_result(s, clock, "component:api", "readyz", failed, policy=Policy(down_after=1))
    clock.advance(31)
    scheduled_alerts(runtime.session_factory, clock, runtime.settings.public_url + "/status")


def _ticket_emails(runtime: Runtime, clock: FrozenClock, world: World) -> None:
    """A member's ticket and a guest's: the confirmation, the staff notice, a staff reply,
    the resolution with its rating links."""
    owner = world.members[OrgRole.OWNER]
    agent = Author.of_user(world.staff[StaffRole.SUPPORT])
    with transaction(runtime.session_factory) as s:
        for requester, org_id in (
            (Author.of_user(owner), world.org.id),  # "ticket-received", "ticket-staff-notice"
            (Author.guest("Gina", "gina@guest.example"), None),
        ):
            ticket = tickets.open_ticket(
                s, clock, subject="Help", body="Hello", requester=requester, organization_id=org_id
            )
            tickets.add_reply(s, clock, ticket, agent, "Try this.")  # "ticket-reply"
            tickets.set_status(  # "ticket-resolved"
                s, clock, ticket, "resolved", actor=Actor.system()
            )


def _direct_debit_emails(s: Session, clock: FrozenClock, invoice: Invoice, owner: User) -> None:
    """A mandate given and withdrawn, a debit announced, exported and returned by the bank."""
    set_up_creditor(s, clock)
    mandate = sepa.sign_mandate(  # "direct-debit-mandate"
        s,
        clock,
        invoice.organization_id,
        account_holder="Acme",
        iban="DE89370400440532013000",
        accepted=True,
        signed_by=owner.email,
        signed_from="192.0.2.1",
    )
    collection = sepa.queue_collection(  # "direct-debit-notice"
        s, clock, invoice, mandate, idempotency_key="email-walk"
    )
    sepa.export_batch(s, clock, up_to=collection.collection_date, exported_by="staff")
    returned = camt053(
        [Tx(str(collection.amount), "DBIT", collection.end_to_end_id, return_reason="AC04")]
    )
    sepa.import_statement(s, clock, returned, imported_by="staff")  # "direct-debit-returned"
    sepa.revoke_mandate(  # "direct-debit-mandate-withdrawn"
        s, clock, invoice.organization_id, mandate.id, revoked_by=owner.email
    )


def raise_security_alerts(s: Session, clock: FrozenClock, owner: User, org_id: str) -> None:
    """Two real alerts through the threat rules: failed sign-ins for ``owner`` (an alert about
    the person, in no organization) and a new owner of the organization."""
    for _ in range(threats.BURST_THRESHOLD):
        audit.record(
            s,
            clock,
            "login.failed",
            target_type="user",
            target_id=owner.id,
            target_label=owner.email,
            address="198.51.100.7",
        )
    audit.record(
        s,
        clock,
        "org.owner_added",
        organization_id=org_id,
        target_type="user",
        target_id=owner.id,
        target_label=owner.email,
    )


def _kinds_in_source() -> set[str]:
    kinds: set[str] = set()
    for path in [*NOTIFY_DIR.glob("*.py"), SUPPORT_NOTICES]:
        kinds |= set(re.findall(r'kind="([a-z-]+)"', path.read_text()))
    return kinds


def test_every_kind_of_email_is_covered(
    app: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    _send_every_email(app.state.runtime, clock, world)
    with session_factory() as s:
        sent = set(s.scalars(select(OutboundEmail.kind)))
    assert _kinds_in_source() - sent == set(), "e-mails this test does not send yet"


def test_every_link_in_every_email_leads_to_a_page(
    app: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    portal.install(app)
    console.install(app)
    runtime: Runtime = app.state.runtime
    _send_every_email(runtime, clock, world)
    base = runtime.settings.public_url.rstrip("/")
    with session_factory() as s:
        mails = list(s.scalars(select(OutboundEmail)))
    owner = signed_in(app, world.members[OrgRole.OWNER])
    checked: dict[str, int] = {}
    for mail in mails:
        for url in URL.findall(mail.text + (mail.html or "")):
            url = url.rstrip(".,;)")
            assert url.startswith(base + "/"), f"{mail.kind}: link outside the site: {url}"
            path = url[len(base) :]
            status = owner.get(path).status_code
            checked[f"{mail.kind} {path}"] = status
    assert checked, "no links found"
    broken = {link: status for link, status in checked.items() if status == 404 or status >= 500}
    assert broken == {}
    kinds_with_links = {link.split(" ")[0] for link in checked}
    assert {"invoice", "invoice-paid", "invoice-reminder", "budget-alert"} <= kinds_with_links
    assert any(
        link.startswith("invoice-reminder ") and link.endswith("/billing/payment-methods")
        for link in checked
    ), "the reminder after a failed charge links to the payment methods"


def test_the_invoice_email_links_to_the_invoice_page_of_its_organization(
    app: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    portal.install(app)
    _send_every_email(app.state.runtime, clock, world)
    with session_factory() as s:
        mail = s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "invoice")).one()
        invoice = s.scalars(select(Invoice)).one()
    path = f"/portal/orgs/{world.org.slug}/billing/invoices/{invoice.id}"
    assert path in mail.text
    page = signed_in(app, world.members[OrgRole.OWNER]).get(path)
    assert page.status_code == 200 and str(invoice.number) in page.text
    assert Decimal(invoice.total) > 0


def test_the_security_alert_email_leads_to_the_alert_it_is_about(
    app: FastAPI, world: World, clock: FrozenClock, session_factory: sessionmaker[Session]
) -> None:
    """An alert about a person (in no organization) and one about an organization: each
    e-mail's link shows that alert, never an empty list."""
    owner = world.members[OrgRole.OWNER]
    with transaction(app.state.runtime.session_factory) as s:
        raise_security_alerts(s, clock, owner, world.org.id)
    with session_factory() as s:
        alerts = {a.id: a.summary for a in s.scalars(select(SecurityAlert))}
        mails = list(s.scalars(select(OutboundEmail).where(OutboundEmail.kind == "security-alert")))
    assert len(alerts) == 2 and len(mails) == 2
    browser = signed_in(app, owner)
    shown = set()
    for mail in mails:
        match = re.search(r"/portal/security/alerts/([0-9a-f]+)", mail.text)
        assert match is not None, mail.text
        page = browser.get(match.group(0))
        assert page.status_code == 200
        assert alerts[match.group(1)] in page.text
        assert "No security alerts" not in page.text
        shown.add(match.group(1))
    assert shown == set(alerts)
    # Somebody else cannot read the alert about the owner.
    stranger = signed_in(app, world.outsider)
    assert stranger.get(f"/portal/security/alerts/{next(iter(alerts))}").status_code == 404
