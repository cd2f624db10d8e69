"""Benchmark: a billing run for N customers over M usage records (SQLite and PostgreSQL).

    python bench/billing/run.py                    # 10,000 customers, 1,000,000 records, SQLite
    python bench/billing/run.py --db postgresql://postgres@127.0.0.1:5432/postgres
    python bench/billing/run.py --customers 50 --records 5000    # a smoke run

The data: one plan (49.00 EUR monthly, usage components on messages, traffic, active users
and storage), N organizations each with a subscription whose November period has been billed
in advance, and M usage records spread over November, written through metering's direct
ingest path (the one the XMPP engine uses). The run invoices every subscription at
2026-12-01: usage rated in arrears, December's base fee in advance, tax, a gapless number,
the metering period closed, the subscription advanced, one transaction per invoice.
Only the run is timed, in wall-clock seconds and in CPU seconds of the benchmark process (the
fair figure on a shared machine; on PostgreSQL the server's own CPU is not in it). On
PostgreSQL a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.engine import make_url

from imhost.accounts.models import Organization
from imhost.billing import service
from imhost.billing.flows import run_billing
from imhost.billing.models import Invoice, Subscription
from imhost.catalog.models import Plan, PlanVersion, PriceComponent
from imhost.db.engine import make_engine, make_session_factory, normalize_url, transaction
from imhost.db.registry import load_models
from imhost.kit.clock import FrozenClock, utc
from imhost.metering.ingestion import EngineUsage, ingest_engine_batch

PERIOD_START = utc(2026, 11, 1)
PERIOD_END = utc(2026, 12, 1)


@dataclass
class Result:
    backend: str
    customers: int
    records: int
    invoices: int
    seed_seconds: float
    run_seconds: float
    run_cpu_seconds: float

    @property
    def invoices_per_second(self) -> float:
        return self.invoices / self.run_seconds if self.run_seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.backend:<10} customers={self.customers:,} records={self.records:,} "
            f"invoices={self.invoices:,} run={self.run_seconds:.1f}s wall, "
            f"{self.run_cpu_seconds:.1f}s CPU of this process "
            f"({self.invoices_per_second:,.0f} invoices/s) seeding={self.seed_seconds:.1f}s"
        )


def _scratch_postgres(url: str) -> tuple[str, str]:
    base = make_url(normalize_url(url))
    name = f"imhost_bench_billing_{os.getpid()}"
    admin = make_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False), name


def _drop_postgres(url: str, name: str) -> None:
    base = make_url(normalize_url(url))
    admin = make_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def seed(engine: Engine, customers: int, records: int, clock: FrozenClock) -> None:
    factory = make_session_factory(engine)
    with transaction(factory) as s:
        service.set_tax_rate(s, clock, "DE", "19")
        service.set_tax_rate(s, clock, "FR", "20")
        plan = Plan(code="business", name="Business", created_at=clock.now())
        s.add(plan)
        s.flush()
        pv = PlanVersion(
            plan_id=plan.id,
            version=1,
            currency="EUR",
            billing_interval="monthly",
            base_fee=Decimal("49.00"),
            created_at=clock.now(),
        )
        s.add(pv)
        s.flush()
        tiers = [
            {"up_to": 10000, "unit_price": "0", "flat_fee": "0"},
            {"up_to": 100000, "unit_price": "0.0005", "flat_fee": "0"},
            {"up_to": None, "unit_price": "0.0002", "flat_fee": "0"},
        ]
        for position, (metric, model, extra) in enumerate(
            [
                ("messages", "graduated", {"tiers": tiers}),
                ("traffic_gb", "per_unit", {"unit_price": Decimal("0.05")}),
                ("monthly_active_users", "per_unit", {"unit_price": Decimal("0.50")}),
                ("storage_gb", "per_unit", {"unit_price": Decimal("0.10")}),
            ]
        ):
            s.add(
                PriceComponent(
                    plan_version_id=pv.id,
                    metric=metric,
                    pricing_model=model,
                    currency="EUR",
                    position=position,
                    **extra,
                )
            )
        pv_id = pv.id
    countries = ["DE", "FR", "US", None]
    org_rows = [
        {
            "id": f"org{i:07d}",
            "name": f"Customer {i}",
            "slug": f"customer-{i}",
            "status": "active",
            "country": countries[i % len(countries)],
            "billing_email": f"billing@customer{i}.example",
            "created_at": clock.now(),
            "require_mfa": False,
            "expire_stale_tokens": False,
        }
        for i in range(customers)
    ]
    sub_rows = [
        {
            "id": f"sub{i:07d}",
            "organization_id": f"org{i:07d}",
            "plan_version_id": pv_id,
            "currency": "EUR",
            "interval": "monthly",
            "status": "active",
            "billing_anchor_day": 1,
            "started_at": PERIOD_START,
            "current_period_start": PERIOD_START,
            "current_period_end": PERIOD_END,
            "next_billing_at": PERIOD_END,
            "setup_fee_billed": True,
            "period_base_billed": True,
            "cancel_at_period_end": False,
            "created_at": clock.now(),
        }
        for i in range(customers)
    ]
    with engine.begin() as conn:
        for start in range(0, customers, 5000):
            conn.execute(insert(Organization), org_rows[start : start + 5000])
            conn.execute(insert(Subscription), sub_rows[start : start + 5000])
    # Usage through the engine's direct path, spread over the month.
    clock.set(PERIOD_END)
    per_customer = max(records // max(customers, 1), 1)
    minutes = 30 * 24 * 60
    batch: list[EngineUsage] = []
    written = 0
    metrics = ("messages", "messages", "bytes_in", "bytes_out", "active_users")
    for i in range(customers):
        org = f"org{i:07d}"
        for k in range(per_customer):
            metric = metrics[k % len(metrics)]
            minute = (k * 7919 + i) % minutes
            batch.append(
                EngineUsage(
                    organization_id=org,
                    metric=metric,
                    bucket_start=PERIOD_START + timedelta(minutes=minute),
                    quantity=Decimal(1 if metric == "active_users" else 40 + k % 17),
                    idempotency_key=f"{org}:{k}",
                    subject=f"user{k % 23}" if metric == "active_users" else None,
                )
            )
            written += 1
            if written >= records:
                break
        if len(batch) >= 50_000 or i == customers - 1 or written >= records:
            with transaction(factory) as s:
                ingest_engine_batch(s, batch, clock=clock)
            batch = []
        if written >= records:
            break


def bench(url: str, customers: int, records: int) -> Result:
    backend = make_url(normalize_url(url)).get_backend_name()
    engine = make_engine(url)
    load_models().create_all(engine)
    clock = FrozenClock(utc(2026, 10, 31, 12))
    started = time.perf_counter()
    seed(engine, customers, records, clock)
    seeded = time.perf_counter() - started
    clock.set(utc(2026, 12, 1, 0, 30))
    factory = make_session_factory(engine)
    started = time.perf_counter()
    cpu_started = time.process_time()
    summary = run_billing(factory, clock, PERIOD_END)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    with factory() as s:
        made = s.scalar(select(func.count()).select_from(Invoice)) or 0
    engine.dispose()
    if summary.failures or made != customers:
        raise SystemExit(f"run incomplete: {made} invoices, failures {summary.failures[:3]}")
    return Result(backend, customers, records, summary.invoices, seeded, elapsed, cpu)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--db",
        action="append",
        help="sqlite (a temporary file, the default) or a PostgreSQL URL; repeatable",
    )
    args = parser.parse_args(argv)
    results = []
    for target in args.db or ["sqlite"]:
        if target == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                results.append(bench(url, args.customers, args.records))
        else:
            url, name = _scratch_postgres(target)
            try:
                results.append(bench(url, args.customers, args.records))
            finally:
                _drop_postgres(target, name)
        print(results[-1].line(), flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
