"""Small SVG charts rendered on the server (no scripts, no CDN): bars over time, and a
forecast against a budget. Colours come from classes in site.css; every chart has a title
and a text description for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal
from html import escape

from markupsafe import Markup

from imhost.catalog.intervals import interval_words
from imhost.kit.money import format_money

BUDGET_WIDTH = 360
CHAR_W = 7.6  # the width of a digit of the charts' 13px text, in viewBox units

# The usage chart is drawn twice, for a phone's width and for a desktop's; site.css shows one.
LAYOUTS = (("wide", 680, 240), ("narrow", 310, 220))


def _fmt(value: Decimal) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value.normalize():,f}"


SVG_NS = "http://www.w3.org/2000/svg"


def _point(label: str, value: Decimal, unit: str) -> str:
    return f"{label}: {_fmt(value)} {unit}".strip()


def nice_ticks(peak: Decimal, count: int = 5, *, whole: bool = False) -> list[Decimal]:
    """Round axis values from 0 to at least ``peak``: steps of 1, 2, 2.5 or 5 times a power
    of ten (0, 500,000, 1,000,000, ... for a peak of 2,013,300). ``whole``: the values are
    counts (customers, accounts), so every step is a whole number (0, 1, 2, 3 for a peak of
    3, never 0.5)."""
    if peak <= 0:
        return [Decimal(0), Decimal(1)]
    raw = peak / count
    power = Decimal(10) ** (raw.adjusted())
    step = next(
        m * power
        for m in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))
        if m * power >= raw and (not whole or m * power == (m * power).to_integral_value())
    )
    if whole:
        step = max(step, Decimal(1))
    top = (peak / step).to_integral_value(rounding=ROUND_CEILING) * step
    ticks, value = [], Decimal(0)
    while value <= top:
        ticks.append(value)
        value += step
    return ticks


def _tick_label(value: Decimal) -> str:
    """A full axis number with thousands separators (``2,000,000``), never shortened."""
    value = value.normalize()
    return f"{int(value):,}" if value == value.to_integral_value() else f"{value:,f}"


def bars(
    title: str,
    points: Sequence[tuple[str, Decimal]],
    *,
    unit: str = "",
    forecast_from: int | None = None,
    chart_id: str = "c",
    whole: bool = False,
) -> Markup:
    """One bar per point (label, value) over a value axis of round numbers, each written in
    full; bars from ``forecast_from`` on are drawn lighter (days still to come). Drawn for a
    desktop's width and for a phone's (``site.css`` shows the one that fits). ``whole``: the
    values are counts, the axis steps whole numbers."""
    drawn = "".join(
        _bars(title, points, unit, forecast_from, f"{chart_id}-{name}", name, width, height, whole)
        for name, width, height in LAYOUTS
    )
    return Markup(drawn)  # noqa: S704 - every input is escaped in _bars


def _bars(
    title: str,
    points: Sequence[tuple[str, Decimal]],
    unit: str,
    forecast_from: int | None,
    ident: str,
    layout: str,
    width: int,
    height: int,
    whole: bool,
) -> str:
    peak = max((v for _, v in points), default=Decimal(0))
    ticks = nice_ticks(peak, whole=whole)
    top = ticks[-1]
    labels = [_tick_label(t) for t in ticks]
    left = int(max(len(t) for t in labels) * CHAR_W) + 12
    right, top_pad, bottom = 10, 12, 28
    plot_w = width - left - right
    plot_h = height - bottom - top_pad
    n = max(len(points), 1)
    step = plot_w / n
    # As many bar labels as fit side by side (with a gap), evenly spread: every bar's on a
    # wide chart of a few bars, every third or seventh on a phone.
    label_w = max((len(label) for label, _ in points), default=1) * CHAR_W + 8
    label_every = max(1, -(-n // max(1, int(plot_w // label_w))))
    base_y = top_pad + plot_h
    parts = [
        f'<svg class="chart {layout}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" xmlns="{SVG_NS}">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<desc id="{ident}-d">'
        f"{escape(', '.join(_point(label, v, unit) for label, v in points))}</desc>",
    ]
    for tick, text in zip(ticks, labels, strict=True):
        y = base_y - float(tick / top) * plot_h
        cls = "axis" if tick == 0 else "grid"
        parts.append(
            f'<line class="{cls}" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        )
    for i, (label, value) in enumerate(points):
        h = float(value / top) * plot_h if top else 0.0
        x = left + i * step + step * 0.15
        cls = "bar forecast" if forecast_from is not None and i >= forecast_from else "bar"
        parts.append(
            f'<rect class="{cls}" x="{x:.1f}" y="{base_y - h:.1f}" '
            f'width="{step * 0.7:.1f}" height="{h:.1f}"/>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{height - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def against_budget(
    title: str, items: Sequence[tuple[str, Decimal]], budget: Decimal | None, currency: str
) -> Markup:
    """Horizontal bars (e.g. billed so far, forecast) with the budget as a dashed line."""
    peak = max([v for _, v in items] + [budget or Decimal(0), Decimal(1)])
    height = 40 + 44 * len(items)
    plot_w = BUDGET_WIDTH - 170
    parts = [
        f'<svg class="chart compact" viewBox="0 0 {BUDGET_WIDTH} {height}" role="img" '
        f'aria-labelledby="b-t b-d" xmlns="{SVG_NS}">',
        f'<title id="b-t">{escape(title)}</title>',
        '<desc id="b-d">'
        + escape(
            "; ".join(f"{label}: {format_money(v, currency)}" for label, v in items)
            + (f"; budget {format_money(budget, currency)}" if budget else "; no budget set")
        )
        + "</desc>",
    ]
    for i, (label, value) in enumerate(items):
        y = 12 + i * 44
        w = float(value / peak) * plot_w
        cls = "bar forecast" if i else "bar"
        parts.append(f'<text x="0" y="{y + 18}">{escape(label)}</text>')
        parts.append(f'<rect class="{cls}" x="80" y="{y}" width="{w:.1f}" height="26"/>')
        parts.append(
            f'<text x="{84 + w:.1f}" y="{y + 18}">{escape(format_money(value, currency))}</text>'
        )
    if budget:
        x = 80 + float(budget / peak) * plot_w
        parts.append(f'<line class="budget" x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 14}"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{height - 2}" '
            f'text-anchor="middle">budget {escape(format_money(budget, currency))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every input is escaped above


COMPARE_WIDTH = 330

# What a buyer compares first: (label, how to read it from a plan version out).
COMPARED = (
    ("Price per period", "base_fee"),
    ("XMPP accounts", "max_xmpp_accounts"),
    ("Connections at once", "max_connections"),
    ("Storage (MB)", "storage_mb"),
)


def plan_comparison(plans: Sequence[object]) -> Markup:
    """Plans side by side: one group of horizontal bars per dimension, each group scaled to
    its own largest value, so price and allowances can be compared at a glance."""
    rows: list[tuple[str, list[tuple[str, Decimal | None]]]] = []
    first = plans[0].versions[0] if plans else None  # type: ignore[attr-defined]
    for label, key in COMPARED:
        if key == "base_fee" and first is not None:
            label = f"Price ({first.currency}, {interval_words(first.billing_interval)})"
        values: list[tuple[str, Decimal | None]] = []
        for plan in plans:
            version = plan.versions[0]  # type: ignore[attr-defined]
            raw = getattr(version, key) if key == "base_fee" else version.limits.get(key)
            values.append((str(plan.name), None if raw is None else Decimal(raw)))  # type: ignore[attr-defined]
        rows.append((label, values))
    n = max(len(plans), 1)
    group_h = 22 + 20 * n
    height = group_h * len(rows) + 6
    plot_w = COMPARE_WIDTH - 165
    parts = [
        f'<svg class="chart" viewBox="0 0 {COMPARE_WIDTH} {height}" role="img" '
        f'aria-labelledby="p-t p-d" xmlns="{SVG_NS}">',
        '<title id="p-t">Plans compared</title>',
        '<desc id="p-d">'
        + escape(
            "; ".join(
                f"{label}: "
                + ", ".join(f"{name} {'unlimited' if v is None else _fmt(v)}" for name, v in vals)
                for label, vals in rows
            )
        )
        + "</desc>",
    ]
    for g, (label, vals) in enumerate(rows):
        y0 = g * group_h
        finite = [v for _, v in vals if v is not None]
        peak = max(finite, default=Decimal(1)) or Decimal(1)
        parts.append(f'<text class="group" x="0" y="{y0 + 14}">{escape(label)}</text>')
        for i, (name, value) in enumerate(vals):
            y = y0 + 20 + i * 20
            w = plot_w if value is None else float(value / peak) * plot_w
            shown = "unlimited" if value is None else _fmt(value)
            parts.append(f'<text x="4" y="{y + 12}">{escape(name)}</text>')
            parts.append(
                f'<rect class="bar{" forecast" if value is None else ""}" x="92" y="{y}" '
                f'width="{max(w, 1.0):.1f}" height="14"/>'
            )
            parts.append(f'<text x="{96 + w:.1f}" y="{y + 12}">{escape(shown)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every input is escaped above
