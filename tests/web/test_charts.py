"""The server-side SVG charts: round axis values written in full, never cut at the edge,
drawn for a phone's width and a desktop's."""

from __future__ import annotations

import re
from decimal import Decimal

from imhost.web.portal import charts

DAYS = [(f"11-{d:02}", Decimal(0)) for d in range(1, 31)]


def _svgs(markup: str) -> dict[str, str]:
    return {
        m.group(1): m.group(0) for m in re.finditer(r'<svg class="chart (\w+)".*?</svg>', markup)
    }


def test_axis_values_are_round_and_cover_the_peak() -> None:
    ticks = charts.nice_ticks(Decimal(2_013_300))
    assert ticks == [Decimal(v) for v in (0, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_500_000)]
    assert charts.nice_ticks(Decimal(7)) == [Decimal(v) for v in (0, 2, 4, 6, 8)]
    assert charts.nice_ticks(Decimal(0)) == [Decimal(0), Decimal(1)]


def test_large_numbers_are_written_in_full_inside_the_chart() -> None:
    points = list(DAYS)
    points[2] = ("11-03", Decimal(2_013_300))
    drawn = _svgs(str(charts.bars("Messages per day", points, unit="messages")))
    assert set(drawn) == {"wide", "narrow"}
    for svg in drawn.values():
        assert ">2,500,000</text>" in svg and ">1,000,000</text>" in svg
        assert ">3,300<" not in svg
        # Every right-aligned axis label fits between the left edge and its anchor.
        for x, text in re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="end">([^<]+)<', svg):
            assert float(x) - len(text) * charts.CHAR_W >= 0, text
        assert "11-03: 2,013,300 messages" in svg  # the text alternative
    # Two drawings, each with its own title and description ids.
    ids = re.findall(r'id="([^"]+)"', str(charts.bars("x", points)))
    assert len(ids) == len(set(ids)) == 4


def test_bars_are_scaled_to_the_top_of_the_axis() -> None:
    points = [("a", Decimal(50)), ("b", Decimal(100))]
    svg = _svgs(str(charts.bars("t", points)))["wide"]
    heights = [float(h) for h in re.findall(r'<rect class="bar" [^>]*height="([\d.]+)"', svg)]
    assert heights[1] == 2 * heights[0]  # 0..100 axis: 100 is the full height, 50 half
    assert ">100</text>" in svg


def test_counts_get_whole_steps() -> None:
    """Customers per month: 0, 1, 2, 3 on the axis, never 0.5 of a customer."""
    assert charts.nice_ticks(Decimal(3), whole=True) == [Decimal(n) for n in range(4)]
    assert charts.nice_ticks(Decimal(1), whole=True) == [Decimal(0), Decimal(1)]
    assert all(t == t.to_integral_value() for t in charts.nice_ticks(Decimal(7), whole=True))
    assert Decimal("0.2") in charts.nice_ticks(Decimal(1))  # amounts may step by fifths


def test_bar_labels_as_many_as_fit() -> None:
    """Seven months on a phone: more than one label, and none drawn over another."""
    points = [(f"Jun {2020 + i}", Decimal(i)) for i in range(7)]
    svg = str(charts.bars("t", points, whole=True))
    narrow = svg[svg.index('class="chart narrow"') :]
    shown = [label for label, _ in points if f">{label}<" in narrow]
    assert 2 <= len(shown) < 7
    wide = svg[: svg.index('class="chart narrow"')]
    assert all(f">{label}<" in wide for label, _ in points)
