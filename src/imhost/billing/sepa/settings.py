"""The provider as SEPA creditor: name, creditor identifier, account, pre-notification."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.billing import audit
from imhost.billing.sepa.identifiers import (
    normalize_bic,
    normalize_creditor_id,
    normalize_iban,
    sepa_text,
)
from imhost.billing.sepa.models import SepaSettings
from imhost.billing.settings import read_profile
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput

DEFAULT_KEY = "default"
DEFAULT_PRE_NOTIFICATION_DAYS = 14
MIN_PRE_NOTIFICATION_DAYS = 1  # shorter lead times than 14 days need the debtor's agreement
MAX_PRE_NOTIFICATION_DAYS = 60


@dataclass(frozen=True)
class Creditor:
    """The creditor as a mandate and a pain.008 file name it."""

    name: str
    creditor_id: str
    iban: str
    bic: str | None
    pre_notification_days: int

    @property
    def ready(self) -> bool:
        return bool(self.creditor_id and self.iban and self.name)


def _row(session: Session) -> SepaSettings | None:
    return session.scalar(select(SepaSettings).where(SepaSettings.key == DEFAULT_KEY))


def creditor(session: Session) -> Creditor:
    """The creditor settings; the name defaults to the billing profile's legal name."""
    row = _row(session)
    legal_name = sepa_text(read_profile(session).legal_name, 70)
    if row is None:
        return Creditor(legal_name, "", "", None, DEFAULT_PRE_NOTIFICATION_DAYS)
    return Creditor(
        name=row.creditor_name or legal_name,
        creditor_id=row.creditor_id,
        iban=row.creditor_iban,
        bic=row.creditor_bic,
        pre_notification_days=row.pre_notification_days,
    )


def ready_creditor(session: Session) -> Creditor:
    """The creditor, or a plain refusal when staff have not set up direct debit."""
    found = creditor(session)
    if not found.ready:
        raise Conflict(
            "Direct debit is not set up yet: the provider's creditor identifier and account "
            "are missing."
        )
    return found


def update_creditor(
    session: Session,
    clock: Clock,
    *,
    creditor_name: str,
    creditor_id: str,
    iban: str,
    bic: str = "",
    pre_notification_days: int = DEFAULT_PRE_NOTIFICATION_DAYS,
    actor: Actor | None = None,
) -> Creditor:
    name = sepa_text(creditor_name, 70)
    if not name:
        raise InvalidInput("Fill in the creditor name.", field="creditor_name")
    ci = normalize_creditor_id(creditor_id)
    account = normalize_iban(iban)
    swift = normalize_bic(bic)
    if not MIN_PRE_NOTIFICATION_DAYS <= pre_notification_days <= MAX_PRE_NOTIFICATION_DAYS:
        raise InvalidInput(
            f"The pre-notification lead time is {MIN_PRE_NOTIFICATION_DAYS} to "
            f"{MAX_PRE_NOTIFICATION_DAYS} days.",
            field="pre_notification_days",
        )
    row = _row(session)
    if row is None:
        row = SepaSettings(key=DEFAULT_KEY)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            row = session.scalars(select(SepaSettings).where(SepaSettings.key == DEFAULT_KEY)).one()
    row.creditor_name = name
    row.creditor_id = ci
    row.creditor_iban = account
    row.creditor_bic = swift
    row.pre_notification_days = pre_notification_days
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "sepa_settings_changed",
        organization_id=None,
        target_type="sepa_settings",
        target_id=DEFAULT_KEY,
        creditor_id=ci,
        pre_notification_days=pre_notification_days,
    )
    return creditor(session)
