"""Benchmark: help center search over 10,000 articles, on SQLite and PostgreSQL.

    python bench/support/search.py                              # SQLite (a temporary file)
    python bench/support/search.py --db postgresql://postgres@127.0.0.1:5432/postgres
    python bench/support/search.py --articles 500 --queries 50  # a smoke run

The data: the shipped articles plus N generated ones (titles, summaries and bodies of 150-400
words drawn from a product vocabulary with a Zipf-like spread, so common words match
thousands of articles and rare ones a few), all published and public. Each article is written
the way the service writes it (rendered, plain text extracted); the search index is filled as
the service fills it. The timed part is ``imhost.support.search.search`` as the /help/search
page calls it (count, ranked first page of 10 with highlights) for a mix of queries: one
common word, two words, a prefix, a rare word, a phrase with no match of every word (the
any-word fallback runs), and ``suggest_articles`` for a ticket subject. Each query kind is run
``--queries`` times; p50 and p99 are per kind, in milliseconds, wall clock. On PostgreSQL a
scratch database is created and dropped.
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

from imhost.db.engine import make_engine, make_session_factory, transaction
from imhost.db.registry import load_models
from imhost.kit.clock import FrozenClock, utc
from imhost.kit.ids import new_id
from imhost.support import markdown, search, service, shipped
from imhost.support.models import HelpArticle

WORDS = (
    "account",
    "address",
    "android",
    "app",
    "apps",
    "backup",
    "battery",
    "billing",
    "budget",
    "cap",
    "certificate",
    "client",
    "code",
    "codes",
    "connect",
    "connection",
    "conversations",
    "contact",
    "credit",
    "dino",
    "direct",
    "dns",
    "domain",
    "download",
    "encryption",
    "error",
    "firewall",
    "forecast",
    "gajim",
    "group",
    "history",
    "invoice",
    "ios",
    "key",
    "limit",
    "line",
    "lock",
    "login",
    "message",
    "messages",
    "monal",
    "mobile",
    "network",
    "notification",
    "offline",
    "password",
    "payment",
    "phone",
    "plan",
    "port",
    "ports",
    "presence",
    "profile",
    "push",
    "quota",
    "record",
    "recovery",
    "renewal",
    "reset",
    "roster",
    "server",
    "service",
    "session",
    "siskin",
    "srv",
    "storage",
    "subscription",
    "suspend",
    "tax",
    "tls",
    "token",
    "traffic",
    "update",
    "usage",
    "user",
    "verify",
    "version",
    "websocket",
    "window",
    "xmpp",
)
RARE = ["zanzibar", "quixotic", "xylophone", "marzipan", "fjord"]
QUERIES: dict[str, Callable[[random.Random], str]] = {
    "one common word": lambda r: r.choice(WORDS[:20]),
    "two words": lambda r: f"{r.choice(WORDS)} {r.choice(WORDS)}",
    "a prefix": lambda r: r.choice(WORDS)[:4],
    "a rare word": lambda r: r.choice(RARE),
    "no article has every word (fallback)": lambda r: f"{r.choice(RARE)} {r.choice(WORDS)}",
}


def _text(rng: random.Random, n: int) -> str:
    # Zipf-like: the first words of the vocabulary are much more common.
    words = [WORDS[min(int(rng.paretovariate(1.2)) - 1, len(WORDS) - 1)] for _ in range(n)]
    if rng.random() < 0.01:
        words.append(rng.choice(RARE))
    return " ".join(words)


def seed(engine: Engine, count: int) -> float:
    factory = make_session_factory(engine)
    clock = FrozenClock(utc(2026, 12, 1))
    rng = random.Random(7)
    started = time.perf_counter()
    with transaction(factory, write=True) as session:
        shipped.load_shipped(session, clock)
        category_ids = [c.id for c in service.list_categories(session)]
        rows = []
        for i in range(count):
            title = _text(rng, rng.randint(3, 8)).capitalize()
            summary = _text(rng, rng.randint(8, 20)).capitalize() + "."
            paragraphs = [_text(rng, rng.randint(40, 90)) for _ in range(rng.randint(3, 5))]
            body = "\n\n".join(f"## {p.split()[0].capitalize()}\n\n{p}." for p in paragraphs)
            html = markdown.render(body)
            at = clock.now() - timedelta(minutes=i)
            rows.append(
                {
                    "id": new_id(),
                    "slug": f"generated-{i}",
                    "category_id": category_ids[i % len(category_ids)],
                    "title": title[:200],
                    "summary": summary[:500],
                    "body": body,
                    "body_html": html,
                    "body_text": markdown.plain_text(html),
                    "status": "published",
                    "visibility": "public",
                    "position": i,
                    "author_label": "bench",
                    "created_at": at,
                    "updated_at": at,
                    "published_at": at,
                    "views": 0,
                }
            )
            if len(rows) == 1000:
                session.execute(insert(HelpArticle), rows)
                rows = []
        if rows:
            session.execute(insert(HelpArticle), rows)
        search.rebuild_index(session)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("ANALYZE help_articles"))
            conn.commit()
    return time.perf_counter() - started


def measure(engine: Engine, queries: int) -> dict[str, Stats]:
    factory = make_session_factory(engine)
    rng = random.Random(11)
    out: dict[str, Stats] = {}
    kinds: dict[str, Callable[[Session, str], object]] = {
        name: (lambda s, q: search.search(s, q, limit=10)) for name in QUERIES
    }
    with factory() as session:
        search.search(session, "warm up")  # caches and statement preparation
        for name, make in QUERIES.items():
            times, cpu = [], []
            hits = 0
            for _ in range(queries):
                q = make(rng)
                t0, c0 = time.perf_counter(), time.process_time()
                results = kinds[name](session, q)
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
                hits += getattr(results, "total", 0)
            out[name] = _stats(times, cpu, hits / queries)
        times, cpu = [], []
        for _ in range(queries):
            subject = (
                f"my {rng.choice(WORDS)} does not {rng.choice(WORDS)} after the {rng.choice(WORDS)}"
            )
            t0, c0 = time.perf_counter(), time.process_time()
            found = service.suggest_articles(session, subject, 5)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        out["suggest_articles (a ticket subject)"] = _stats(times, cpu, float(len(found)))
    return out


Stats = tuple[float, float, float, float, float]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _stats(times: list[float], cpu: list[float], matches: float) -> Stats:
    """p50 and p99 of wall-clock and of CPU milliseconds, and the mean number matching."""
    return (
        statistics.median(times),
        _p99(times),
        statistics.median(cpu),
        _p99(cpu),
        matches,
    )


def run(url: str, articles: int, queries: int) -> None:
    engine = make_engine(url)
    try:
        load_models().create_all(engine)
        seconds = seed(engine, articles)
        print(f"{engine.dialect.name}: {articles:,} articles seeded in {seconds:.1f} s")
        print(
            f"| query ({queries} each) | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms "
            "| articles matching (mean) |"
        )
        print("|---|---|---|---|---|---|")
        for name, (p50, p99, c50, c99, matches) in measure(engine, queries).items():
            print(f"| {name} | {p50:.1f} | {p99:.1f} | {c50:.1f} | {c99:.1f} | {matches:,.0f} |")
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="a PostgreSQL server URL (default: SQLite in a temp file)")
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with scratch_database(args.db, "imhost_bench_help_search") as url:
        run(url, args.articles, args.queries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
