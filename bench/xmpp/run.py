"""The same scenario against imhost serve, the in-memory engine, Prosody and ejabberd, side by
side and interleaved; prints the figures of each and imhost-serve/peer ratios.

Full run (about 30 minutes with the four servers; the estimate is printed at the start), on a
machine doing nothing else::

    taskset -c 1 python3 bench/xmpp/run.py

Smoke run (every path, a few minutes)::

    taskset -c 1 python3 bench/xmpp/run.py --quick

Servers (``--servers``, default all four): ``imhost-serve`` is the product as people run it,
``imhost serve`` (web, worker and XMPP in one process, metering on, SQLite) on a data dir
seeded once per run through the package's own service functions (``seed_imhost.py``) and
copied for every process; ``imhost`` is the in-memory engine alone (``python -m imhost.xmpp``);
``prosody`` and ``ejabberd`` are the Debian packages set up as /work/shared/PEERS.md says.
Each server is pinned to core 0, this load generator runs on core 1 (start it with
``taskset -c 1``) and reports its own CPU so that a saturated generator is visible.

Scenario (PEERS.md): ``--accounts`` accounts (default 1,000) on one virtual host, TLS off,
SASL PLAIN, 1:1 chat between ``--users``/2 pairs. Every MEASUREMENT runs on a FRESH process of
its server (started, measured, stopped), and the servers take turns measurement by measurement,
the order rotated from one turn to the next so that nobody is always first:

1. idle, with no client: RSS ``--idle-start`` s after start and the CPU share over the
   second half of that time; then RSS per idle authenticated connection (``--idle``
   connections, read ``--idle-wait`` s after they logged in).
2. logins, ``--rounds`` rounds per server and kind, ``--logins`` logins 10 in flight: PLAIN on
   the storage PEERS.md uses (peers keep plain passwords; imhost only ever keeps SCRAM keys),
   then every server storing salted SCRAM-SHA-1 keys (4,096 iterations): PLAIN (one PBKDF2
   per login on the server) and SCRAM-SHA-1 with a client that keeps its salted passwords, as
   real clients do. The client's own derivations are never measured: imhost-serve's salts
   are read from the seeded database once per run; where the salts are made per process
   (in-memory imhost, ejabberd) an unmeasured warm-up login of every account comes first.
   Each round is reported, and the median.
3. messages: for each ``--rates`` step, each server in turn: start, log ``--users`` in, wait
   1 s, send for ``--duration`` s, stop. A step that is not sustained is repeated once (on a
   fresh process); a server stops stepping up after two failed steps in a row.

Before a login or message measurement the fresh process settles: until it uses under 10 % of
a CPU over half a second (imhost serve's web app and worker take about a second), at most 10 s.
Every measurement records the load average (1 min) at its start, the server's CPU share and
the time it waited for a CPU (``schedstat``: on a shared machine the wait is what moves
latency from run to run), and this generator's CPU share. Results go to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import SCRAM_CACHE, StepResult, connect_many, run_step
from servers import Ejabberd, Imhost, ImhostNoMetering, ImhostServe, Prosody, Server

DOMAIN = "bench.local"
PASSWORD = "bench-Zebra-lorry-2931"
"""Strong enough for imhost's default password policy (its accounts are made as a user would)."""
RATES = [1000, 2000, 5000, 7500, 10000, 12500, 15000, 20000, 30000, 40000, 50000, 60000]
SERVERS: dict[str, type[Server]] = {
    "imhost-serve": ImhostServe,
    "imhost": Imhost,
    "prosody": Prosody,
    "ejabberd": Ejabberd,
}
EXTRA_SERVERS: dict[str, type[Server]] = {"imhost-nometering": ImhostNoMetering}
"""Selectable with ``--servers`` but not in the default set."""
ME = "imhost-serve"
LOGIN_KINDS = (
    ("plain", "PLAIN", False, "PLAIN, PEERS.md storage"),
    ("hashed_PLAIN", "PLAIN", True, "PLAIN, SCRAM keys stored"),
    ("hashed_SCRAM-SHA-1", "SCRAM-SHA-1", True, "SCRAM-SHA-1, SCRAM keys stored"),
)
FULL: dict[str, Any] = {
    "users": 1000,
    "rates": ",".join(map(str, RATES)),
    "duration": 5.0,
    "logins": 2000,
    "rounds": 3,
    "idle": 4000,
    "idle_wait": 15.0,
    "idle_start": 15.0,
    "latency_rates": "5000,10000,20000",
}
QUICK: dict[str, Any] = {
    "users": 200,
    "rates": "1000,5000",
    "duration": 2.0,
    "logins": 400,
    "rounds": 2,
    "idle": 400,
    "idle_wait": 3.0,
    "idle_start": 5.0,
    "latency_rates": "5000",
}
START_SECONDS = {
    "imhost-serve": 5.0,
    "imhost": 1.5,
    "imhost-nometering": 1.5,
    "prosody": 1.0,
    "ejabberd": 4.0,
}
"""Rough start-up time of each server (without accounts), for the estimate printed first."""
LOGINS_PER_S = {
    "imhost-serve": 150,
    "imhost": 650,
    "imhost-nometering": 650,
    "prosody": 150,
    "ejabberd": 900,
}
"""Rough login rates (PLAIN, 10 in flight) for the estimate."""
START_PER_ACCOUNT = {
    "imhost-serve": 0.0,
    "imhost": 0.004,
    "imhost-nometering": 0.004,
    "prosody": 0.0002,
    "ejabberd": 0.004,
}


SETTLE_CPU = 0.10
SETTLE_MAX_S = 10.0


async def settle(server: Server) -> float:
    """Wait until the fresh server uses under 10 % of a CPU over half a second (start-up
    work done: imhost serve's web app and worker need about a second), at most 10 s; return
    the seconds waited."""
    t0 = time.monotonic()
    prev = server.cpu_times()[0]
    while time.monotonic() - t0 < SETTLE_MAX_S:
        await asyncio.sleep(0.5)
        cur = server.cpu_times()[0]
        if cur - prev < SETTLE_CPU * 0.5:
            break
        prev = cur
    return time.monotonic() - t0


def users(n: int, offset: int = 0) -> list[str]:
    return [f"u{i}" for i in range(offset, offset + n)]


def loadavg1() -> float:
    return os.getloadavg()[0]


def rotated(names: list[str], turn: int) -> list[str]:
    if not names:
        return names
    k = turn % len(names)
    return names[k:] + names[:k]


async def login_round(server: Server, count: int, mech: str) -> dict[str, float]:
    """``count`` logins, 10 in flight: rate, server CPU per login and share, waits."""
    names = [f"u{i % server.users}" for i in range(count)]
    if mech != "PLAIN":
        SCRAM_CACHE.update(server.scram_cache)
        if not server.scram_cache:
            # salts made by this process: the client derives its keys once, unmeasured
            warm, _ = await connect_many(
                "127.0.0.1", server.port, users(server.users), DOMAIN, PASSWORD, 10, mech
            )
            for c in warm:
                c.close()
            await asyncio.sleep(0.5)
    load = loadavg1()
    run0, wait0 = server.cpu_times()
    gen0 = time.process_time()
    conns, elapsed = await connect_many(
        "127.0.0.1", server.port, names, DOMAIN, PASSWORD, in_flight=10, mech=mech, resources=True
    )
    run1, wait1 = server.cpu_times()
    gen = time.process_time() - gen0
    for c in conns:
        c.close()
    n = max(1, len(conns))
    return {
        "loadavg1": load,
        "rate": len(conns) / elapsed,
        "cpu_ms": (run1 - run0) / n * 1000,
        "server_cpu": (run1 - run0) / elapsed,
        "server_wait": (wait1 - wait0) / elapsed,
        "gen_cpu": gen / elapsed,
    }


async def message_step(server: Server, n_users: int, rate: int, duration: float) -> StepResult:
    """Log ``n_users`` in (half send, half receive), then one step at ``rate``."""
    conns, _ = await connect_many(
        "127.0.0.1", server.port, users(n_users), DOMAIN, PASSWORD, in_flight=50
    )
    try:
        half = len(conns) // 2
        await asyncio.sleep(1.0)
        load = loadavg1()
        run0, wait0 = server.cpu_times()
        res = await run_step(conns[:half], conns[half : 2 * half], DOMAIN, rate, duration)
        run1, wait1 = server.cpu_times()
    finally:
        for c in conns:
            c.close()
    res.server_cpu = (run1 - run0) / res.duration
    res.server_wait = (wait1 - wait0) / res.duration
    res.server_us_per_msg = (run1 - run0) / max(1, res.sent) * 1e6
    res.loadavg1 = load
    return res


async def idle_measurement(
    server: Server, settle: float, n_idle: int, wait: float
) -> dict[str, float]:
    """With no client: RSS ``settle`` s after start, and the CPU share over the second half of
    that time (start-up work left out); then RSS per idle authenticated connection."""
    load = loadavg1()
    await asyncio.sleep(settle / 2)
    run0, wait0 = server.cpu_times()
    t0 = time.perf_counter()
    await asyncio.sleep(settle / 2)
    run1, wait1 = server.cpu_times()
    elapsed = time.perf_counter() - t0
    base = server.rss_kb()
    names = [f"u{i % server.users}" for i in range(n_idle)]
    gen0 = time.process_time()
    conns, took = await connect_many(
        "127.0.0.1", server.port, names, DOMAIN, PASSWORD, in_flight=50, resources=True
    )
    gen = time.process_time() - gen0
    await asyncio.sleep(wait)
    after = server.rss_kb()
    for c in conns:
        c.close()
    return {
        "loadavg1": load,
        "idle_rss_kb": base,
        "idle_cpu": (run1 - run0) / elapsed,
        "server_wait": (wait1 - wait0) / elapsed,
        "kb_per_idle_conn": (after - base) / max(1, len(conns)),
        "gen_cpu": gen / took,
    }


class Bench:
    """Fresh processes, turns and the record of every measurement."""

    def __init__(self, args: argparse.Namespace, log: Callable[[str], None]) -> None:
        self.args = args
        self.log = log
        self.names: list[str] = args.servers
        self.results: dict[str, dict[str, Any]] = {
            n: {"server": n, "storage": "", "measurements": [], "errors": []} for n in self.names
        }
        self.start_s: dict[str, list[float]] = {n: [] for n in self.names}
        self.settle_s: dict[str, list[float]] = {n: [] for n in self.names}
        self.start_failures = dict.fromkeys(self.names, 0)
        self.turn = 0

    def order(self, names: list[str]) -> list[str]:
        """This turn's order: rotated by one from the last turn; a server that failed to
        start twice is left out from then on."""
        self.turn += 1
        return rotated([n for n in names if self.start_failures[n] < 2], self.turn)

    @contextlib.asynccontextmanager
    async def fresh(
        self, name: str, hashed: bool = False, settled: bool = True
    ) -> AsyncIterator[Server]:
        """A new process of ``name``, started (and settled unless ``settled`` is off), stopped
        and its files removed at the end."""
        server = (SERVERS | EXTRA_SERVERS)[name](
            DOMAIN, self.args.accounts, PASSWORD, hashed=hashed
        )
        t0 = time.monotonic()
        try:
            try:
                await server.start()
            except Exception as exc:
                self.start_failures[name] += 1
                if self.start_failures[name] == 2:
                    self.log(f"  {name:12s} did not start twice: left out from now on")
                tail = getattr(server, "log_tail", lambda: "")()
                raise RuntimeError(f"{name} did not start: {exc!r} {tail}") from exc
            self.start_s[name].append(time.monotonic() - t0)
            self.results[name]["version"] = server.version
            if settled:
                self.settle_s[name].append(await settle(server))
            yield server
        finally:
            await server.stop()
            server.cleanup()

    def record(self, name: str, what: str, data: dict[str, Any]) -> None:
        self.results[name]["measurements"].append({"what": what, **data})

    def failed(self, name: str, what: str, exc: BaseException) -> None:
        self.log(f"  {name:12s} {what}: FAILED {exc!r}"[:2000])
        self.results[name]["errors"].append(f"{what}: {exc!r}"[:2000])

    # -- the three parts -------------------------------------------------------------------

    async def idle(self) -> None:
        a = self.args
        self.log(f"== idle: {a.idle_start:.0f} s after start, then {a.idle} idle connections")
        for name in self.order(self.names):
            try:
                async with self.fresh(name, settled=False) as server:
                    self.results[name]["storage"] = server.storage
                    out = await idle_measurement(server, a.idle_start, a.idle, a.idle_wait)
            except Exception as exc:
                self.failed(name, "idle", exc)
                continue
            self.results[name]["idle"] = out
            self.record(name, "idle", out)
            self.log(
                f"  {name:12s} idle RSS {out['idle_rss_kb'] / 1024:6.1f} MB, idle CPU "
                f"{out['idle_cpu']:.1%}, {out['kb_per_idle_conn']:.1f} KB per idle connection "
                f"(load {out['loadavg1']:.2f}, waited {out['server_wait']:.0%}, "
                f"gen-cpu {out['gen_cpu']:.0%})"
            )

    async def logins(self) -> None:
        a = self.args
        kinds = [k for k in LOGIN_KINDS if not (a.no_hashed_logins and k[2])]
        for key, mech, hashed, label in kinds:
            self.log(f"== logins/s, {label}, {a.logins} logins 10 in flight, {a.rounds} rounds")
            rounds: dict[str, list[dict[str, float]]] = {n: [] for n in self.names}
            for r in range(a.rounds):
                for name in self.order(self.names):
                    try:
                        async with self.fresh(name, hashed=hashed) as server:
                            out = await login_round(server, a.logins, mech)
                    except Exception as exc:
                        self.failed(name, f"logins {key} round {r + 1}", exc)
                        continue
                    rounds[name].append(out)
                    self.record(name, f"logins {key}", {"round": r + 1, **out})
                    self.log(
                        f"  {name:12s} round {r + 1}: {out['rate']:6.0f} logins/s, server "
                        f"{out['cpu_ms']:.2f} ms CPU/login, CPU {out['server_cpu']:.0%}, "
                        f"waited {out['server_wait']:.0%}, gen-cpu {out['gen_cpu']:.0%}, "
                        f"load {out['loadavg1']:.2f}"
                    )
            for name, outs in rounds.items():
                if not outs:
                    continue
                summary = {
                    "rounds": [o["rate"] for o in outs],
                    "rate": statistics.median(o["rate"] for o in outs),
                    "cpu_ms": statistics.median(o["cpu_ms"] for o in outs),
                }
                self.results[name][key] = summary
                self.log(
                    f"  {name:12s} median {summary['rate']:.0f} logins/s, "
                    f"{summary['cpu_ms']:.2f} ms CPU/login (rounds: "
                    + ", ".join(f"{x:.0f}" for x in summary["rounds"])
                    + ")"
                )

    async def step(self, name: str, rate: int) -> StepResult:
        async with self.fresh(name) as server:
            return await message_step(server, self.args.users, rate, self.args.duration)

    async def messages(self) -> None:
        a = self.args
        self.log(
            f"== messages: {a.users} users, {a.duration:.0f} s per step, each on a fresh process"
        )
        active = list(self.names)
        failures = dict.fromkeys(self.names, 0)
        steps: dict[str, list[StepResult]] = {n: [] for n in self.names}
        for rate in a.rates:
            for name in self.order(active):
                res: StepResult | None = None
                for attempt in (1, 2):
                    try:
                        res = await self.step(name, rate)
                    except Exception as exc:
                        self.failed(name, f"{rate}/s attempt {attempt}", exc)
                        res = None
                    if res is not None:
                        self.log_step(name, res, attempt)
                        self.record(name, "messages", res.__dict__ | {"sustained": res.sustained})
                    if (res is not None and res.sustained) or attempt == 2:
                        break
                    # PEERS.md: near the limit results vary from run to run; repeat once
                    await asyncio.sleep(2)
                if res is not None:
                    steps[name].append(res)
                if res is None or not res.sustained:
                    failures[name] += 1
                    if failures[name] >= 2:
                        self.log(f"  {name:12s} stops here: two failed steps in a row")
                        active.remove(name)
                else:
                    failures[name] = 0
            if not active:
                break
        for name, done in steps.items():
            out = self.results[name]
            out["steps"] = [s.__dict__ | {"sustained": s.sustained} for s in done]
            ok = [s.rate for s in done if s.sustained]
            out["max_sustained"] = max(ok) if ok else 0
            for s in done:
                if s.rate in a.latency_rates:
                    out[f"p50_ms@{s.rate}"] = s.p50_ms
                    out[f"p99_ms@{s.rate}"] = s.p99_ms
                    out[f"us_per_msg@{s.rate}"] = s.server_us_per_msg
                    out[f"sustained@{s.rate}"] = s.sustained

    def log_step(self, name: str, res: StepResult, attempt: int) -> None:
        self.log(
            f"  {name:12s} {res.rate:>6}/s{' (again)' if attempt > 1 else '        '} "
            f"sent {res.sent:>7} recv {res.received_during:>7}/{res.received_total:>7} "
            f"p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:8.2f} ms "
            f"max backlog {max(res.backlog, default=0)} gen-cpu {res.gen_cpu:.0%} "
            f"server-cpu {res.server_cpu:.0%} ({res.server_us_per_msg:.1f} us/msg) "
            f"waited {res.server_wait:.0%} load {res.loadavg1:.2f} "
            f"{'OK' if res.sustained else 'NOT SUSTAINED'}"
        )


def estimate_seconds(args: argparse.Namespace) -> float:
    """A rough wall time: process starts, settling, logins (measured, warm-ups and the
    connections of the idle and message parts), steps, pauses, and a tenth more for repeated
    steps (calibrated on smoke runs on a busy 2-core machine)."""
    total = 0.0
    for name in args.servers:
        start = START_SECONDS[name] + START_PER_ACCOUNT[name] * args.accounts + 1.5
        login = 1 / LOGINS_PER_S[name]
        if name == "imhost-serve":
            total += 2.0 + args.accounts / 250
        total += start + args.idle_start + args.idle * login + args.idle_wait
        total += args.rounds * (start + args.logins * login + 0.5)
        if not args.no_hashed_logins:
            hashed = 1 / 85 if name == "ejabberd" else login  # one PBKDF2 per PLAIN login
            total += args.rounds * (start + args.logins * hashed + 0.5)
            total += args.rounds * (start + args.logins * login + 0.5)
            if name in ("imhost", "imhost-nometering", "ejabberd"):
                total += args.rounds * args.accounts * login
        total += len(args.rates) * (start + args.users * login + 1.0 + args.duration + 1.5)
    return total * 1.1


def ratio(a: float | None, b: float | None, lower_is_better: bool = False) -> str:
    if not a or not b:
        return "n/a"
    return f"{(b / a if lower_is_better else a / b):.2f}x"


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    me = ME if ME in results else names[0]
    others = [n for n in names if n != me]
    print(
        "\n| metric | " + " | ".join(names) + " | " + " | ".join(f"{me}/{n}" for n in others) + " |"
    )
    print("|---" * (1 + len(names) + len(others)) + "|")
    # (label, key, lower is better; None: no ratio, the row describes the conditions)
    rows: list[tuple[str, Any, bool | None]] = [("messages/s sustained", "max_sustained", False)]
    for r in (r for r in args.latency_rates if r in args.rates):
        rows += [
            (f"p50 ms at {r}/s", f"p50_ms@{r}", True),
            (f"p99 ms at {r}/s", f"p99_ms@{r}", True),
            (f"server CPU us/message at {r}/s", f"us_per_msg@{r}", True),
        ]
    rows += [
        ("idle RSS MB (no client)", ("idle", "idle_rss_kb", 1 / 1024), True),
        ("idle CPU % (no client)", ("idle", "idle_cpu", 100), True),
        ("KB per idle connection", ("idle", "kb_per_idle_conn", 1), True),
    ]
    for key, _mech, _hashed, label in LOGIN_KINDS:
        if args.no_hashed_logins and key != "plain":
            continue
        rows += [
            (f"logins/s {label} (median)", (key, "rate", 1), False),
            (f"server ms CPU/login, {label}", (key, "cpu_ms", 1), True),
        ]
    rows += [
        ("load average at measurements (median)", ("_all", "loadavg1", 1), None),
        (
            "server waited for a CPU, % (median, summed over threads)",
            ("_all", "server_wait", 100),
            None,
        ),
        ("generator CPU % (max)", ("_max", "gen_cpu", 100), None),
    ]

    def get(res: dict[str, Any], key: Any) -> Any:
        if not isinstance(key, tuple):
            return res.get(key)
        part, field, scale = key
        if part in ("_all", "_max"):
            vals = [m[field] for m in res.get("measurements", []) if m.get(field) is not None]
            if not vals:
                return None
            return (statistics.median(vals) if part == "_all" else max(vals)) * scale
        v = (res.get(part) or {}).get(field)
        return v * scale if isinstance(v, int | float) else v

    for label, key, lower in rows:
        vals = [get(results[n], key) for n in names]
        cells = [
            "–" if v is None else f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" for v in vals
        ]
        ratios = [
            "" if lower is None else ratio(get(results[me], key), get(results[n], key), lower)
            for n in others
        ]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print(f"\nratios are {me}/peer, > 1 means {me} is better (for lower-is-better rows too)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="any of " + ",".join(SERVERS | EXTRA_SERVERS) + " (default: the first four)",
    )
    p.add_argument("--quick", action="store_true", help="smoke-run preset: " + repr(QUICK))
    p.add_argument("--users", type=int, help="connected in message steps (1,000)")
    p.add_argument("--accounts", type=int, help="accounts on the host (max(users, 1000))")
    p.add_argument("--logins", type=int, help="logins per round (2,000)")
    p.add_argument("--rounds", type=int, help="login rounds per server and kind (3)")
    p.add_argument("--duration", type=float, help="seconds per message step (5)")
    p.add_argument("--rates", help="message steps, messages/s")
    p.add_argument("--latency-rates", help="report p50/p99 at these rates (5000,10000,20000)")
    p.add_argument(
        "--no-hashed-logins",
        action="store_true",
        help="skip the logins against SCRAM-stored passwords",
    )
    p.add_argument("--idle", type=int, help="idle connections for RSS per connection (4,000)")
    p.add_argument("--idle-wait", type=float, help="seconds before reading their RSS (15)")
    p.add_argument("--idle-start", type=float, help="seconds idle after start (15)")
    p.add_argument("--out", default="bench/results/xmpp.json")
    args = p.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in args.servers if s not in SERVERS | EXTRA_SERVERS]
    if unknown:
        p.error(f"unknown servers {unknown}; choose from {', '.join(SERVERS | EXTRA_SERVERS)}")
    args.rates = [int(r) for r in args.rates.split(",")]
    args.latency_rates = [int(r) for r in args.latency_rates.split(",")]
    if args.accounts is None:
        args.accounts = args.users if args.quick else max(args.users, 1000)
    if args.accounts < args.users:
        p.error("--accounts must be at least --users")
    return args


async def main() -> None:
    args = parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.freeze()

    def log(msg: str) -> None:
        print(msg, flush=True)

    est = estimate_seconds(args)
    log(
        f"servers {', '.join(args.servers)}; {args.accounts} accounts, {args.users} users, "
        f"rates {args.rates}; estimated wall time {est / 60:.0f} min ({est:.0f} s); "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    t0 = time.monotonic()
    bench = Bench(args, log)
    prepared: list[type[Server]] = []
    try:
        for name in args.servers:
            cls = (SERVERS | EXTRA_SERVERS)[name]
            t1 = time.monotonic()
            cls.prepare(DOMAIN, args.accounts, PASSWORD)
            prepared.append(cls)
            if time.monotonic() - t1 > 0.5:
                log(f"  {name}: prepared in {time.monotonic() - t1:.1f} s")
        await bench.idle()
        await bench.logins()
        await bench.messages()
    finally:
        for cls in prepared:
            cls.release()
    wall = time.monotonic() - t0
    results = bench.results
    meta = {
        "argv": sys.argv,
        "args": dict(vars(args)),
        "wall_s": wall,
        "estimate_s": est,
        "loadavg_end": os.getloadavg(),
        "start_s_median": {n: statistics.median(v) for n, v in bench.start_s.items() if v},
        "settle_s_median": {n: statistics.median(v) for n, v in bench.settle_s.items() if v},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results | {"_meta": meta}, indent=2, default=str))
    print_table(results, args)
    log(
        f"\nwall time {wall / 60:.1f} min (estimated {est / 60:.1f}); start-up median: "
        + ", ".join(f"{n} {s:.1f} s" for n, s in meta["start_s_median"].items())
        + "; settling: "
        + ", ".join(f"{n} {s:.1f} s" for n, s in meta["settle_s_median"].items())
        + f"; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    errors = {n: r["errors"] for n, r in results.items() if r["errors"]}
    if errors:
        log(f"errors: {json.dumps(errors, indent=1)}")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
