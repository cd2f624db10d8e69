"""The portal home at a glance: what a member of an organization needs to see first.

Open and overdue invoices with their amounts and due dates, the balance and account credit,
the service's status (and why it is suspended), usage against the plan's limits, the next
invoice and its forecast, and what to do next. Each part is shown only to the roles that may
read its area (``accounts.permissions``): a technical member sees no money.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from imhost.accounts.models import OrgStatus
from imhost.accounts.permissions import Access, org_role_allows, staff_role_allows
from imhost.billing import service as billing
from imhost.billing.models import Invoice, InvoiceStatus
from imhost.billing.plans import load_plan_terms
from imhost.hosting import service as hosting
from imhost.metering.aggregate import usage_to_date
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal
from imhost.web.portal.hosting import Limit, limits_of

# Open invoices shown on the home page (the invoices page lists them all).
OPEN_INVOICES_SHOWN = 10
# A limit used at this percentage or more is worth a word in "what to do next".
NEAR_LIMIT_PERCENT = 90


def may_read(principal: Principal, area: str) -> bool:
    if principal.org_role is not None:
        return org_role_allows(principal.org_role, area, Access.READ)
    return staff_role_allows(principal.staff_role, area, Access.READ, on_org=True)


@dataclass(frozen=True)
class OpenInvoice:
    invoice: Invoice
    amount_due: Decimal
    overdue: bool
    days_overdue: int


@dataclass(frozen=True)
class ServiceAtGlance:
    domain: str
    status: str
    reason: str
    limits: list[Limit]

    @property
    def metered(self) -> list[Limit]:
        """The limits with a known use: each is a bar with its numbers."""
        return [x for x in self.limits if x.used is not None]


@dataclass(frozen=True)
class IncludedUsage:
    """A metric the plan includes a quantity of each period, and the use so far."""

    metric: str
    used: Decimal
    included: Decimal

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used / self.included)) if self.included else 0

    @property
    def used_shown(self) -> Decimal:
        """The use so far as people read it: whole, or to two decimals (1.27 GB)."""
        if self.used == self.used.to_integral_value():
            return self.used
        return self.used.quantize(Decimal("0.01"))


@dataclass(frozen=True)
class NextStep:
    """Something that needs the member's attention, with where to do it."""

    text: str
    href: str
    link: str
    urgent: bool = False


@dataclass
class AtGlance:
    money: bool
    invoices: list[OpenInvoice] = field(default_factory=list)
    balance: dict[str, Decimal] = field(default_factory=dict)
    credit: dict[str, Decimal] = field(default_factory=dict)
    services: list[ServiceAtGlance] = field(default_factory=list)
    included: list[IncludedUsage] = field(default_factory=list)
    steps: list[NextStep] = field(default_factory=list)

    @property
    def overdue(self) -> list[OpenInvoice]:
        return [i for i in self.invoices if i.overdue]


def open_invoices(db: Db, organization_id: str, now: datetime) -> list[OpenInvoice]:
    rows = billing.list_invoices(
        db, organization_id=organization_id, status=InvoiceStatus.OPEN.value, limit=200
    )
    out = []
    for inv in rows:
        due = inv.amount_due
        if due <= 0:
            continue
        overdue = inv.due_at is not None and inv.due_at < now
        days = (now - inv.due_at).days if overdue and inv.due_at is not None else 0
        out.append(OpenInvoice(inv, due, overdue, days))
    # Overdue first (the oldest first), then by due date.
    return sorted(out, key=lambda i: (not i.overdue, i.invoice.due_at or now))


def at_a_glance(
    db: Db, runtime: Runtime, principal: Principal, billing_summary: dict[str, Any] | None
) -> AtGlance:
    org = principal.org
    base = f"/portal/orgs/{org.slug}"
    now = runtime.clock.now()
    money = may_read(principal, "billing")
    glance = AtGlance(money=money)
    if money:
        invoices = open_invoices(db, org.id, now)
        glance.invoices = invoices[:OPEN_INVOICES_SHOWN]
        for item in invoices:
            cur = item.invoice.currency
            glance.balance[cur] = glance.balance.get(cur, Decimal(0)) + item.amount_due
        glance.credit = {c: a for c, a in billing.credit_balances(db, org.id).items() if a}
    if may_read(principal, "hosting"):
        for s in hosting.services_of(db, org.id):
            reason = s.status_reason or s.budget_block_reason or ""
            glance.services.append(
                ServiceAtGlance(s.domain, s.status, reason, limits_of(db, runtime, s))
            )
    if may_read(principal, "usage"):
        glance.included = included_usage(db, org.id, now)
    glance.steps = next_steps(principal, glance, billing_summary, base)
    return glance


def included_usage(db: Db, organization_id: str, now: datetime) -> list[IncludedUsage]:
    """The usage so far this period of each metric the plan includes a quantity of (traffic,
    messages, ... as the plan defines), against that quantity."""
    sub = billing.current_subscription(db, organization_id)
    if sub is None:
        return []
    specs = [
        spec
        for spec in load_plan_terms(db, sub.plan_version_id).specs
        if spec.included_quantity > 0
    ]
    if not specs:
        return []
    used = usage_to_date(db, organization_id, sub.current_period_start, now)
    return [
        IncludedUsage(spec.metric, used.get(spec.metric, Decimal(0)), spec.included_quantity)
        for spec in specs
    ]


def next_steps(
    principal: Principal, glance: AtGlance, summary: dict[str, Any] | None, base: str
) -> list[NextStep]:
    org = principal.org
    steps: list[NextStep] = []
    user = principal.user
    if org.status == OrgStatus.CLOSED.value:
        steps.append(
            NextStep(
                "This organization is closed. Its invoices stay available here.",
                f"{base}/billing/invoices" if glance.money else "/portal/orgs",
                "See the invoices" if glance.money else "Your organizations",
                urgent=True,
            )
        )
    for item in glance.overdue:
        inv = item.invoice
        days = item.days_overdue
        steps.append(
            NextStep(
                f"Invoice {inv.number} is overdue"
                + (f" by {days} day{'' if days == 1 else 's'}" if days else "")
                + ": pay it to keep the service running.",
                f"{base}/billing/invoices/{inv.id}",
                f"Pay invoice {inv.number}",
                urgent=True,
            )
        )
    closed = org.status == OrgStatus.CLOSED.value
    for s in [] if closed else glance.services:
        if s.status != "active":
            steps.append(
                NextStep(
                    f"The service {s.domain} is {s.status}"
                    + (f": {s.reason}" if s.reason else "."),
                    f"{base}/service",
                    "See the service",
                    urgent=True,
                )
            )
        for lim in s.limits:
            if lim.percent is not None and lim.percent >= NEAR_LIMIT_PERCENT:
                steps.append(
                    NextStep(
                        f"{lim.label} on {s.domain}: {lim.used} of {lim.limit} used.",
                        f"{base}/billing/plan" if glance.money else f"{base}/service",
                        "Choose a larger plan" if glance.money else "See the service",
                    )
                )
    if glance.money and summary is not None and not closed and summary.get("plan_name") is None:
        steps.append(NextStep("You have no plan yet.", f"{base}/billing/plan", "Choose a plan"))
    if user is not None and user.email_verified_at is None:
        steps.append(
            NextStep(
                f"Your e-mail address {user.email} is not confirmed yet.",
                "/portal/account",
                "Your account",
            )
        )
    return steps
