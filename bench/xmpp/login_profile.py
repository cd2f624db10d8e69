"""Logins per second of the product (``imhost serve`` on SQLite) or the in-memory engine.

Seeds a fresh data directory with a staff admin, one hosted service and ``--users`` XMPP
accounts (4,096 PBKDF2 iterations, as the product stores them), starts the server pinned to
core 0 without TLS, and logs in ``--logins`` times with 10 in flight for each mechanism,
``--rounds`` times (the client keeps its SCRAM salted passwords, as real clients do)::

    taskset -c 1 python3 bench/xmpp/login_profile.py --server serve --mech PLAIN,SCRAM-SHA-1
    taskset -c 1 python3 bench/xmpp/login_profile.py --server memory

``--fresh``: every round on a fresh server process (settled first, as ``run.py`` measures),
so every account's first login in the process is measured; the default keeps one process.

``--py-spy FILE``: record the server with py-spy during the measured rounds (a flame graph,
or ``--py-spy-format speedscope``). Run with ``PYTHONPATH=src`` to measure a checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import connect_many
from servers import cpu_times, free_port, wait_port

DOMAIN = "bench.local"
PASSWORD = "violet-tundra-harbour-1987"
SERVER_CORE = "0"


def seed(data_dir: Path, users: int) -> None:
    """A fresh database: migrations, an admin, one service and ``users`` accounts."""
    from imhost.accounts import service as accounts
    from imhost.accounts.models import Organization, StaffRole
    from imhost.config import Settings
    from imhost.db.engine import transaction
    from imhost.db.migrations import upgrade
    from imhost.hosting import service as hosting
    from imhost.runtime import build_runtime

    settings = Settings(data_dir=data_dir)
    upgrade(settings.resolved_database_url)
    runtime = build_runtime(settings)
    with transaction(runtime.session_factory) as session:
        admin = accounts.create_user(
            session,
            runtime.clock,
            email="admin@example.com",
            name="Admin",
            staff_role=StaffRole.ADMIN,
            email_verified=True,
        )
        runtime.auth.set_password_directly(session, admin, PASSWORD)
        org = Organization(name="Bench", slug="bench", created_at=runtime.clock.now())
        session.add(org)
        session.flush()
        service = hosting.create_service(
            session, runtime.clock, org, base_domain="bench.local", domain=DOMAIN
        )
        service.message_rate = None
        service.max_connections_per_account = None
        for i in range(users):
            hosting.create_account(
                session,
                runtime.clock,
                service,
                username=f"u{i}",
                password=PASSWORD,
                security=settings.security,
            )
    runtime.engine.dispose()


def serve_env(data_dir: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "IMHOST_DATA_DIR": str(data_dir),
            "IMHOST_HTTP_PORT": str(free_port()),
            "IMHOST_XMPP__C2S_PORT": str(port),
            "IMHOST_XMPP__C2S_DIRECT_TLS_PORT": str(free_port()),
            "IMHOST_XMPP__REQUIRE_ENCRYPTION": "false",
            "IMHOST_XMPP__ALLOW_PLAIN_WITHOUT_TLS": "true",
            "IMHOST_XMPP__DIRECT_TLS_ENABLED": "false",
            "IMHOST_XMPP__UNAUTHENTICATED_PER_ADDRESS": "100000",
            "IMHOST_XMPP__CONNECTION_RATE_PER_ADDRESS": "100000",
            "IMHOST_XMPP__CONNECTION_BURST_PER_ADDRESS": "100000",
            "IMHOST_XMPP__NEGOTIATION_TIMEOUT_SECONDS": "60",
        }
    )
    return env


def start_server(
    kind: str, data_dir: Path, users: int, port: int, modules: str = "roster,presence,disco,ping"
) -> subprocess.Popen[bytes]:
    if kind == "serve":
        template = data_dir.parent / (data_dir.name + ".seeded")
        if not template.exists():
            template.mkdir(parents=True)
            seed(template, users)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.copytree(template, data_dir)
        cmd = [sys.executable, "-m", "imhost.cli.main", "serve"]
        env = serve_env(data_dir, port)
    else:
        cmd = [
            sys.executable,
            "-m",
            "imhost.xmpp",
            *("--domain", DOMAIN, "--users", str(users), "--user-prefix", "u"),
            *("--password", PASSWORD, "--port", str(port), "--tls-port", str(free_port())),
            *("--no-tls", "--plain-without-tls", "--no-rate-limit", "--uvloop", "--log", "WARNING"),
            *("--cert-dir", str(data_dir / "tls"), "--modules", modules),
        ]
        env = dict(os.environ)
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir / "server.log", "wb"),
    )


def main_thread_cpu(pid: int) -> float:
    """Seconds on a CPU of the server's main thread (its event loop)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def thread_cpu(pid: int) -> dict[str, float]:
    """Seconds on a CPU per thread of the server, by thread id and name."""
    out: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            run = int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[f"{task}:{name}"] = run / 1e9
    return out


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches (voluntary and not) per thread of the server, by thread id and name."""
    out: dict[str, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[f"{task}:{name}"] = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
    return out


LAST_SWITCHES: dict[str, int] = {}
"""Context switches per thread of the server in the last round."""

LAST_THREADS: dict[str, float] = {}
"""CPU seconds per thread of the server in the last round."""


LAST_MAIN_SHARE: list[float] = []
"""The event loop thread's share of the server's CPU in the last round."""


async def one_round(port: int, pid: int, users: int, count: int, mech: str) -> tuple[float, float]:
    """``count`` logins, 10 in flight: (logins/s, server CPU ms per login)."""
    names = [f"u{i % users}" for i in range(count)]
    run0, _ = cpu_times(pid)
    main0 = main_thread_cpu(pid)
    threads0 = thread_cpu(pid)
    switches0 = thread_switches(pid)
    conns, elapsed = await connect_many(
        "127.0.0.1", port, names, DOMAIN, PASSWORD, in_flight=10, mech=mech, resources=True
    )
    run1, _ = cpu_times(pid)
    main1 = main_thread_cpu(pid)
    threads1 = thread_cpu(pid)
    switches1 = thread_switches(pid)
    LAST_SWITCHES.clear()
    LAST_SWITCHES.update({t: c - switches0.get(t, 0) for t, c in switches1.items()})
    LAST_THREADS.clear()
    LAST_THREADS.update({t: c - threads0.get(t, 0.0) for t, c in threads1.items()})
    LAST_MAIN_SHARE[:] = [(main1 - main0) / max(1e-9, run1 - run0)]
    for c in conns:
        c.close()
    await asyncio.sleep(1.5)  # closed sessions gone, batches flushed
    return len(conns) / elapsed, (run1 - run0) / max(1, len(conns)) * 1000


async def settle(pid: int) -> None:
    """Until the fresh server uses under 10 % of a CPU over half a second (at most 10 s)."""
    t0 = time.monotonic()
    prev = cpu_times(pid)[0]
    while time.monotonic() - t0 < 10:
        await asyncio.sleep(0.5)
        cur = cpu_times(pid)[0]
        if cur - prev < 0.05:
            return
        prev = cur


def start_spy(args: argparse.Namespace, pid: int, suffix: str) -> subprocess.Popen[bytes]:
    """py-spy on the server; in ``--fresh`` mode one file per round (``FILE.<mech>-<n>``)."""
    output = f"{args.py_spy}.{suffix}" if suffix else args.py_spy
    return subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(pid), "--output", output),
            *("--format", args.py_spy_format, "--rate", "200", "--threads", "--gil"),
        ],
        stdout=subprocess.DEVNULL,
    )


async def fresh_rounds(args: argparse.Namespace, data_dir: Path) -> None:
    """Every round on a fresh process: the salts of ``serve`` come from the seeded database
    (the client derives its keys once, in an unmeasured round on a first process); the
    in-memory engine makes its salts per process, so it gets an unmeasured warm-up round."""
    warmed: set[str] = set()
    for mech in args.mech.split(","):
        cpus: list[float] = []
        rates: list[float] = []
        while len(cpus) < args.rounds:
            port = free_port()
            proc = start_server(args.server, data_dir, args.users, port, args.modules)
            try:
                await wait_port(port, timeout=120)
                if mech != "PLAIN" and (args.server == "memory" or mech not in warmed):
                    await one_round(port, proc.pid, args.users, args.users, mech)
                    if args.server != "memory":
                        warmed.add(mech)
                        continue
                await settle(proc.pid)
                spy = start_spy(args, proc.pid, f"{mech}-{len(cpus)}") if args.py_spy else None
                rate, cpu_ms = await one_round(port, proc.pid, args.users, args.logins, mech)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                rates.append(rate)
                cpus.append(cpu_ms)
                print(
                    f"{args.server:6s} {mech:12s} {rate:7.0f} logins/s  {cpu_ms:.2f} ms CPU"
                    f" ({LAST_MAIN_SHARE[0]:.0%} event loop thread)"
                    f"  (fresh process, load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                if args.threads:
                    busiest = sorted(LAST_THREADS.items(), key=lambda t: -t[1])[:6]
                    n = max(1, args.logins)
                    print(
                        "   ",
                        ", ".join(
                            f"{t} {c / n * 1000:.3f} ms ({LAST_SWITCHES.get(t, 0)} switches)"
                            for t, c in busiest
                        ),
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        print(f"{args.server:6s} {mech:12s} CPU ms: {', '.join(f'{c:.2f}' for c in cpus)}")


async def measure(args: argparse.Namespace, data_dir: Path) -> None:
    if args.fresh:
        await fresh_rounds(args, data_dir)
        return
    port = free_port()
    proc = start_server(args.server, data_dir, args.users, port, args.modules)
    spy: subprocess.Popen[bytes] | None = None
    try:
        await wait_port(port, timeout=120)
        await asyncio.sleep(1.0)
        mechs = args.mech.split(",")
        for mech in mechs:
            if mech != "PLAIN":
                # the client derives its salted passwords once (its cost, not the server's)
                await one_round(port, proc.pid, args.users, args.users, mech)
        if args.py_spy:
            spy = start_spy(args, proc.pid, "")
            await asyncio.sleep(1.0)
        for mech in mechs:
            rates = []
            for _ in range(args.rounds):
                rate, cpu_ms = await one_round(port, proc.pid, args.users, args.logins, mech)
                rates.append(rate)
                print(f"{args.server:6s} {mech:12s} {rate:7.0f} logins/s  {cpu_ms:.2f} ms CPU")
            print(f"{args.server:6s} {mech:12s} rounds: {', '.join(f'{r:.0f}' for r in rates)}")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", choices=("serve", "memory"), default="serve")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--logins", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mech", default="PLAIN,SCRAM-SHA-1")
    p.add_argument("--fresh", action="store_true", help="every round on a fresh process")
    p.add_argument("--threads", action="store_true", help="CPU per login of the busiest threads")
    p.add_argument(
        "--modules",
        default="roster,presence,disco,ping",
        help="the in-memory engine's modules (run.py's four by default; 'all': imhost serve's)",
    )
    p.add_argument("--py-spy", default="", help="record the server into this file")
    p.add_argument("--py-spy-format", default="flamegraph")
    p.add_argument("--data-dir", default="", help="default: a fresh temporary directory")
    args = p.parse_args()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="imhost-logins-"))
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    started = time.monotonic()
    try:
        asyncio.run(measure(args, data_dir))
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(data_dir.parent / (data_dir.name + ".seeded"), ignore_errors=True)
    print(f"took {time.monotonic() - started:.0f} s; {os.getloadavg()[0]:.2f} load")


if __name__ == "__main__":
    main()
