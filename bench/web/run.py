"""Benchmark: slow clients and a CSV import against ``imhost serve --demo``, while another
tenant works and the engine meters usage.

    python3 bench/web/run.py
    python3 bench/web/run.py --slow 40 --csv-rows 2000 --seconds 30
    PYTHONPATH=/work/main/src python3 bench/web/run.py --label main   # another tree

Starts ``imhost serve --demo`` as users run it (its own SQLite in a temporary data directory,
free loopback ports; ``--postgres URL`` runs it on a scratch PostgreSQL database instead) and,
for ``--seconds``:

- holds ``--slow`` clients that post a sign-in form one byte every half second (never done);
- imports ``--csv-rows`` XMPP accounts into the demo service as its owner (one request);
- meanwhile a second customer (signed up for the run) reads and renames its organization
  in a loop: p50/p99/max latency and errors of those requests;
- and the demo account alice sends bob a message every half second over XMPP: the flush lag
  is the time from sending a message until the database holds its usage (``SUM(quantity)``
  of ``messages`` reaches the count sent; the engine hands usage over every second).

Prints the figures, the load (slow clients, import rows and duration) and the machine's load
average. Loopback only; every count and wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xmpp"))

from loadgen import connect_user

PASSWORD = "bench-tenant violet harbour 1987"
XMPP_PASSWORD = "violet-tundra-harbour-1987"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    c2s_port: int
    data_dir: Path
    database_url: str
    log: Path
    env: dict[str, str]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_server(tmp: Path, postgres: str | None) -> Server:
    http_port, c2s, direct = free_port(), free_port(), free_port()
    data_dir = tmp / "data"
    env = {
        **os.environ,
        "IMHOST_DATA_DIR": str(data_dir),
        "IMHOST_HTTP_HOST": "127.0.0.1",
        "IMHOST_HTTP_PORT": str(http_port),
        "IMHOST_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "IMHOST_XMPP__BIND": "127.0.0.1",
        "IMHOST_XMPP__C2S_PORT": str(c2s),
        "IMHOST_XMPP__C2S_DIRECT_TLS_PORT": str(direct),
        # Loopback benchmark: SASL PLAIN without TLS, as bench/xmpp does.
        "IMHOST_XMPP__REQUIRE_ENCRYPTION": "false",
        "IMHOST_XMPP__ALLOW_PLAIN_WITHOUT_TLS": "true",
    }
    database_url = f"sqlite:///{data_dir / 'imhost.db'}"
    if postgres:
        base = make_url(postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "imhost_bench_web" WITH (FORCE)'))
            conn.execute(text('CREATE DATABASE "imhost_bench_web"'))
        admin.dispose()
        database_url = base.set(database="imhost_bench_web").render_as_string(hide_password=False)
        env["IMHOST_DATABASE_URL"] = database_url
    log = tmp / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from imhost.cli.main import app; app()", "serve", "--demo"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"imhost serve exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            if ready and (data_dir / "demo-logins.json").exists():
                break
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("imhost serve did not become ready in 120 s")
    return Server(proc, url, c2s, data_dir, database_url, log, env)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Series:
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.seconds:
            return f"no samples, {len(self.errors)} errors"
        ms = [s * 1000 for s in self.seconds]
        return (
            f"n={len(ms)} p50={statistics.median(ms):.0f} ms p99={pct(ms, 99):.0f} ms "
            f"max={max(ms):.0f} ms errors={len(self.errors)}"
        )


def sign_in(url: str, email: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=600)  # a 2,000-row import on a busy machine
    resp = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    resp.raise_for_status()
    client.headers["X-CSRF-Token"] = resp.json()["csrf_token"]
    return client


SEED_OTHER_TENANT = """
import sys
from imhost.accounts import service as accounts
from imhost.config import load_settings
from imhost.kit.clock import SystemClock
from imhost.runtime import build_runtime

data_dir, email, password = sys.argv[1:4]
runtime = build_runtime(load_settings(data_dir=data_dir), clock=SystemClock())
with runtime.session_factory() as session:
    user = accounts.create_user(
        session, runtime.clock, email=email, name="Other Owner", email_verified=True
    )
    runtime.auth.set_password_directly(session, user, password)
    accounts.create_organization(session, runtime.clock, name="Other Tenant", owner=user)
    session.commit()
"""


def other_tenant_client(server: Server) -> tuple[httpx.Client, str]:
    """A second customer (created with imhost's own services while the server runs), signed
    in before the load starts."""
    email = "owner@other-tenant.example.com"
    for attempt in range(5):  # a server that holds the write lock refuses it now and then
        seeded = subprocess.run(
            [sys.executable, "-c", SEED_OTHER_TENANT, str(server.data_dir), email, PASSWORD],
            check=False,
            env=server.env,
            capture_output=True,
        )
        if seeded.returncode == 0:
            break
        if attempt == 4:
            raise RuntimeError(f"could not create the other customer:\n{seeded.stderr[-2000:]!r}")
        time.sleep(2)
    client = sign_in(server.url, email, PASSWORD)
    org_id = client.get("/api/v1/me").json()["organizations"][0]["id"]
    return client, org_id


def other_tenant(client: httpx.Client, org_id: str, stop: threading.Event, out: Series) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        for method, body in (("GET", None), ("PATCH", {"name": f"Other Tenant {n}"})):
            started = time.monotonic()
            try:
                resp = client.request(method, f"/api/v1/orgs/{org_id}", json=body)
            except httpx.HTTPError as exc:
                out.errors.append(f"{method}: {exc!r}")
                continue
            out.seconds.append(time.monotonic() - started)
            if resp.status_code >= 300:
                out.errors.append(f"{method}: {resp.status_code} {resp.text[:120]}")
        time.sleep(0.1)
    client.close()


def slow_clients(server: Server, count: int, stop: threading.Event) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(
            b"POST /portal/sign-in HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n"
            b"email="
        )
        socks.append(s)
    while not stop.wait(0.5):
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(b"a")
    for s in socks:
        s.close()


def csv_import(server: Server, rows: int, result: dict[str, Any]) -> None:
    logins = json.loads((server.data_dir / "demo-logins.json").read_text())
    client = sign_in(server.url, "owner@demo.example.com", logins["owner@demo.example.com"])
    services = client.get("/api/v1/orgs/demo/services").json()["items"]
    path = f"/api/v1/orgs/demo/services/{services[0]['id']}/accounts/import"
    body = "".join(f"bench{i},{XMPP_PASSWORD}-{i}\n" for i in range(rows))
    started = time.monotonic()
    resp = client.post(path, content=body, headers={"Content-Type": "text/csv"})
    result["seconds"] = time.monotonic() - started
    result["status"] = resp.status_code
    if resp.status_code == 200:
        result["created"] = resp.json()["created"]
        result["refused"] = resp.json()["refused"]
    else:
        result["error"] = resp.text[:300]
    client.close()


def messages_metered(database_url: str) -> int:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            value = conn.execute(
                text("SELECT SUM(quantity) FROM usage_records WHERE metric = 'messages'")
            ).scalar()
        return int(value or 0)
    finally:
        engine.dispose()


async def usage_flush(
    server: Server, ready: threading.Event, stop: threading.Event, out: Series
) -> None:
    """alice -> bob every 0.5 s; lag = time until the database counts the message. The two
    sign in before the load starts (``ready``)."""
    logins = json.loads((server.data_dir / "demo-logins.json").read_text())
    alice_jid = next(j for j in logins if j.startswith("alice@"))
    bob_jid = next(j for j in logins if j.startswith("bob@"))
    domain = alice_jid.split("@", 1)[1]
    try:
        alice = await connect_user("127.0.0.1", server.c2s_port, "alice", domain, logins[alice_jid])
        bob = await connect_user("127.0.0.1", server.c2s_port, "bob", domain, logins[bob_jid])
    except (OSError, ConnectionError) as exc:
        out.errors.append(f"XMPP sign-in failed: {exc}"[:300])
        ready.set()
        return
    ready.set()
    engine = create_engine(server.database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    base = await asyncio.to_thread(messages_metered, server.database_url)
    sent: list[float] = []
    seen = 0
    try:
        while not stop.is_set() or (seen < len(sent) and time.monotonic() - sent[seen] < 60):
            if not stop.is_set():
                alice.send(
                    f"<message to='{bob_jid}' type='chat'><body>{time.perf_counter_ns()} 0"
                    "</body></message>"
                )
                sent.append(time.monotonic())
            await asyncio.sleep(0.5)

            def count() -> int:
                with engine.connect() as conn:
                    value = conn.execute(
                        text("SELECT SUM(quantity) FROM usage_records WHERE metric = 'messages'")
                    ).scalar()
                return int(value or 0) - base

            metered = await asyncio.to_thread(count)
            now = time.monotonic()
            while seen < min(metered, len(sent)):
                out.seconds.append(now - sent[seen])
                seen += 1
        if seen < len(sent):
            out.errors.append(f"{len(sent) - seen} of {len(sent)} messages never metered")
    finally:
        alice.close()
        bob.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=40, help="slow clients (at most 500)")
    parser.add_argument("--csv-rows", type=int, default=2000, help="rows imported (at most 2,000)")
    parser.add_argument("--seconds", type=float, default=30, help="how long (at most 300)")
    parser.add_argument("--postgres", help="run on a scratch PostgreSQL database at this URL")
    parser.add_argument("--label", default="", help="a name for this run in the output")
    args = parser.parse_args()
    slow = max(0, min(args.slow, 500))
    rows = max(1, min(args.csv_rows, 2000))
    seconds = max(5.0, min(args.seconds, 300.0))
    import imhost

    with tempfile.TemporaryDirectory(prefix="imhost-bench-web-") as tmp_dir:
        server = start_server(Path(tmp_dir), args.postgres)
        try:
            tenant, usage = Series(), Series()
            imported: dict[str, Any] = {}
            stop = threading.Event()
            xmpp_ready = threading.Event()
            metering = threading.Thread(
                target=lambda: asyncio.run(usage_flush(server, xmpp_ready, stop, usage))
            )
            metering.start()
            xmpp_ready.wait(60)  # alice and bob are online before the load starts
            other, other_org = other_tenant_client(server)
            threads = [
                metering,
                threading.Thread(target=slow_clients, args=(server, slow, stop)),
                threading.Thread(target=other_tenant, args=(other, other_org, stop, tenant)),
            ]
            for t in threads[1:]:
                t.start()
            time.sleep(1.0)  # the slow clients are in; now the import
            importer = threading.Thread(target=csv_import, args=(server, rows, imported))
            importer.start()
            time.sleep(seconds)
            stop.set()
            importer.join(timeout=300)
            for t in threads:
                t.join(timeout=90)
            load = os.getloadavg()
        finally:
            server.stop()
        log_lines = server.log.read_text(errors="replace").splitlines()
        locked = [i for i, line in enumerate(log_lines) if "database is locked" in line]
        if locked:
            first = max(0, locked[0] - 25)
            print("\n".join(log_lines[first : locked[0] + 3]))
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"imhost from {Path(imhost.__file__).parent} {args.label}".rstrip())
    print(
        f"load: {slow} slow form posts held {seconds:.0f} s; CSV import of {rows} rows; "
        f"{backend}; load average {load[0]:.2f} {load[1]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"CSV import:              {imported}")
    print(f"other tenant's requests: {tenant.summary()}")
    for line in tenant.errors[:3]:
        print(f"    {line}")
    print(f"usage flush lag:         {usage.summary()}")
    for line in usage.errors[:3]:
        print(f"    {line}")
    print(f"'database is locked' in the server log: {len(locked)} times")


if __name__ == "__main__":
    main()
