"""Billing's rules read without database tricks: dialect branches, raw SQL, Core bulk writes
and ORM internals live in ``billing.repository`` (issue 9, "Structure")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BILLING = Path(__file__).resolve().parents[2] / "src" / "imhost" / "billing"
RULES = ["invoicing.py", "credits.py", "subscriptions.py", "settings.py", "payments.py", "flows.py"]
# What means "how the database does it", not "what billing does": attributes ...
ATTRIBUTES = {"dialect", "connection"}  # dialect branches; Core statements on the connection
# ... and what is imported from SQLAlchemy for raw SQL, Core bulk writes and ORM internals.
IMPORTS = {
    "text",
    "insert",
    "update",
    "bindparam",
    "inspect",
    "make_transient_to_detached",
    "set_committed_value",
}


def _tricks(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in ATTRIBUTES:
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found.update(alias.name for alias in node.names if alias.name in IMPORTS)
    return found


@pytest.mark.parametrize("module", RULES)
def test_a_billing_rule_module_uses_no_database_specific_trick(module: str) -> None:
    tricks = sorted(_tricks(BILLING / module))
    assert tricks == [], f"{module} uses {tricks}: move them into billing/repository.py"


def test_the_repository_is_where_they_went() -> None:
    assert {"dialect", "text", "make_transient_to_detached", "set_committed_value"} <= _tricks(
        BILLING / "repository.py"
    )
