"""Scheduled jobs of billing: the billing run and dunning (the worker calls these)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from imhost.billing.dunning import dun_invoice, open_invoice_ids
from imhost.billing.flows import RunSummary, run_billing
from imhost.billing.repository import lock_invoice
from imhost.billing.settings import read_profile
from imhost.db.engine import transaction
from imhost.kit.clock import Clock

log = logging.getLogger(__name__)


def scheduled_billing_run(session_factory: sessionmaker[Session], clock: Clock) -> RunSummary:
    """Invoice everything due now (the worker runs this every few minutes)."""
    summary = run_billing(session_factory, clock, clock.now())
    if summary.invoices or summary.failures:
        log.info(
            "billing run: %d invoices, %d failures, %.1f s",
            summary.invoices,
            len(summary.failures),
            summary.seconds,
        )
    return summary


@dataclass
class DunningSummary:
    invoices_checked: int = 0
    actions: dict[str, int] = field(default_factory=dict)


def run_dunning(session_factory: sessionmaker[Session], clock: Clock) -> DunningSummary:
    """Apply the dunning policy to every open invoice, each in its own transaction."""
    summary = DunningSummary()
    with session_factory() as session:
        profile = read_profile(session)
        lead = max([0, *[-d for d in profile.reminder_offsets or []]])
        ids = open_invoice_ids(session, clock.now(), lead)
    for invoice_id in ids:
        with transaction(session_factory) as session:
            invoice = lock_invoice(session, invoice_id)
            if invoice is None:
                continue
            profile = read_profile(session)
            summary.invoices_checked += 1
            for step in dun_invoice(session, clock, profile, invoice):
                key = "reminder" if step.startswith("reminder:") else step
                summary.actions[key] = summary.actions.get(key, 0) + 1
    return summary
