"""Benchmark: the console's ticket queue over 200,000 tickets, on SQLite and PostgreSQL.

    python bench/support/ticket_queue.py                              # SQLite (a temporary file)
    python bench/support/ticket_queue.py --db postgresql://postgres@127.0.0.1:5432/postgres
    python bench/support/ticket_queue.py --tickets 5000 --queries 20  # a smoke run

The data: N tickets over two years (70 % closed, the rest spread over the open statuses),
four departments, 20 staff assignees (a third unassigned), one in ten open tickets with a
``due_at``, spread over 2,000 organizations. The timed part is
``imhost.support.tickets.queue`` as the console's queue page calls it (50 rows): each view
(open, mine, unassigned, breaching, all), a department filter, and a deep page (the 20th,
reached by its cursor: keyset pagination costs the same at any depth). p50 and p99 are per
kind, in milliseconds, wall clock. On PostgreSQL a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta

from scratch import scratch_database
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from imhost.accounts import service as accounts
from imhost.accounts.models import StaffRole
from imhost.db.engine import make_engine, make_session_factory
from imhost.db.registry import load_models
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.ids import new_id
from imhost.support import tickets
from imhost.support.ticket_models import Ticket

NOW = utc(2026, 12, 3, 9)
STATUSES = ["new", "open", "waiting_on_customer", "waiting_on_staff", "resolved"]
DEPARTMENTS = ["technical", "billing", "domains", "abuse"]


def seed(engine: Engine, count: int) -> tuple[float, list[str]]:
    rng = random.Random(12)
    with make_session_factory(engine)() as session:
        staff = [
            accounts.create_user(
                session,
                FrozenClock(NOW),
                email=f"agent{i}@provider.example",
                name=f"Agent {i}",
                staff_role=StaffRole.SUPPORT,
                email_verified=True,
            ).id
            for i in range(20)
        ]
        session.commit()
    started = time.perf_counter()
    batch: list[dict[str, object]] = []
    with engine.begin() as conn:
        for i in range(count):
            updated = NOW - timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
            status = "closed" if rng.random() < 0.7 else rng.choice(STATUSES)
            due = (
                NOW + timedelta(minutes=rng.randint(-600, 3000))
                if status != "closed" and rng.random() < 0.1
                else None
            )
            batch.append(
                {
                    "id": new_id(),
                    "public_id": f"IMH-{i // 10000:04d}-{i % 10000:04d}",
                    "subject": f"Ticket {i}",
                    "organization_id": None,
                    "requester_email": f"user{i % 5000}@example.com",
                    "requester_name": "",
                    "department": rng.choice(DEPARTMENTS),
                    "priority": "normal",
                    "status": status,
                    "assignee_user_id": rng.choice(staff) if rng.random() < 0.66 else None,
                    "tags": [],
                    "reply_token": new_id(),
                    "via": "portal",
                    "created_at": updated,
                    "updated_at": updated,
                    "due_at": due,
                    "message_count": 1,
                    "change_count": 1,
                    "rating_comment": "",
                }
            )
            if len(batch) == 5000:
                conn.execute(insert(Ticket), batch)
                batch = []
        if batch:
            conn.execute(insert(Ticket), batch)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE support_tickets"))
    return time.perf_counter() - started, staff


Stats = tuple[float, float]


def measure(engine: Engine, staff: list[str], queries: int) -> dict[str, Stats]:
    factory = make_session_factory(engine)
    clock = FrozenClock(NOW)
    me = staff[0]

    kinds: dict[str, Callable[[Session], object]] = {
        "open": lambda s: tickets.queue(s, clock, view="open"),
        "mine": lambda s: tickets.queue(s, clock, view="mine", viewer_user_id=me),
        "unassigned": lambda s: tickets.queue(s, clock, view="unassigned"),
        "breaching soon": lambda s: tickets.queue(s, clock, view="breaching"),
        "all": lambda s: tickets.queue(s, clock, view="all"),
        "department billing, open": lambda s: tickets.queue(
            s, clock, view="open", department="billing"
        ),
    }
    out: dict[str, Stats] = {}
    with factory() as session:
        for name, call in kinds.items():
            times = []
            for _ in range(queries):
                t0 = time.perf_counter()
                call(session)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            out[name] = (
                statistics.median(times),
                times[min(len(times) - 1, int(len(times) * 0.99))],
            )
        # The 20th page: its own page query timed, after walking the cursors to it.
        cursor = None
        for _ in range(19):
            cursor = tickets.queue(session, clock, view="all", cursor=cursor).next_cursor
        times = []
        for _ in range(queries):
            t0 = time.perf_counter()
            tickets.queue(session, clock, view="all", cursor=cursor)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out["all, page 20"] = (
            statistics.median(times),
            times[min(len(times) - 1, int(len(times) * 0.99))],
        )
    return out


def run(url: str, count: int, queries: int) -> None:
    engine = make_engine(url)
    try:
        load_models().create_all(engine)
        seconds, staff = seed(engine, count)
        print(f"{engine.dialect.name}: {count:,} tickets seeded in {seconds:.1f} s")
        print(f"| queue page ({queries} each, 50 rows) | p50 ms | p99 ms |")
        print("|---|---|---|")
        for name, (p50, p99) in measure(engine, staff, queries).items():
            print(f"| {name} | {p50:.1f} | {p99:.1f} |")
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="a PostgreSQL server URL (default: SQLite in a temp file)")
    parser.add_argument("--tickets", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    with scratch_database(args.db, "imhost_bench_ticket_queue") as url:
        run(url, args.tickets, args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
