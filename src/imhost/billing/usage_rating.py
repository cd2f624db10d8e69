"""Usage rated at the prices in force when it happened (docs/billing.md, "Prices in force").

A usage period in which the plan never changed is rated as a whole with its plan version, as
always. When the plan changed inside it (``PlanChange`` rows), the period is cut at each
change into parts, and each part's usage is rated with the prices of the version in force in
that part, for the part's share of the period (by the second, ``share = s / S``):

- a metric summed over time (messages, traffic) is rated as if the part's rate of use had
  lasted the whole period (``quantity / share``) and charged ``share`` of that: per unit it is
  exactly the part's quantity at the part's prices, and included quantities, tier bounds,
  caps and minimums count in proportion to the part;
- a level (peak connections, active users, average storage) is measured over the part alone,
  rated, and charged ``share`` of it.

A period of one part has ``share = 1``: the whole period at its prices, the rule that held
before plan changes were kept. Each line is rounded once and its calculation names the plan
version and the part of the period.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from imhost.billing.periods import duration_words, fmt, fmt_date, seconds_between
from imhost.billing.plans import PlanTerms
from imhost.catalog.pricing import rate, tidy
from imhost.kit.money import round_minor
from imhost.metering.metrics import BILLABLE_METRICS, Aggregation

Quantities = Mapping[str, Decimal]


@dataclass(frozen=True)
class PricePart:
    """A part ``[start, end)`` of a usage period and the plan version in force in it."""

    start: datetime
    end: datetime
    plan: PlanTerms


@dataclass(frozen=True)
class RatedUsage:
    metric: str
    amount: Decimal
    quantity: Decimal
    calculation: str
    start: datetime
    end: datetime


def _count(value: Decimal) -> str:
    """``15,000``, ``2.5``: a quantity with thousands separators, no padding zeros."""
    value = tidy(value)
    return f"{value:,f}" if value != value.to_integral_value() else f"{int(value):,}"


def price_parts(
    start: datetime,
    end: datetime,
    changes: Sequence[tuple[datetime, str, str]],
    current: PlanTerms,
    plan: Callable[[str], PlanTerms],
) -> list[PricePart]:
    """Cut ``[start, end)`` at the plan changes inside it (``(at, from, to)`` in time order);
    ``current`` is the version in force at ``end``."""
    inside = [c for c in sorted(changes, key=lambda c: c[0]) if start < c[0] < end]
    if not inside:
        return [PricePart(start, end, current)]
    parts: list[PricePart] = []
    at = start
    for changed_at, from_version, _to in inside:
        parts.append(PricePart(at, changed_at, plan(from_version)))
        at = changed_at
    parts.append(PricePart(at, end, plan(inside[-1][2])))
    return parts


def rate_usage(
    parts: Sequence[PricePart], quantities: Callable[[datetime, datetime], Quantities]
) -> list[RatedUsage]:
    """The usage lines of a period cut into ``parts`` (see the module docstring)."""
    if len(parts) == 1:
        part = parts[0]
        measured = quantities(part.start, part.end) if part.plan.specs else {}
        lines = []
        for spec in part.plan.specs:
            rated = rate(spec, measured.get(spec.metric, Decimal(0)))
            if rated.quantity == 0 and rated.amount == 0:
                continue
            lines.append(
                RatedUsage(
                    spec.metric,
                    rated.amount,
                    rated.quantity,
                    rated.explanation,
                    part.start,
                    part.end,
                )
            )
        return lines
    total = seconds_between(parts[0].start, parts[-1].end)
    lines = []
    for part in parts:
        if not part.plan.specs:
            continue
        measured = quantities(part.start, part.end)
        seconds = seconds_between(part.start, part.end)
        share = Decimal(seconds) / Decimal(total)
        where = (
            f"{part.plan.plan_name} version {part.plan.version} prices, in force "
            f"{fmt_date(part.start)} to {fmt_date(part.end)} ({duration_words(seconds)} of "
            f"{duration_words(total)})"
        )
        for spec in part.plan.specs:
            quantity = measured.get(spec.metric, Decimal(0))
            metric = BILLABLE_METRICS.get(spec.metric)
            summed = metric is not None and metric.aggregation == Aggregation.SUM
            basis = quantity / share if summed and quantity else quantity
            rated = rate(spec, basis)
            amount = round_minor(rated.exact_amount * share, spec.currency)
            if quantity == 0 and amount == 0:
                continue
            noun = metric.noun if metric is not None else spec.metric
            if summed:
                measure = (
                    f"{_count(quantity)} {noun} in this part, "
                    f"{_count(round(basis, 6))} at this pace over the whole period"
                )
            else:
                measure = f"{_count(quantity)} {noun} over this part"
            calculation = (
                f"{where}: {measure}; {rated.explanation}; "
                f"× {duration_words(seconds)} / {duration_words(total)} = "
                f"{fmt(amount, spec.currency)}"
            )
            lines.append(
                RatedUsage(spec.metric, amount, quantity, calculation, part.start, part.end)
            )
    return lines
