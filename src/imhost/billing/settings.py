"""The provider's billing settings, tax rates and gapless document numbers."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.billing import audit, repository
from imhost.billing.models import BillingProfile, TaxRate
from imhost.billing.parties import check_email, check_line, check_street, seller_snapshot
from imhost.billing.taxes import TaxDecision, decide_tax
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput, NotFound
from imhost.kit.money import to_decimal
from imhost.kit.vat import check_tax_id

DEFAULT_KEY = "default"


def get_profile(session: Session) -> BillingProfile:
    """The provider's billing profile, created with the defaults on first use."""
    profile = session.scalar(select(BillingProfile).where(BillingProfile.key == DEFAULT_KEY))
    if profile is None:
        profile = BillingProfile(key=DEFAULT_KEY)
        try:
            with session.begin_nested():
                session.add(profile)
        except IntegrityError:
            profile = session.scalars(
                select(BillingProfile).where(BillingProfile.key == DEFAULT_KEY)
            ).one()
    return profile


def read_profile(session: Session) -> BillingProfile:
    """The profile for reading: the stored one, or the defaults (not stored) if none yet."""
    profile = session.scalar(select(BillingProfile).where(BillingProfile.key == DEFAULT_KEY))
    if profile is not None:
        return profile
    defaults = BillingProfile(key=DEFAULT_KEY)
    for column in BillingProfile.__table__.columns:
        if getattr(defaults, column.key) is None and column.default is not None:
            arg = column.default.arg
            setattr(defaults, column.key, arg(None) if callable(arg) else arg)
    return defaults


def check_number_format(fmt: str) -> str:
    """A document number format may use ``{year}`` and ``{seq}`` (with a format spec)."""
    fields = set()
    try:
        for _, name, _spec, _conv in string.Formatter().parse(fmt):
            if name is not None:
                fields.add(name)
        sample = fmt.format(year=2026, seq=1)
    except (ValueError, IndexError, KeyError) as exc:
        raise InvalidInput(
            f"invalid number format {fmt!r}: {exc}", field="invoice_number_format"
        ) from None
    unknown = fields - {"year", "seq"}
    if unknown or "seq" not in fields:
        raise InvalidInput(
            "a number format uses {seq} (and optionally {year}) and nothing else, "
            "e.g. INV-{year}-{seq:06d}",
            field="invoice_number_format",
        )
    if not 1 <= len(sample) <= 40:
        raise InvalidInput("a number is 1 to 40 characters", field="invoice_number_format")
    return fmt


PROFILE_FIELDS = {
    "legal_name",
    "address",
    "postcode",
    "city",
    "home_country",
    "provider_tax_id",
    "registration_number",
    "contact_email",
    "prices_include_tax",
    "invoice_number_format",
    "credit_note_number_format",
    "payment_terms_days",
    "bank_details",
    "reminder_offsets",
    "late_fee_after_days",
    "late_fee_percent",
    "late_fee_minimum",
    "late_fee_flat",
    "suspend_after_days",
    "terminate_after_days",
}


def update_profile(
    session: Session, clock: Clock, *, actor: Actor | None = None, **changes: Any
) -> BillingProfile:
    unknown = set(changes) - PROFILE_FIELDS
    if unknown:
        raise InvalidInput(f"unknown billing settings: {', '.join(sorted(unknown))}")
    profile = get_profile(session)
    for name in ("invoice_number_format", "credit_note_number_format"):
        if name in changes:
            check_number_format(changes[name])
    _check_seller(profile, changes)
    if "payment_terms_days" in changes and not 0 <= int(changes["payment_terms_days"]) <= 365:
        raise InvalidInput("payment terms are 0 to 365 days", field="payment_terms_days")
    for name in ("late_fee_percent", "late_fee_minimum", "late_fee_flat"):
        value = changes.get(name)
        if value is not None:
            changes[name] = to_decimal(value)
            if changes[name] < 0:
                raise InvalidInput("a late fee is never negative", field=name)
    for key, value in changes.items():
        setattr(profile, key, value)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "settings_changed",
        organization_id=None,
        target_type="billing_settings",
        target_id=profile.key,
        changed=sorted(changes),
    )
    return profile


def _check_seller(profile: BillingProfile, changes: dict[str, Any]) -> None:
    """The seller's details as invoices print them: a legal name, at most three street
    lines, a VAT ID valid for the home country (``kit.vat``), a contact e-mail."""
    if "home_country" in changes:
        changes["home_country"] = check_country(changes["home_country"], "home_country")
    if "legal_name" in changes:
        name = check_line(str(changes["legal_name"] or ""), "legal_name", "legal name", 200)
        if not name:
            raise InvalidInput("Fill in the legal name.", field="legal_name")
        changes["legal_name"] = name
    if "address" in changes:
        changes["address"] = check_street(str(changes["address"] or ""), "address")
    for key, label, size in (("postcode", "postcode", 16), ("city", "city", 100)):
        if key in changes:
            changes[key] = check_line(str(changes[key] or ""), key, label, size)
    if "registration_number" in changes:
        number = check_line(
            str(changes["registration_number"] or ""),
            "registration_number",
            "registration number",
            100,
        )
        changes["registration_number"] = number or None
    if "contact_email" in changes:
        changes["contact_email"] = check_email(str(changes["contact_email"] or ""), "contact_email")
    if "provider_tax_id" in changes or "home_country" in changes:
        raw = changes.get("provider_tax_id", profile.provider_tax_id) or ""
        country = changes.get("home_country", profile.home_country)
        changes["provider_tax_id"] = check_tax_id(raw, country, field="provider_tax_id")


def check_country(country: str, field: str = "country") -> str:
    code = country.strip().upper()
    if len(code) != 2 or not code.isalpha() or not code.isascii():
        raise InvalidInput(f"{country!r} is not an ISO 3166 country code such as DE", field=field)
    return code


# --- tax rates --------------------------------------------------------------------------


def set_tax_rate(
    session: Session,
    clock: Clock,
    country: str,
    percent: Decimal | str,
    name: str = "VAT",
    *,
    actor: Actor | None = None,
) -> TaxRate:
    """Create or change the tax rate of a country."""
    code = check_country(country)
    value = to_decimal(percent)
    if not Decimal(0) <= value <= Decimal(100):
        raise InvalidInput("a tax rate is 0 to 100 %", field="percent")
    if not name.strip() or len(name) > 64:
        raise InvalidInput("a tax name is 1 to 64 characters, e.g. VAT", field="name")
    rate = session.scalar(select(TaxRate).where(TaxRate.country == code))
    if rate is None:
        rate = TaxRate(country=code, percent=value, name=name.strip(), created_at=clock.now())
        session.add(rate)
    else:
        rate.percent = value
        rate.name = name.strip()
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "tax_rate_set",
        organization_id=None,
        target_type="tax_rate",
        target_id=rate.country,
        percent=str(rate.percent),
        name=rate.name,
    )
    return rate


def delete_tax_rate(
    session: Session, clock: Clock, country: str, *, actor: Actor | None = None
) -> None:
    rate = session.scalar(select(TaxRate).where(TaxRate.country == check_country(country)))
    if rate is None:
        raise NotFound(f"no tax rate for {country}")
    session.delete(rate)
    session.flush()
    audit.record(
        session,
        clock,
        actor,
        "tax_rate_deleted",
        organization_id=None,
        target_type="tax_rate",
        target_id=rate.country,
    )


def list_tax_rates(session: Session) -> list[TaxRate]:
    return list(session.scalars(select(TaxRate).order_by(TaxRate.country)))


@dataclass(frozen=True)
class BillingTerms:
    """The provider's settings and tax rates as one immutable snapshot.

    A billing run takes one at its start and uses it for every invoice it makes, so a run
    applies one set of rates throughout, and does not read them again for each customer.
    """

    home_country: str
    prices_include_tax: bool
    invoice_number_format: str
    payment_terms_days: int
    rates: dict[str, tuple[Decimal, str]]
    # The seller as invoices keep it (billing.parties.seller_snapshot).
    seller: dict[str, Any] = field(default_factory=dict)

    def tax_for(self, country: str | None, tax_id: str | None) -> TaxDecision:
        return decide_tax(
            provider_country=self.home_country,
            customer_country=country,
            customer_tax_id=tax_id,
            rates=self.rates,
        )


def billing_terms(session: Session) -> BillingTerms:
    profile = read_profile(session)
    return BillingTerms(
        home_country=profile.home_country,
        prices_include_tax=profile.prices_include_tax,
        invoice_number_format=profile.invoice_number_format,
        payment_terms_days=profile.payment_terms_days,
        rates={r.country: (r.percent, r.name) for r in list_tax_rates(session)},
        seller=seller_snapshot(profile),
    )


def tax_for(session: Session, country: str | None, tax_id: str | None) -> TaxDecision:
    profile = read_profile(session)
    rates = {r.country: (r.percent, r.name) for r in list_tax_rates(session)}
    return decide_tax(
        provider_country=profile.home_country,
        customer_country=country,
        customer_tax_id=tax_id,
        rates=rates,
    )


# --- gapless numbers --------------------------------------------------------------------


@dataclass(frozen=True)
class AllocatedNumber:
    number: str
    year: int
    seq: int


def allocate_number(
    session: Session, scope: str, at: datetime, *, number_format: str | None = None
) -> AllocatedNumber:
    """Take the next number of ``scope`` for ``at``'s year, inside the caller's transaction.

    One ``UPDATE ... RETURNING`` increments the counter and locks it until the caller's
    transaction ends (its row on PostgreSQL; on SQLite the database's write lock, which
    serializes writers). The number is only used if that transaction commits, so numbers have
    no gaps: a rolled-back finalization (or savepoint) gives its number back.
    """
    if number_format is None:
        profile = get_profile(session)
        number_format = (
            profile.invoice_number_format
            if scope == "invoice"
            else profile.credit_note_number_format
        )
    year = at.year
    seq = repository.next_document_seq(session, scope, year)
    return AllocatedNumber(number=number_format.format(year=year, seq=seq), year=year, seq=seq)
