"""``imhost usage`` specifications, on the suite database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from imhost.cli import usage as cli
from imhost.kit.clock import FrozenClock, utc
from imhost.metering import aggregate
from imhost.runtime import Runtime
from tests.metering.factories import make_org

runner = CliRunner()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(utc(2026, 1, 20))


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> None:
    monkeypatch.setattr(cli, "runtime_or_exit", lambda *a, **k: runtime)
    monkeypatch.setattr(cli.console, "width", 250)  # no wrapping of wide tables


@pytest.fixture
def org_id(session_factory: sessionmaker[Session], clock: FrozenClock) -> str:
    with session_factory() as session:
        org = make_org(session, clock, "acme")
        session.commit()
        return org.id


def test_ingest_a_json_lines_file_then_show_usage_to_date(
    tmp_path: Path, org_id: str, session_factory: sessionmaker[Session]
) -> None:
    lines = [
        {
            "organization_id": org_id,
            "metric": "messages",
            "bucket_start": f"2026-01-1{i}T10:00:00Z",
            "quantity": 100,
            "idempotency_key": f"cli-{i}",
        }
        for i in range(3)
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    result = runner.invoke(cli.app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert "accepted 3" in result.output
    again = runner.invoke(cli.app, ["ingest", str(path)])
    assert "duplicates 3" in again.output
    shown = runner.invoke(cli.app, ["show", "acme"])
    assert shown.exit_code == 0, shown.output
    assert "300" in shown.output


def test_an_atomic_file_with_a_bad_record_writes_nothing(
    tmp_path: Path, org_id: str, session_factory: sessionmaker[Session]
) -> None:
    records = [
        {
            "organization_id": org_id,
            "metric": "messages",
            "bucket_start": "2026-01-10T00:00:00Z",
            "quantity": 1,
            "idempotency_key": "good",
        },
        {
            "organization_id": org_id,
            "metric": "pigeons",
            "bucket_start": "2026-01-10T00:00:00Z",
            "quantity": 1,
            "idempotency_key": "bad",
        },
    ]
    path = tmp_path / "usage.json"
    path.write_text(json.dumps({"records": records}))
    result = runner.invoke(cli.app, ["ingest", str(path)])
    assert result.exit_code == 1
    assert "pigeons" in result.output
    with session_factory() as session:
        totals = aggregate.billable_quantities(session, org_id, utc(2026, 1, 1), utc(2026, 2, 1))
        assert totals["messages"] == 0


def test_the_late_usage_policy_is_shown_and_set() -> None:
    assert "refuse" in runner.invoke(cli.app, ["late-policy"]).output
    assert "next_invoice" in runner.invoke(cli.app, ["late-policy", "next_invoice"]).output
    assert runner.invoke(cli.app, ["late-policy", "sometimes"]).exit_code == 1
