"""The migrations produce exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from imhost.db.engine import make_engine
from imhost.db.migrations import migration_status, upgrade
from imhost.db.registry import include_name, load_models
from tests.conftest import make_test_database_url


def test_migrations_build_exactly_the_schema_of_the_models(tmp_path: Path, backend: str) -> None:
    url = make_test_database_url(tmp_path, "migrations", backend)
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_name}
            )
            diff = compare_metadata(context, load_models())
            assert diff == [], (
                f"models and migrations differ; run `imhost db revision -m ...`: {diff}"
            )
            status = migration_status(conn)
            assert status.current and status.head is not None
            tables = set(inspect(conn).get_table_names())
        assert set(load_models().tables) <= tables
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(tmp_path: Path, backend: str) -> None:
    url = make_test_database_url(tmp_path, "migrations2", backend)
    upgrade(url)
    upgrade(url)  # a second start applies nothing and does not fail


def test_the_rollup_migration_fills_rollups_from_stored_records(
    tmp_path: Path, backend: str
) -> None:
    """Records stored before usage rollups existed are rolled up, decimals exact."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlalchemy import text

    url = make_test_database_url(tmp_path, "migrations3", backend)
    upgrade(url, "75e2ce8126b5")
    engine = make_engine(url)
    try:
        tables = load_models().tables
        with engine.begin() as conn:
            conn.execute(
                tables["organizations"].insert(),
                {
                    "id": "o1",
                    "name": "O",
                    "slug": "o",
                    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                },
            )
            for i, (metric, minute, qty) in enumerate(
                [
                    ("messages", 5, "3"),
                    ("messages", 50, "4"),
                    ("messages", 70, "5"),
                    ("traffic_gb", 10, "0.25"),
                    ("traffic_gb", 11, "0.5"),
                    ("offline_storage_bytes", 130, "100"),
                    ("offline_storage_bytes", 160, "300"),
                ]
            ):
                bucket = datetime(2026, 1, 1, minute // 60, minute % 60, tzinfo=UTC)
                conn.execute(
                    tables["usage_records"].insert(),
                    {
                        "organization_id": "o1",
                        "service_id": "s",
                        "metric": metric,
                        "bucket_start": bucket,
                        "quantity": Decimal(qty),
                        "idempotency_key": f"k{i}",
                        "received_at": bucket,
                    },
                )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT metric, quantity, peak, records FROM usage_rollups "
                    "ORDER BY metric, hour_start"
                )
            ).all()
        got = [(metric, Decimal(str(q)), Decimal(str(p)), n) for metric, q, p, n in rows]
        assert got == [
            ("messages", Decimal(7), Decimal(4), 2),
            ("messages", Decimal(5), Decimal(5), 1),
            ("offline_storage_bytes", Decimal(400), Decimal(300), 2),
            ("traffic_gb", Decimal("0.75"), Decimal("0.5"), 2),
        ]
        with engine.connect() as conn:
            first_at, last_level, integral = conn.execute(
                tables["usage_rollups"]
                .select()
                .with_only_columns(
                    tables["usage_rollups"].c.first_at,
                    tables["usage_rollups"].c.last_level,
                    tables["usage_rollups"].c.integral,
                )
                .where(tables["usage_rollups"].c.metric == "offline_storage_bytes")
            ).one()
        # 100 bytes from 02:10 to 02:40, then 300 bytes to 03:00 (milli-bytes x microseconds)
        minute = 60 * 10**6
        assert first_at == datetime(2026, 1, 1, 2, 10, tzinfo=UTC)
        assert last_level == 300_000
        assert int(integral) == 100_000 * 30 * minute + 300_000 * 20 * minute
    finally:
        engine.dispose()


def test_the_invoice_legal_migration_marks_the_untaxed_lines_of_stored_invoices(
    tmp_path: Path, backend: str
) -> None:
    """Lines stored before lines said whether they are taxed: late fees, the credit carried
    to the account and the tax line are untaxed, everything else taxed."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    url = make_test_database_url(tmp_path, "migrations_invoice_legal", backend)
    upgrade(url, "285d84509e36")
    engine = make_engine(url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, name, slug, status, require_mfa, "
                    "expire_stale_tokens, created_at) VALUES ('o1', 'O', 'o', 'active', "
                    ":no, :no, :at)"
                ),
                {"no": False, "at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO invoices (id, organization_id, kind, status, currency, subtotal, "
                    "tax_total, total, amount_paid, amount_credited, prices_include_tax, "
                    "customer_name, created_at) VALUES ('i1', 'o1', 'late_fee', 'open', 'EUR', "
                    "5, 0, 5, 0, 0, :no, 'O', :at)"
                ),
                {"no": False, "at": at},
            )
            for position, kind in enumerate(
                ["base_fee", "late_fee", "carried_to_credit", "tax"], start=1
            ):
                conn.execute(
                    text(
                        "INSERT INTO invoice_lines (id, invoice_id, position, kind, description, "
                        "calculation, amount, counts_in_total) VALUES "
                        "(:id, 'i1', :position, :kind, :kind, '', 1, :yes)"
                    ),
                    {"id": f"l{position}", "position": position, "kind": kind, "yes": True},
                )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT kind, taxable FROM invoice_lines ORDER BY position")
            ).all()
            seller = conn.execute(text("SELECT seller, tax_category FROM invoices")).one()
        assert [(kind, bool(taxable)) for kind, taxable in rows] == [
            ("base_fee", True),
            ("late_fee", False),
            ("carried_to_credit", False),
            ("tax", False),
        ]
        assert tuple(seller) == (None, None)  # shown with the current seller details
    finally:
        engine.dispose()
