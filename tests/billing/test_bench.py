"""The billing-run benchmark, at smoke size, so that it keeps working."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "billing" / "run.py"


def test_the_benchmark_runs_at_smoke_size_and_invoices_every_customer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("bench_billing_run", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    [result] = module.main(["--customers", "50", "--records", "5000"])
    assert result.invoices == 50
    assert "customers=50 records=5,000 invoices=50" in capsys.readouterr().out
