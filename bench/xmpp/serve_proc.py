"""``imhost serve`` as a benchmark subject: a fresh data directory, the 1:1 chat users, the
process pinned to one core, and its CPU and memory read from ``/proc``.

Used by ``bench/xmpp/idle.py`` and ``bench/xmpp/profile_serve.py``. The data directory is
migrated and seeded the way users do it (``imhost serve --demo``'s own seeding), then the
demo service gets ``--users`` more accounts and no message rate limit, as the in-memory
engine has with ``--no-rate-limit``. Loopback only: no TLS, SASL PLAIN allowed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "demo.localhost"
PASSWORD = "violet-tundra-harbour-1987"
PREFIX = "u"

SEED = """
import sys
from sqlalchemy import select
from imhost.cli.demo import seed_demo
from imhost.config import load_settings
from imhost.db.engine import transaction
from imhost.db.migrations import upgrade
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.runtime import build_runtime

data_dir, domain, prefix, password, users = sys.argv[1:6]
settings = load_settings(data_dir=data_dir)
runtime = build_runtime(settings)
upgrade(settings.resolved_database_url)
seed_demo(runtime)
with transaction(runtime.session_factory) as session:
    service = session.scalar(select(HostedService).where(HostedService.domain == domain))
    service.message_rate = None
    service.max_accounts = None
    service.max_connections = None
    service.max_connections_per_account = None
    service.max_offline_messages = 10_000
    for i in range(int(users)):
        hosting.create_account(
            session, runtime.clock, service, username=f"{prefix}{i}", password=password,
            security=settings.security,
        )
runtime.engine.dispose()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one), all threads
    (``/proc/<pid>/task/*/schedstat``)."""
    run = wait = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run / 1e9, wait / 1e9


def loop_cpu_seconds(pid: int) -> float:
    """Seconds on a CPU of the main thread (the event loop) alone."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    http_port: int
    c2s_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def environment(data_dir: Path, http_port: int, c2s: int, direct: int) -> dict[str, str]:
    return {
        **os.environ,
        "IMHOST_DATA_DIR": str(data_dir),
        "IMHOST_HTTP_HOST": "127.0.0.1",
        "IMHOST_HTTP_PORT": str(http_port),
        "IMHOST_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "IMHOST_XMPP__BIND": "127.0.0.1",
        "IMHOST_XMPP__C2S_PORT": str(c2s),
        "IMHOST_XMPP__C2S_DIRECT_TLS_PORT": str(direct),
        "IMHOST_XMPP__REQUIRE_ENCRYPTION": "false",
        "IMHOST_XMPP__ALLOW_PLAIN_WITHOUT_TLS": "true",
        "IMHOST_XMPP__UNAUTHENTICATED_PER_ADDRESS": "100000",
        "IMHOST_XMPP__CONNECTION_RATE_PER_ADDRESS": "100000",
        "IMHOST_XMPP__CONNECTION_BURST_PER_ADDRESS": "100000",
        "IMHOST_XMPP__NEGOTIATION_TIMEOUT_SECONDS": "60",
    }


def seed(data_dir: Path, users: int) -> None:
    """Migrate and seed ``data_dir`` (demo data and ``users`` accounts u0, u1, ...)."""
    env = environment(data_dir, free_port(), free_port(), free_port())
    subprocess.run(
        [sys.executable, "-c", SEED, str(data_dir), DOMAIN, PREFIX, PASSWORD, str(users)],
        env=env,
        check=True,
    )


SERVE = "from imhost.cli.main import app; app()"


def start(
    data_dir: Path,
    *,
    core: str = "0",
    extra_env: dict[str, str] | None = None,
    python: tuple[str, ...] = ("-c", SERVE),
    timeout: float = 120,
) -> ServeProcess:
    """``taskset -c <core> imhost serve --demo`` on a seeded ``data_dir`` (``python`` the
    interpreter's arguments before ``serve --demo``); returns once the banner is printed and
    the XMPP port accepts connections."""
    http_port, c2s, direct = free_port(), free_port(), free_port()
    env = {**environment(data_dir, http_port, c2s, direct), **(extra_env or {})}
    log = data_dir / "serve.log"
    cmd = [sys.executable, *python, "serve", "--demo"]
    if core:
        cmd = ["taskset", "-c", core, *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = ServeProcess(proc, data_dir, http_port, c2s, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"imhost serve exited:\n{log.read_text()[-3000:]}")
        if b"imhost is running" in log.read_bytes():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", c2s), 1):
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"imhost serve did not start in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
