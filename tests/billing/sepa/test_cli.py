"""``imhost billing sepa export`` / ``import``: the file written, the statement's result."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from imhost.billing.sepa.collections import queue_collection
from imhost.cli.sepa import export_file, import_file, parse_until
from imhost.db.engine import transaction
from imhost.kit.clock import FrozenClock, utc
from imhost.runtime import Runtime

from .helpers import (
    Tx,
    assert_schema_valid,
    camt053,
    customer_with_mandate,
    open_invoice,
    set_up_creditor,
)


def test_export_writes_the_file_and_import_reports_the_result(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    clock.set(utc(2026, 2, 2, 9))
    with transaction(runtime.session_factory) as s:
        set_up_creditor(s, clock)
        customer = customer_with_mandate(s, clock)
        invoice = open_invoice(s, clock, customer.org_id, "49.00")
        e2e = queue_collection(
            s, clock, invoice, customer.mandate, idempotency_key="x"
        ).end_to_end_id
    buffer = io.StringIO()
    out = Console(file=buffer, width=120)
    path = export_file(runtime, date(2026, 3, 1), tmp_path, out)
    assert path is not None and path.exists()
    assert_schema_valid("pain.008.001.02", path.read_bytes())
    assert "1 debit" in buffer.getvalue() and "49.00" in buffer.getvalue()
    assert export_file(runtime, date(2026, 3, 1), tmp_path, out) is None
    assert "No debit is waiting" in buffer.getvalue()
    statement = tmp_path / "camt.xml"
    statement.write_bytes(
        camt053([Tx("49.00", end_to_end_id=e2e, reference="B"), Tx("3.00", reference="U")])
    )
    result = import_file(runtime, statement, out)
    assert [e.outcome for e in result.entries] == ["collected", "unmatched"]
    text = buffer.getvalue()
    assert "collected" in text and "unmatched" in text and "to assign: " in text
    import_file(runtime, statement, out)
    assert "imported before; nothing changed" in buffer.getvalue()


def test_until_defaults_to_the_lead_time() -> None:
    assert parse_until(None, date(2026, 2, 2), 14) == date(2026, 2, 16)
    assert parse_until("2026-03-01", date(2026, 2, 2), 14) == date(2026, 3, 1)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_until("March", date(2026, 2, 2), 14)
