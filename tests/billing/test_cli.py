"""``imhost billing run``: a progress bar, then a summary table."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from imhost.billing import service
from imhost.cli.billing import billing_run, parse_as_of
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.runtime import Runtime

from .factories import make_org, make_plan


def test_the_run_command_prints_what_it_invoiced(runtime: Runtime, clock: FrozenClock) -> None:
    clock.set(utc(2026, 11, 1, 8))
    with transaction(runtime.session_factory) as s:
        for i in range(3):
            org = make_org(s, clock, name=f"Customer {i}", country="US")
            service.start_subscription(s, clock, org.id, make_plan(s, clock).id)
    buffer = io.StringIO()
    summary = billing_run(runtime, clock.now(), Console(file=buffer, width=120))
    text = buffer.getvalue()
    assert summary.invoices == 3
    assert "invoices made" in text and "INV-2026-000001 .. INV-2026-000003" in text
    assert "147.00" in text  # 3 x 49.00 EUR


def test_as_of_takes_a_date_or_a_zoned_time_and_refuses_the_future() -> None:
    now = utc(2026, 12, 1, 12)
    assert parse_as_of("2026-12-01", now) == utc(2026, 12, 1)
    assert parse_as_of("2026-11-30T23:00:00+01:00", now) == utc(2026, 11, 30, 22)
    assert parse_as_of(None, now) == now
    with pytest.raises(ValueError, match="future"):
        parse_as_of("2026-12-02", now)
    with pytest.raises(ValueError, match="time zone"):
        parse_as_of("2026-11-30T10:00:00", now)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_as_of("yesterday", now)
