"""Session-private scratch tables: a set of keys to join to the usage tables.

Reads and idempotency checks for many organizations at once join a list of requests to the
tables. A ``VALUES`` list would be compiled anew by SQLAlchemy for every batch (it dominated
the run time), so the list goes into a temporary table instead, written with one
``executemany``; the statements that join it are then the same every time and stay cached.
A temporary table belongs to its connection: concurrent sessions never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable

from imhost.db.types import UtcDateTime

_scratch = MetaData()

RANGES = Table(
    "usage_scratch_ranges",
    _scratch,
    Column("idx", Integer),
    Column("org", String(32)),
    Column("lo", UtcDateTime()),
    Column("hi", UtcDateTime()),
    prefixes=["TEMPORARY"],
)
"""(request index, organization, low, high): time ranges of requests."""

IDENTITIES = Table(
    "usage_scratch_identities",
    _scratch,
    Column("org", String(32)),
    Column("metric", String(40)),
    Column("bucket", UtcDateTime()),
    Column("key", String(200)),
    prefixes=["TEMPORARY"],
)
"""(organization, metric, bucket, idempotency key): records looked up by identity."""


def fill(session: Session, table: Table, rows: Sequence[Sequence[Any]]) -> Table:
    """Replace the table's rows (creating it on this connection if needed) and return it."""
    conn = session.connection()
    conn.execute(CreateTable(table, if_not_exists=True))
    conn.execute(table.delete())
    if rows:
        names = [c.name for c in table.columns]
        conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])
    if conn.dialect.name == "postgresql":
        # Autovacuum never analyzes temporary tables: without statistics the planner guesses
        # and may scan the usage tables instead of probing their indexes once per row.
        conn.exec_driver_sql(f"ANALYZE {table.name}")
    return table
