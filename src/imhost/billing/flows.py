"""The billing run: invoice every subscription whose billing point has come.

Each (subscription, billing point) is invoiced in its own transaction: draft, finalize with
the next gapless number, move pending charges and coupons on, apply account credit, close
the metering period, advance the subscription, publish ``InvoiceEvent``. Either all of that
commits, or none of it.

The run is idempotent and resumable: it works from the subscriptions' ``next_billing_at``,
which only moves when its invoice commits, and invoices are unique per (subscription,
period start). Killed at any point and run again, it makes each invoice once. Work is taken
in a fixed order, billing point then subscription id (a heap, so a subscription owing
several periods takes its turn for each), so the numbers come out the same as in an
uninterrupted run.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imhost.billing.invoicing import FaultHook, RunCache, _no_fault, invoice_subscription
from imhost.billing.models import PendingCharge, Subscription
from imhost.billing.settings import billing_terms
from imhost.db.engine import transaction
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import DomainError

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, known total, message)


@dataclass
class RunFailure:
    subscription_id: str
    organization_id: str
    billing_point: datetime
    error: str


@dataclass
class RunSummary:
    as_of: datetime
    invoices: int = 0
    skipped: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)
    invoice_numbers: list[str] = field(default_factory=list)
    failures: list[RunFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def _due(session: Session, as_of: datetime) -> list[tuple[datetime, str, str]]:
    rows = session.execute(
        select(Subscription.next_billing_at, Subscription.id, Subscription.organization_id)
        .where(Subscription.next_billing_at.is_not(None), Subscription.next_billing_at <= as_of)
        .order_by(Subscription.next_billing_at, Subscription.id)
    ).all()
    return [(ensure_utc(at), sid, org) for at, sid, org in rows if at is not None]


def run_billing(
    session_factory: sessionmaker[Session],
    clock: Clock,
    as_of: datetime,
    *,
    progress: Progress | None = None,
    fault: FaultHook | None = None,
    max_invoices: int | None = None,
) -> RunSummary:
    """Invoice every subscription whose billing point is at or before ``as_of``.

    ``fault`` is a test hook called at named points of each invoice's transaction (raise
    from it to simulate a crash). A subscription that fails with an error is rolled back,
    reported in ``failures`` and the run goes on with the others.
    """
    as_of = ensure_utc(as_of)
    hook = fault or _no_fault
    started = time.monotonic()
    summary = RunSummary(as_of=as_of)
    with transaction(session_factory) as session:
        heap = _due(session, as_of)
        cache = RunCache(
            terms=billing_terms(session),
            orgs_with_charges=set(
                session.scalars(
                    select(PendingCharge.organization_id)
                    .where(PendingCharge.invoice_id.is_(None), PendingCharge.created_at <= as_of)
                    .distinct()
                )
            ),
        )
    heapq.heapify(heap)
    failed: set[str] = set()
    total_known = len(heap)
    while heap:
        if max_invoices is not None and summary.invoices >= max_invoices:
            break
        point, sub_id, org_id = heapq.heappop(heap)
        if sub_id in failed:
            continue
        try:
            with transaction(session_factory) as session:
                invoice = invoice_subscription(
                    session, clock, sub_id, fault=hook, cache=cache, expected_at=point
                )
                sub = session.get(Subscription, sub_id)
                next_at = sub.next_billing_at if sub is not None else None
                hook("before_commit")
                if invoice is not None:
                    number, total, currency = invoice.number, invoice.total, invoice.currency
        except (DomainError, IntegrityError) as exc:
            detail = exc.detail if isinstance(exc, DomainError) else "already invoiced elsewhere"
            if isinstance(exc, IntegrityError):
                summary.skipped += 1
                log.info("billing: %s at %s was invoiced by another run", sub_id, point)
            else:
                failed.add(sub_id)
                summary.failures.append(RunFailure(sub_id, org_id, point, detail))
                log.warning("billing: %s at %s failed: %s", sub_id, point, detail)
            continue
        if invoice is None and next_at is not None and ensure_utc(next_at) == point:
            # Not billed, yet still due at this point: an invoice for the period exists but the
            # subscription did not move on. Staff must look; the run reports it.
            failed.add(sub_id)
            detail = "an invoice for this period exists but the subscription was not advanced"
            summary.failures.append(RunFailure(sub_id, org_id, point, detail))
            continue
        if invoice is None:
            summary.skipped += 1
        else:
            summary.invoices += 1
            summary.invoice_numbers.append(number or "")
            summary.totals[currency] = summary.totals.get(currency, Decimal(0)) + total
        if next_at is not None:
            next_at = ensure_utc(next_at)
            if point < next_at <= as_of:
                heapq.heappush(heap, (next_at, sub_id, org_id))
                total_known += 1
        if progress is not None:
            progress(summary.invoices + summary.skipped + len(failed), total_known, sub_id)
    summary.seconds = time.monotonic() - started
    return summary
