"""The billing run: invoice every subscription whose billing point has come.

Each (subscription, billing point) is invoiced as one unit: draft, finalize with the next
gapless number, move pending charges and coupons on, apply account credit, close the
metering period, advance the subscription, publish ``InvoiceEvent``. Either all of that
stays, or none of it: a subscription that fails is rolled back alone and reported.

Blocks. Invoices are committed a block at a time (``BLOCK_SIZE``, 100 by default), one
transaction per block. The block's transaction first locks its subscriptions
(``invoicing.prefetch_block``: ``SELECT ... FOR UPDATE`` in id order on PostgreSQL, the
database's write lock on SQLite) and then reads, in a few set-based queries, what its
invoices need: organizations, existing invoices at those billing points, add-ons, who has
account credit, closed metering periods, and the billable quantities of every usage period
billed (``metering.billable_quantities_many``). A kill loses at most the block in flight.
A block first runs without savepoints; if an invoice fails, the block is rolled back and
done again with a savepoint per invoice, so only the failing subscription is left out (and
reported) while the others commit. What every invoice of a block writes alike is written
once at its end (``invoicing.finish_block``): the subscriptions advanced (one executemany
UPDATE), the invoice counter (numbers are counted in the block from the first one taken,
which locks the counter; a rolled-back invoice gives its number back), the metering periods
closed, and, on the first try (no savepoints), the invoices and their lines (one executemany
INSERT each), after which their ``InvoiceEvent``s are published, in order, in the same
transaction (handlers find the rows). An invoice that consumes pending charges, a coupon or
account credit has its rows written at once, since those refer to them.

Idempotent and resumable: the run works from the subscriptions' ``next_billing_at``, which
only moves when its invoice commits, and invoices are unique per (subscription, period
start). Work is taken in a fixed order, billing point then subscription id (a heap, so a
subscription owing several periods takes its turn for each), one item at a time whatever
the block boundaries, so the numbers come out the same as in an uninterrupted run. A block
is the next ``BLOCK_SIZE`` items of the heap, plus later periods of its own subscriptions
pushed back as they are billed; so all it invoices was locked at its start. Two runs lock
their blocks' subscriptions in id order before anything else, so they wait for each other
rather than deadlock; the second finds the points moved and skips them.

Why the prefetched quantities are right. They are read inside the transaction that invoices
them and closes their periods (``usage_closed_periods`` rows, written at the end of the
block), after the subscriptions are locked and after ``metering.lock_for_closing`` has
locked the block's organizations. On SQLite the block holds the database's write lock from
its first statement, so no usage can be committed between the read and the commit. On
PostgreSQL ingestion share-locks the organizations before it reads their closed periods, so
it either committed before the block read the quantities (and is counted) or waits for the
block to commit and then finds the period closed (the record is refused or moved to the
next open period by the late-usage policy). Either way no record lands unbilled in a period
the block closed.
Account credit added by another transaction during a block is used by the next invoice.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.billing import audit
from imhost.billing.invoicing import (
    BlockPrefetch,
    FaultHook,
    RunCache,
    _no_fault,
    finish_block,
    invoice_subscription,
    prefetch_block,
)
from imhost.billing.models import PendingCharge, Subscription
from imhost.billing.settings import billing_terms
from imhost.db.engine import transaction
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import DomainError

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, known total, message)

BLOCK_SIZE = 100  # invoices committed together


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
    block_size: int = BLOCK_SIZE,
    actor: Actor | None = None,
) -> RunSummary:
    """Invoice every subscription whose billing point is at or before ``as_of``.

    ``fault`` is a test hook called at named points of each invoice (raise from it to
    simulate a crash; ``before_commit`` is called before each block commits). A subscription
    that fails with an error is rolled back alone (its savepoint), reported in ``failures``,
    and the run goes on with the others. ``block_size``: how many (subscription, billing
    point) items one transaction takes. ``actor``: who started the run (audited as
    ``billing.run``, as is any run that invoiced or failed something).
    """
    as_of = ensure_utc(as_of)
    hook = fault or _no_fault
    block_size = max(1, block_size)
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
        room = block_size
        if max_invoices is not None:
            room = min(room, max_invoices - summary.invoices)
        run = _Block(session_factory, clock, cache, hook, as_of, heap, failed, room)
        heap_before, failed_before = list(heap), set(failed)
        try:
            outcomes = run.invoice(savepoints=False)
        except _NeedsSavepoints as retry:
            # Something failed: the whole block was rolled back; do it again with a savepoint
            # per invoice, so that only the failing subscription is left out.
            log.info("billing: block redone with savepoints (%s)", retry)
            heap[:] = heap_before
            failed.clear()
            failed.update(failed_before)
            outcomes = run.invoice(savepoints=True)
        total_known += run.pushed
        # Committed: only now do the block's invoices count.
        for outcome in outcomes:
            if outcome.failure is not None:
                summary.failures.append(outcome.failure)
            elif outcome.number is None:
                summary.skipped += 1
            else:
                summary.invoices += 1
                summary.invoice_numbers.append(outcome.number)
                summary.totals[outcome.currency] = (
                    summary.totals.get(outcome.currency, Decimal(0)) + outcome.total
                )
            if progress is not None:
                done = summary.invoices + summary.skipped + len(summary.failures)
                progress(done, total_known, outcome.subscription_id)
    summary.seconds = time.monotonic() - started
    if actor is not None or summary.invoices or summary.failures:
        # Who ran it and what came of it (a scheduled run that found nothing is not recorded).
        with transaction(session_factory) as session:
            audit.record(
                session,
                clock,
                actor,
                "run",
                organization_id=None,
                target_type="billing_run",
                target_id=as_of.isoformat(),
                invoices=summary.invoices,
                failures=len(summary.failures),
            )
    return summary


@dataclass
class _Outcome:
    """One (subscription, billing point) of a block: invoiced, skipped or failed."""

    subscription_id: str
    number: str | None = None
    total: Decimal = Decimal(0)
    currency: str = ""
    next_at: datetime | None = None
    failure: RunFailure | None = None


class _NeedsSavepoints(Exception):
    """An invoice failed in a block run without savepoints: redo the block with them."""


@dataclass
class _Block:
    """One block of the run: up to ``room`` items from the heap, one transaction."""

    session_factory: sessionmaker[Session]
    clock: Clock
    cache: RunCache
    hook: FaultHook
    as_of: datetime
    heap: list[tuple[datetime, str, str]]
    failed: set[str]
    room: int
    pushed: int = 0

    def invoice(self, *, savepoints: bool) -> list[_Outcome]:
        """Invoice the block and commit it. Without ``savepoints`` (the common case, two
        statements fewer per invoice) any failure rolls the whole block back and raises
        :class:`_NeedsSavepoints`; with them, a failing subscription is rolled back alone."""
        heap, failed = self.heap, self.failed
        outcomes: list[_Outcome] = []
        self.pushed = 0
        with transaction(self.session_factory) as session:
            # The block is the next ``room`` items in heap order (plus the later periods of its
            # own subscriptions, pushed back as they are billed): all locked and read here.
            upcoming = [
                sub_id
                for _, sub_id, _ in heapq.nsmallest(self.room + len(failed), heap)
                if sub_id not in failed
            ][: self.room]
            block = prefetch_block(session, upcoming, self.cache)
            block.defer_writes = not savepoints
            taken = 0
            while heap and taken < self.room:
                point, sub_id, org_id = heapq.heappop(heap)
                if sub_id in failed:
                    continue
                taken += 1
                outcome = _invoice_one(
                    session, self, block, point, sub_id, org_id, savepoint=savepoints
                )
                outcomes.append(outcome)
                if outcome.failure is not None:
                    failed.add(sub_id)
                    continue
                next_at = outcome.next_at
                if next_at is not None and point < next_at <= self.as_of:
                    heapq.heappush(heap, (next_at, sub_id, org_id))
                    self.pushed += 1
            try:
                finish_block(session, block, self.clock)
            except (DomainError, IntegrityError) as exc:
                if savepoints:
                    raise
                # A deferred row or an event handler refused: find which, one savepoint each.
                raise _NeedsSavepoints(f"end of block: {exc}") from exc
            self.hook("before_commit")
        return outcomes


def _invoice_one(
    session: Session,
    run: _Block,
    block: BlockPrefetch,
    point: datetime,
    sub_id: str,
    org_id: str,
    *,
    savepoint: bool,
) -> _Outcome:
    """Invoice one (subscription, point) in the block's transaction: in its own savepoint
    when ``savepoint``, else a failure raises :class:`_NeedsSavepoints`."""
    outcome = _Outcome(sub_id)
    mark = block.mark()
    try:
        with session.begin_nested() if savepoint else nullcontext():
            invoice = invoice_subscription(
                session,
                run.clock,
                sub_id,
                fault=run.hook,
                cache=run.cache,
                expected_at=point,
                block=block,
            )
            sub = block.subscriptions.get(sub_id) or session.get(Subscription, sub_id)
            next_at = sub.next_billing_at if sub is not None else None
    except DomainError as exc:
        if not savepoint:
            raise _NeedsSavepoints(f"{sub_id} at {point.isoformat()}: {exc.detail}") from exc
        block.undo(mark)
        log.warning("billing: %s at %s failed: %s", sub_id, point, exc.detail)
        outcome.failure = RunFailure(sub_id, org_id, point, exc.detail)
        return outcome
    except IntegrityError as exc:
        if not savepoint:
            raise _NeedsSavepoints(f"{sub_id} at {point.isoformat()}: conflict") from exc
        block.undo(mark)
        # Unique (subscription, period start): another run made this invoice in between.
        log.info("billing: %s at %s was invoiced by another run", sub_id, point)
        return outcome
    if invoice is None and next_at is not None and ensure_utc(next_at) == point:
        # Not billed, yet still due at this point: an invoice for the period exists but the
        # subscription did not move on. Staff must look; the run reports it.
        detail = "an invoice for this period exists but the subscription was not advanced"
        outcome.failure = RunFailure(sub_id, org_id, point, detail)
        return outcome
    if invoice is not None:
        outcome.number = invoice.number or ""
        outcome.total = invoice.total
        outcome.currency = invoice.currency
    outcome.next_at = ensure_utc(next_at) if next_at is not None else None
    return outcome
