"""Benchmark: usage ingestion (records/s) and the cost of reading usage to date.

Measures, on SQLite (a file in a temporary directory, WAL) and on PostgreSQL when
``--postgres URL`` is given (a scratch database ``imhost_bench_metering`` is created there):

1. the engine's direct path, ``metering.ingestion.ingest_engine_batch``, in flushes of
   ``--flush`` records (the built-in engine flushes every second or so);
2. the service path, ``metering.ingestion.ingest`` (validation, idempotency and conflict checks,
   closed periods), in batches of 10,000;
3. the batch API, ``POST /api/v1/orgs/{org_id}/usage`` with an API token, through FastAPI's
   TestClient (JSON encoding and parsing included), in batches of 10,000;
4. ``usage_to_date`` and ``billable_quantities`` for one organization with a full month of
   minute buckets for six metrics (267,840 records), the stored level changing every minute
   (the worst case) and every hour.

Run::

    python3 bench/metering/ingest.py
    python3 bench/metering/ingest.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

Every record is distinct (its own idempotency key); a second pass of the direct path resends
the same records to measure duplicate handling.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import Organization
from imhost.db.engine import make_engine, make_session_factory, normalize_url
from imhost.db.registry import load_models
from imhost.kit.clock import FrozenClock
from imhost.metering import aggregate, ingestion
from imhost.metering.ingestion import EngineUsage
from imhost.metering.schemas import UsageIn

MONTH_START = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
METRICS = ("messages", "bytes_in", "bytes_out", "stanzas_presence", "stanzas_iq")


def fresh_engine(backend: str, pg_url: str | None, tmp: Path) -> Engine:
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
    else:
        assert pg_url is not None
        base = make_url(normalize_url(pg_url))
        admin = make_engine(
            base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "imhost_bench_metering" WITH (FORCE)'))
            conn.execute(text('CREATE DATABASE "imhost_bench_metering"'))
        admin.dispose()
        engine = make_engine(
            base.set(database="imhost_bench_metering").render_as_string(hide_password=False)
        )
    load_models().create_all(engine)
    return engine


def make_orgs(factory: sessionmaker[Session], n: int, prefix: str = "bench-org") -> list[str]:
    with factory() as session:
        orgs = [
            Organization(name=f"Org {i}", slug=f"{prefix}-{i}", created_at=NOW) for i in range(n)
        ]
        session.add_all(orgs)
        session.commit()
        return [o.id for o in orgs]


def engine_records(org_ids: list[str], count: int, prefix: str) -> list[EngineUsage]:
    """Minute buckets of several metrics for several organizations, like engine flushes."""
    out: list[EngineUsage] = []
    i = 0
    while len(out) < count:
        org = org_ids[i % len(org_ids)]
        bucket = MONTH_START + timedelta(minutes=(i // len(org_ids)) % 40_000)
        metric = METRICS[i % len(METRICS)]
        out.append(EngineUsage(org, metric, bucket, 1 + i % 50, f"{prefix}:{i}", service_id="s1"))
        i += 1
    return out


def timed(label: str, count: int, fn: Callable[[], Any]) -> float:
    """Wall-clock rate, and the rate per CPU second of this process (on SQLite the database
    works in this process, so that is the steadier figure on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    rate = count / elapsed
    print(
        f"  {label:<48} {count:>9,} records in {elapsed:6.2f} s = {rate:>10,.0f} records/s "
        f"({count / cpu_used if cpu_used else 0:>9,.0f} per CPU second of this process)"
    )
    return rate


def bench_direct(
    factory: sessionmaker[Session], org_ids: list[str], total: int, flush: int
) -> None:
    clock = FrozenClock(NOW)
    records = engine_records(org_ids, total, "direct")

    def run() -> None:
        for start in range(0, len(records), flush):
            with factory() as session:
                ingestion.ingest_engine_batch(session, records[start : start + flush], clock=clock)
                session.commit()

    timed(f"direct path, flushes of {flush:,}", total, run)
    timed("direct path, the same again (all duplicates)", total, run)


def bench_service(factory: sessionmaker[Session], org_ids: list[str], total: int) -> None:
    clock = FrozenClock(NOW)
    raw = engine_records(org_ids, total, "svc")
    records = [
        UsageIn(
            organization_id=r.organization_id,
            service_id=r.service_id,
            metric=r.metric,
            bucket_start=r.bucket_start,
            quantity=r.quantity,  # type: ignore[arg-type]
            idempotency_key=r.idempotency_key,
        )
        for r in raw
    ]

    def run() -> None:
        for start in range(0, len(records), 10_000):
            with factory() as session:
                ingestion.ingest(session, clock, records[start : start + 10_000], atomic=True)
                session.commit()

    timed("service path (validation, idempotency), 10,000/batch", total, run)


def bench_api(engine: Engine, tmp: Path, total: int) -> None:
    from fastapi.testclient import TestClient

    from imhost.accounts import tokens
    from imhost.accounts.audit import Actor
    from imhost.config import load_settings
    from imhost.runtime import build_runtime
    from imhost.web.app import create_app

    clock = FrozenClock(NOW)
    settings = load_settings(data_dir=tmp / "data", secret_key="b" * 40)
    runtime = build_runtime(settings, clock=clock, engine=engine)
    with runtime.session_factory() as session:
        org = Organization(name="API org", slug="bench-api", created_at=NOW)
        session.add(org)
        session.flush()
        issued = tokens.create_token(
            session,
            clock,
            organization_id=org.id,
            name="engine",
            scopes=["usage:write"],
            role="technical",
            created_by=Actor.system(),
        )
        session.commit()
        org_id = org.id
    client = TestClient(create_app(runtime))
    client.headers["Authorization"] = f"Bearer {issued.plaintext}"
    batches = []
    for b in range(0, total, 10_000):
        batches.append(
            {
                "records": [
                    {
                        "metric": METRICS[i % len(METRICS)],
                        "bucket_start": (MONTH_START + timedelta(minutes=i % 40_000)).isoformat(),
                        "quantity": 1 + i % 50,
                        "idempotency_key": f"api:{i}",
                        "service_id": "s1",
                    }
                    for i in range(b, min(b + 10_000, total))
                ]
            }
        )

    def run() -> None:
        for batch in batches:
            response = client.post(f"/api/v1/orgs/{org_id}/usage", json=batch)
            assert response.status_code == 200, response.text[:500]

    timed("batch API over HTTP (TestClient), 10,000/request", total, run)


def bench_reads(factory: sessionmaker[Session], storage_every: int) -> None:
    """One organization with a month of minute buckets; time the aggregate reads.

    ``storage_every``: the stored level changes every this many minutes (it is reported
    every minute either way, as the engine does).
    """
    [org_id] = make_orgs(factory, 1, f"bench-reads-{storage_every}")
    clock = FrozenClock(NOW)
    minutes = 31 * 24 * 60
    records: list[EngineUsage] = []
    for minute in range(minutes):
        bucket = MONTH_START + timedelta(minutes=minute)
        level = (minute // storage_every) * 1000
        records += [
            EngineUsage(org_id, "messages", bucket, 3, f"r:m:{minute}"),
            EngineUsage(org_id, "bytes_in", bucket, 4096, f"r:bi:{minute}"),
            EngineUsage(org_id, "bytes_out", bucket, 8192, f"r:bo:{minute}"),
            EngineUsage(org_id, "connections_peak", bucket, minute % 90, f"r:c:{minute}"),
            EngineUsage(org_id, "offline_storage_bytes", bucket, level, f"r:o:{minute}"),
            EngineUsage(
                org_id, "active_users", bucket, 1, f"r:u:{minute % 500}", subject=f"u{minute % 500}"
            ),
        ]
    with factory() as session:
        for start in range(0, len(records), 20_000):
            ingestion.ingest_engine_batch(session, records[start : start + 20_000], clock=clock)
        session.commit()
    print(
        f"  reads, {len(records):,} records of one organization, storage changing every "
        f"{storage_every} min:"
    )

    def median_ms(read: Callable[[Session], Any]) -> str:
        walls, cpus = [], []
        for _ in range(5):
            with factory() as session:
                start, cpu = time.perf_counter(), time.process_time()
                read(session)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
        return (
            f"median {statistics.median(walls) * 1000:8.1f} ms "
            f"({statistics.median(cpus) * 1000:.1f} ms CPU of this process)"
        )

    for label, end in (
        ("usage_to_date, 10 days in", MONTH_START + timedelta(days=10)),
        ("usage_to_date, end of month", NOW - timedelta(minutes=1)),
    ):
        print(
            f"    {label:<46} "
            + median_ms(lambda s, end=end: aggregate.usage_to_date(s, org_id, MONTH_START, end))
        )
    print(
        f"    {'billable_quantities, full month':<46} "
        + median_ms(lambda s: aggregate.billable_quantities(s, org_id, MONTH_START, NOW))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", help="PostgreSQL server URL (a scratch database is made)")
    parser.add_argument("--records", type=int, default=200_000, help="direct-path records")
    parser.add_argument("--api-records", type=int, default=50_000)
    parser.add_argument("--flush", type=int, default=5_000, help="records per engine flush")
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    backends = ["sqlite"] + (["postgresql"] if args.postgres else [])
    if args.only is None and len(backends) > 1:
        # Each database in a fresh process: what one run leaves in memory (the garbage
        # collector's work grows with it) must not weigh on the other's figures.
        for backend in backends:
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", backend], check=True)
        return
    if args.only is not None:
        backends = [args.only]
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            print(f"\n{backend}")
            engine = fresh_engine(backend, args.postgres, tmp)
            factory = make_session_factory(engine)
            org_ids = make_orgs(factory, args.orgs)
            bench_direct(factory, org_ids, args.records, args.flush)
            bench_service(factory, org_ids, min(args.records, 100_000))
            bench_api(engine, tmp, args.api_records)
            if not args.skip_reads:
                bench_reads(factory, storage_every=1)
                bench_reads(factory, storage_every=60)
            engine.dispose()


if __name__ == "__main__":
    main()
