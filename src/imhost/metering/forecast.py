"""The forecast: the projected bill of a period from the usage so far (``FORECAST_METHOD``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy.orm import Session

from imhost.catalog.pricing import PriceSpec, RatedCharge, rate
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput
from imhost.kit.money import check_currency, round_minor
from imhost.metering import metrics as m
from imhost.metering.aggregate import (
    FUTURE_TOLERANCE,
    Request,
    aggregate,
    gb,
    normal,
    seconds,
)
from imhost.metering.aggregate import billable_quantities as aggregate_billable

ZERO = Decimal(0)

FORECAST_METHOD = (
    "Projection from usage so far: sums (messages, traffic_gb) are extrapolated linearly, "
    "usage to date divided by the elapsed fraction of the period; peak_connections is its "
    "highest value so far; monthly_active_users the distinct users so far; storage_gb the "
    "average so far with the current level held until the period's end. Each projected "
    "quantity is rated with the plan's prices; the base fee is added. Once the period is "
    "over, the quantities are the period's billable quantities."
)


@dataclass(frozen=True, slots=True)
class Projection:
    """Usage of ``[period_start, period_end)`` so far and projected to the period's end."""

    as_of: datetime
    elapsed_fraction: Decimal
    usage_to_date: dict[str, Decimal]
    projected: dict[str, Decimal]


@dataclass(frozen=True, slots=True)
class ForecastLine:
    metric: str
    usage_to_date: Decimal
    projected_quantity: Decimal
    charge: RatedCharge


@dataclass(frozen=True, slots=True)
class Forecast:
    organization_id: str
    period_start: datetime
    period_end: datetime
    as_of: datetime
    elapsed_fraction: Decimal
    usage_to_date: dict[str, Decimal]
    projected_quantities: dict[str, Decimal]
    lines: list[ForecastLine]
    base_fee: Decimal
    total: Decimal
    currency: str
    method: str


def project(
    session: Session,
    clock: Clock,
    organization_id: str,
    period_start: datetime,
    period_end: datetime,
) -> Projection:
    """The period's billable quantities so far and at its end if usage continues at the same
    pace (see ``FORECAST_METHOD``). A period that is over has its billable quantities, the
    ones billing rates."""
    if period_end <= period_start:
        raise InvalidInput("period_end must be after period_start", field="period_end")
    if clock.now() >= period_end:
        final = aggregate_billable(session, organization_id, period_start, period_end)
        return Projection(period_end, Decimal(1), final, dict(final))
    now = max(clock.now(), period_start)
    total_seconds = seconds(period_end - period_start)
    elapsed_seconds = seconds(now - period_start)
    fraction = elapsed_seconds / total_seconds
    request = Request(organization_id, period_start, min(now + FUTURE_TOLERANCE, period_end), now)
    to_date, gauge = aggregate(session, [request])[0]
    projected: dict[str, Decimal] = {}
    for code, metric in m.BILLABLE_METRICS.items():
        value = to_date[code]
        if metric.aggregation is m.Aggregation.SUM:
            projected[code] = normal(value / fraction) if fraction > 0 else value
        elif metric.aggregation is m.Aggregation.TIME_WEIGHTED_AVERAGE:
            remaining = total_seconds - elapsed_seconds
            projected[code] = normal(
                gb((gauge.gb_seconds + gauge.current_gb * remaining) / total_seconds)
            )
        else:
            projected[code] = value
    projected = {
        code: (
            v.quantize(Decimal("1"), rounding=ROUND_HALF_UP)
            if code not in m.FRACTIONAL_METRICS
            else normal(gb(v))
        )
        for code, v in projected.items()
    }
    return Projection(now, fraction, to_date, projected)


def forecast(
    session: Session,
    clock: Clock,
    organization_id: str,
    period_start: datetime,
    period_end: datetime,
    price_specs: Sequence[PriceSpec],
    base_fee: Decimal,
    currency: str,
) -> Forecast:
    """The period's base fee and projected usage rated with ``price_specs`` (no tax, no
    setup fee: billing's ``forecast_invoice`` forecasts the invoice itself)."""
    try:
        check_currency(currency)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None
    if period_end <= period_start:
        raise InvalidInput("period_end must be after period_start", field="period_end")
    for spec in price_specs:
        if spec.currency != currency:
            raise InvalidInput(
                f"the price of {spec.metric} is in {spec.currency}, not {currency}",
                field="currency",
            )
    projection = project(session, clock, organization_id, period_start, period_end)
    to_date, projected = projection.usage_to_date, projection.projected
    lines = [
        ForecastLine(
            metric=spec.metric,
            usage_to_date=to_date.get(spec.metric, ZERO),
            projected_quantity=projected.get(spec.metric, ZERO),
            charge=rate(spec, projected.get(spec.metric, ZERO)),
        )
        for spec in price_specs
    ]
    fee = round_minor(base_fee, currency)
    total = fee + sum((line.charge.amount for line in lines), ZERO)
    return Forecast(
        organization_id=organization_id,
        period_start=period_start,
        period_end=period_end,
        as_of=projection.as_of,
        elapsed_fraction=projection.elapsed_fraction,
        usage_to_date=to_date,
        projected_quantities=projected,
        lines=lines,
        base_fee=fee,
        total=total,
        currency=currency,
        method=FORECAST_METHOD,
    )
