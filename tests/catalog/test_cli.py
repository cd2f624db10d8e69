"""``imhost plans`` specifications, on the suite database."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from imhost.catalog import service
from imhost.cli import catalog as cli
from imhost.runtime import Runtime

runner = CliRunner()


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> None:
    monkeypatch.setattr(cli, "runtime_or_exit", lambda *a, **k: runtime)
    monkeypatch.setattr(cli.console, "width", 250)  # no wrapping of wide tables


def test_seed_then_list_shows_the_default_plans_with_their_prices() -> None:
    assert runner.invoke(cli.app, ["seed"]).exit_code == 0
    result = runner.invoke(cli.app, ["list"])
    assert result.exit_code == 0, result.output
    for name in ("starter", "business", "enterprise", "49.00"):
        assert name in result.output


def test_create_from_options_and_show(session_factory: sessionmaker[Session]) -> None:
    result = runner.invoke(
        cli.app, ["create", "--code", "mini", "--name", "Mini", "--base-fee", "3.50"]
    )
    assert result.exit_code == 0, result.output
    with session_factory() as session:
        assert service.current_plan_version(session, "mini").base_fee == Decimal("3.50")
    shown = runner.invoke(cli.app, ["show", "mini"])
    assert "version 1" in shown.output and "unlimited" in shown.output
    assert "base fee €3.50," in shown.output


def test_create_from_json_refuses_an_unknown_metric(tmp_path: Path) -> None:
    plan = {
        "code": "odd",
        "name": "Odd",
        "version": {
            "base_fee": "1",
            "components": [{"metric": "pigeons", "pricing_model": "per_unit", "unit_price": "1"}],
        },
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    result = runner.invoke(cli.app, ["create", "--from-json", str(path)])
    assert result.exit_code == 1
    assert "pigeons" in result.output


def test_a_new_version_and_rating_a_quantity_explains_the_price() -> None:
    runner.invoke(cli.app, ["seed"])
    assert runner.invoke(cli.app, ["version", "starter", "--base-fee", "10"]).exit_code == 0
    result = runner.invoke(cli.app, ["rate", "starter", "messages", "200000"])
    assert result.exit_code == 0, result.output
    # 100,000 free, then 100,000 at 0.0002.
    assert "€20.00" in result.output
    assert "the first 100,000 free; 100,001 to 200,000 at 0.0002 each" in result.output
    missing = runner.invoke(cli.app, ["rate", "starter", "peak_connections", "5"])
    assert missing.exit_code == 1


def test_a_plan_billed_quarterly_is_listed_and_shown_in_plain_words() -> None:
    created = runner.invoke(
        cli.app,
        ["create", "--code", "q", "--name", "Q", "--base-fee", "27", "--interval", "3 months"],
    )
    assert created.exit_code == 0, created.output
    weekly = runner.invoke(
        cli.app, ["version", "q", "--interval", "calendar-weekly", "--base-fee", "2"]
    )
    assert weekly.exit_code == 0, weekly.output
    listed = runner.invoke(cli.app, ["list"])
    assert "EUR every 3 months" in listed.output
    assert "EUR every week, from Mondays" in listed.output
    shown = runner.invoke(cli.app, ["show", "q"])
    assert "EUR, billed every 3 months" in shown.output
    refused = runner.invoke(
        cli.app,
        ["create", "--code", "z", "--name", "Z", "--base-fee", "1", "--interval", "0 weeks"],
    )
    assert refused.exit_code != 0 and "1 to 52 weeks" in " ".join(refused.output.split())
