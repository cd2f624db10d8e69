"""The import direction of ARCHITECTURE.md, checked with import-linter's contracts
(`.importlinter` at the project root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "importlinter.cli", str(ROOT / ".importlinter")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0 and "No module named importlinter.cli" in result.stderr:
        result = subprocess.run(
            ["lint-imports", str(ROOT / ".importlinter")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
