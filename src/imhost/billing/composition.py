"""Compose an invoice from its charges: discount, carry-over, tax and totals. Pure.

Every line amount is rounded once to the currency's minor unit (``kit.money.round_minor``,
half up) when the line is made; the totals are exact sums of the rounded lines, so the total
always equals the sum of the lines that count (all but the informative tax line of
tax-inclusive prices).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from imhost.billing.periods import fmt
from imhost.billing.taxes import TaxDecision
from imhost.kit.money import round_minor


@dataclass(frozen=True)
class DraftLine:
    kind: str
    description: str
    amount: Decimal
    calculation: str = ""
    quantity: Decimal | None = None
    metric: str | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    taxable: bool = True
    discountable: bool = True
    counts_in_total: bool = True
    pending_charge_id: str | None = None


@dataclass(frozen=True)
class CouponTerms:
    code: str
    kind: str  # percent | amount
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None


@dataclass(frozen=True)
class ComposedInvoice:
    lines: list[DraftLine]
    subtotal: Decimal  # net of tax
    tax_total: Decimal
    total: Decimal
    carried_to_credit: Decimal
    tax_note: str | None = None
    notes: list[str] = field(default_factory=list)


def _pct(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text


def compose_invoice(
    currency: str,
    charges: list[DraftLine],
    *,
    coupon: CouponTerms | None,
    tax: TaxDecision,
    prices_include_tax: bool,
) -> ComposedInvoice:
    lines = [replace(c, amount=round_minor(c.amount, currency)) for c in charges]

    if coupon is not None:
        base = sum((c.amount for c in lines if c.discountable and c.amount > 0), Decimal(0))
        if base > 0:
            if coupon.kind == "percent":
                pct = coupon.percent_off or Decimal(0)
                off = round_minor(base * pct / 100, currency)
                calc = f"{_pct(pct)} % of {fmt(base, currency)} = {fmt(off, currency)}"
            else:
                wanted = coupon.amount_off or Decimal(0)
                off = min(round_minor(wanted, currency), base)
                calc = f"{fmt(wanted, currency)} off, at most the {fmt(base, currency)} charged"
                calc += f" = {fmt(off, currency)}"
            if off > 0:
                lines.append(
                    DraftLine(
                        kind="discount",
                        description=f"Coupon {coupon.code}",
                        amount=-off,
                        calculation=calc,
                    )
                )

    net = sum((c.amount for c in lines), Decimal(0))
    carried = Decimal(0)
    if net < 0:
        carried = -net
        lines.append(
            DraftLine(
                kind="carried_to_credit",
                description="Credit exceeding the charges, kept as account credit",
                amount=carried,
                calculation=f"{fmt(net, currency)} would be below zero; "
                f"{fmt(carried, currency)} goes to your account credit",
                taxable=False,
            )
        )
        net = Decimal(0)

    untaxed = sum((c.amount for c in lines if not c.taxable), Decimal(0))
    base = max(net - untaxed, Decimal(0))
    pct = tax.percent
    label = f"{_pct(pct)} % {tax.name}" + (f" ({tax.country})" if tax.country else "")
    if tax.reverse_charge:
        tax_amount = Decimal(0)
        calc = f"reverse charge: 0 % of {fmt(base, currency)} = {fmt(tax_amount, currency)}"
        counts = True
    elif prices_include_tax:
        tax_amount = round_minor(base * pct / (100 + pct), currency)
        calc = (
            f"included in the prices: {fmt(base, currency)} × {_pct(pct)} / "
            f"{_pct(100 + pct)} = {fmt(tax_amount, currency)}"
        )
        counts = False
    else:
        tax_amount = round_minor(base * pct / 100, currency)
        calc = f"{_pct(pct)} % of {fmt(base, currency)} = {fmt(tax_amount, currency)}"
        counts = True
    lines.append(
        DraftLine(
            kind="tax",
            description=label,
            amount=tax_amount,
            calculation=calc,
            counts_in_total=counts,
            taxable=False,
            discountable=False,
        )
    )
    total = sum((c.amount for c in lines if c.counts_in_total), Decimal(0))
    subtotal = total - tax_amount
    return ComposedInvoice(
        lines=lines,
        subtotal=subtotal,
        tax_total=tax_amount,
        total=total,
        carried_to_credit=carried,
        tax_note=tax.note,
    )
