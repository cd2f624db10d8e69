"""Billing's queries that are more than a lookup: the plan changes behind prices in force,
and the database-specific ways the billing run locks and writes its blocks (SQLite has no
row locks, PostgreSQL plans cached statements badly for it), kept here so that the rules in
``invoicing``, ``subscriptions`` and ``credits`` read without them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, inspect, select, text, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from imhost.billing.models import (
    CreditLedgerEntry,
    DocumentCounter,
    Invoice,
    InvoiceLine,
    PlanChange,
    Subscription,
)
from imhost.db.engine import insert_if_absent

ChangeRow = tuple[datetime, str, str]  # (changed at, from version, to version)


def record_plan_change(
    session: Session, subscription_id: str, at: datetime, from_version: str, to_version: str
) -> None:
    session.add(
        PlanChange(
            subscription_id=subscription_id,
            changed_at=at,
            from_plan_version_id=from_version,
            to_plan_version_id=to_version,
            created_at=at,
        )
    )


def plan_changes(
    session: Session, periods: Iterable[tuple[str, datetime, datetime]]
) -> dict[str, list[ChangeRow]]:
    """The plan changes strictly inside each subscription's ``(id, start, end)`` period, in
    time order, read in one query."""
    wanted = {sid: (start, end) for sid, start, end in periods}
    if not wanted:
        return {}
    found: dict[str, list[ChangeRow]] = {}
    rows = session.execute(
        select(
            PlanChange.subscription_id,
            PlanChange.changed_at,
            PlanChange.from_plan_version_id,
            PlanChange.to_plan_version_id,
        )
        .where(PlanChange.subscription_id.in_(sorted(wanted)))
        .order_by(PlanChange.subscription_id, PlanChange.changed_at, PlanChange.id)
    )
    for sid, at, from_version, to_version in rows:
        start, end = wanted[sid]
        if start < at < end:
            found.setdefault(sid, []).append((at, from_version, to_version))
    return found


# --- locks --------------------------------------------------------------------------------


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _take_sqlite_write_lock(
    session: Session, model: type[Subscription] | type[Invoice], ids: list[str]
) -> None:
    """SQLite has no row locks: a no-op UPDATE takes the database's write lock first (waiting
    for another writer rather than failing later when the transaction would upgrade a read)."""
    if _sqlite(session):
        session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values(id=model.id)
            .execution_options(synchronize_session=False)
        )


def lock_subscription(session: Session, subscription_id: str) -> Subscription | None:
    """Read the subscription locked for this transaction (``FOR UPDATE`` on PostgreSQL, the
    write lock on SQLite), fresh from the database."""
    _take_sqlite_write_lock(session, Subscription, [subscription_id])
    return session.scalar(
        select(Subscription)
        .where(Subscription.id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def lock_subscriptions(session: Session, ids: list[str]) -> list[Subscription]:
    """Read and lock a block of subscriptions, in id order (two runs never deadlock)."""
    _take_sqlite_write_lock(session, Subscription, ids)
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.id.in_(ids))
            .order_by(Subscription.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def lock_invoice(session: Session, invoice_id: str) -> Invoice | None:
    """Read the invoice locked for this transaction (see :func:`lock_subscription`)."""
    _take_sqlite_write_lock(session, Invoice, [invoice_id])
    return session.scalar(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def plan_each_statement(session: Session) -> None:
    """PostgreSQL: plan this transaction's statements with their values.

    The billing run's block statements have the same text every time (psycopg prepares them
    after a few runs), and a generic plan made while ``invoices`` was small scans it whole
    for ever after (30 ms a block at 10,000 invoices)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


# --- account credit ----------------------------------------------------------------------


def credit_sum(session: Session, organization_id: str, currency: str) -> Decimal:
    """The sum of an organization's credit ledger in ``currency``, exactly: in the database
    on PostgreSQL; in Python on SQLite, which stores exact decimals as text."""
    where = (
        CreditLedgerEntry.organization_id == organization_id,
        CreditLedgerEntry.currency == currency,
    )
    if session.get_bind().dialect.name == "postgresql":
        total = session.scalar(
            select(func.coalesce(func.sum(CreditLedgerEntry.amount), 0)).where(*where)
        )
        return Decimal(total or 0)
    return sum(session.scalars(select(CreditLedgerEntry.amount).where(*where)).all(), Decimal(0))


# --- the billing run's bulk writes ---------------------------------------------------------
# Writing invoices and their lines through the ORM's unit of work cost more than the
# statements themselves: the run writes rows with Core statements (one executemany per block
# where it can) and attaches the objects it keeps as if they had been loaded.

_INVOICES = cast(Table, Invoice.__table__)
_LINES = cast(Table, InvoiceLine.__table__)
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)
ADVANCED_COLUMNS = (
    "status",
    "current_period_start",
    "current_period_end",
    "next_billing_at",
    "setup_fee_billed",
    "period_base_billed",
)
_ADVANCE = (
    update(_SUBSCRIPTIONS)
    .where(_SUBSCRIPTIONS.c.id == bindparam("b_id"))
    .values({k: bindparam(f"b_{k}", type_=_SUBSCRIPTIONS.c[k].type) for k in ADVANCED_COLUMNS})
)
_COUNTERS = cast(Table, DocumentCounter.__table__)
_SET_COUNTER = (
    update(_COUNTERS)
    .where(_COUNTERS.c.scope == "invoice", _COUNTERS.c.year == bindparam("b_year"))
    .values(last_seq=bindparam("b_seq"))
)


def insert_invoice_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(insert(_INVOICES), rows)


def insert_line_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(insert(_LINES), rows)


def invoice_row(invoice: Invoice) -> dict[str, Any]:
    """Every column of a new invoice, its defaults applied to the object too (so that
    nothing is read back later)."""
    row = {c.key: getattr(invoice, c.key) for c in _INVOICES.columns}
    for key, value in row.items():
        if key not in invoice.__dict__:
            setattr(invoice, key, value)
    return row


def is_new(obj: object) -> bool:
    """Whether ``obj`` was never added to a session."""
    return bool(inspect(obj).transient)


def attach_as_loaded(session: Session, obj: object) -> None:
    """Attach an object whose row was written by a Core statement, as if it had been loaded
    (no flush will insert it again)."""
    make_transient_to_detached(obj)
    session.add(obj)


def set_loaded(obj: object, values: dict[str, Any]) -> None:
    """Set attributes as if loaded from the database: no UPDATE is flushed for them (the
    caller writes them itself, :func:`advance_subscriptions`)."""
    for key, value in values.items():
        set_committed_value(obj, key, value)


def advance_subscriptions(session: Session, subscriptions: Iterable[Subscription]) -> None:
    """Write the advanced columns of these subscriptions, one executemany."""
    rows = [
        {"b_id": sub.id, **{f"b_{k}": getattr(sub, k) for k in ADVANCED_COLUMNS}}
        for sub in subscriptions
    ]
    if rows:
        session.connection().execute(_ADVANCE, rows)


def set_invoice_counter(session: Session, year: int, seq: int) -> None:
    session.connection().execute(_SET_COUNTER, {"b_year": year, "b_seq": seq})


# Built once, a Core statement: the billing run takes one number per invoice, and building
# the statement (or going through the ORM's bulk UPDATE) cost more than running it.
_NEXT_SEQ = (
    update(_COUNTERS)
    .where(
        _COUNTERS.c.scope == bindparam("counter_scope"),
        _COUNTERS.c.year == bindparam("counter_year"),
    )
    .values(last_seq=_COUNTERS.c.last_seq + 1)
    .returning(_COUNTERS.c.last_seq)
)


def next_document_seq(session: Session, scope: str, year: int) -> int:
    """Increment the ``(scope, year)`` counter and return its new value; the row is locked
    until the caller's transaction ends (created first if missing, racing safely)."""
    for _attempt in range(2):
        seq = session.connection().scalar(_NEXT_SEQ, {"counter_scope": scope, "counter_year": year})
        if seq is not None:
            return int(seq)
        # made here or by another transaction meanwhile: either way, lock it next
        insert_if_absent(session, DocumentCounter(scope=scope, year=year, last_seq=0))
    raise RuntimeError(f"no document counter for {scope} {year}")  # pragma: no cover
