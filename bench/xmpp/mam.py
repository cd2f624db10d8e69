"""Messages per second with the message archive (XEP-0313) on and off, on the in-memory
engine (``python -m imhost.xmpp``) and on ``imhost serve`` (SQLite, metering on), side by
side: the same 1:1 chat load as ``profile_serve.py`` (half the users send to the other half,
SASL PLAIN without TLS on loopback, no rate limit), one fresh process per server and setting.

    taskset -c 1 python3 bench/xmpp/mam.py                           # 4 runs, 2000/s, 10 s
    taskset -c 1 python3 bench/xmpp/mam.py --rates 2000 5000 --seconds 15 --users 1000

"MAM off" is the same server without the ``mam`` module (the in-memory engine's
``--modules``; for ``imhost serve`` the module is taken out of ``DEFAULT_MODULES`` before the
app starts); "MAM on" archives every message twice (sender and recipient), written in
batches. Each server is pinned to core 0; run this generator on core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_proc
from profile_serve import Memory, Serve, Subject, measure

from imhost.xmpp.modules.defaults import DEFAULT_MODULES

SERVE_WITHOUT_MAM = (
    "from imhost.xmpp.modules import defaults\n"
    "defaults.DEFAULT_MODULES[:] = [m for m in defaults.DEFAULT_MODULES if m.name != 'mam']\n"
    "from imhost.cli.main import app\n"
    "app()\n"
)


class ServeWithoutMam(Serve):
    name = "imhost serve"

    def __init__(self, data_dir: Path) -> None:
        self.profile = None
        self.proc = serve_proc.start(data_dir, python=("-c", SERVE_WITHOUT_MAM), timeout=300)
        self.pid = self.proc.pid
        self.port = self.proc.c2s_port


class MemoryModules(Memory):
    """The in-memory engine with the default modules, or without ``mam``."""

    def __init__(self, users: int, tmp: Path, mam: bool) -> None:
        names = [m.name for m in DEFAULT_MODULES if mam or m.name != "mam"]
        self.port = serve_proc.free_port()
        cmd = [
            "taskset", "-c", "0", sys.executable, "-m", "imhost.xmpp",
            "--domain", serve_proc.DOMAIN, "--users", str(users),
            "--user-prefix", serve_proc.PREFIX, "--password", serve_proc.PASSWORD,
            "--port", str(self.port), "--tls-port", str(serve_proc.free_port()),
            "--no-tls", "--plain-without-tls", "--no-rate-limit", "--uvloop",
            "--cert-dir", str(tmp / "tls"), "--log", "WARNING", "--modules", ",".join(names),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise RuntimeError(f"python -m imhost.xmpp did not start: {line!r}")
        self.pid = self.proc.pid


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--rates", type=int, nargs="+", default=[2000])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--only", choices=["serve", "memory"], default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mam-") as tmp:
        tmp_path = Path(tmp)
        runs: list[tuple[str, object]] = []
        if args.only in (None, "memory"):
            runs.append(("off", lambda: MemoryModules(args.users, tmp_path, mam=False)))
            runs.append(("on", lambda: MemoryModules(args.users, tmp_path, mam=True)))
        if args.only in (None, "serve"):
            # a fresh copy of the seeded data for each run: the archive starts empty
            seed = tmp_path / "seed"
            serve_proc.seed(seed, args.users)
            for mam in ("off", "on"):
                data = tmp_path / f"data-{mam}"
                subprocess.run(["cp", "-a", str(seed), str(data)], check=True)
                if mam == "off":
                    runs.append((mam, lambda data=data: ServeWithoutMam(data)))
                else:
                    runs.append((mam, lambda data=data: Serve(data, None)))
        for mam, make in runs:
            subject: Subject = make()  # type: ignore[operator]
            threads: dict[int, float] = {}
            try:
                results = asyncio.run(
                    measure(subject, args.users, args.rates, args.seconds, threads)
                )
            finally:
                subject.stop()
            for r in results:
                load = os.getloadavg()
                print(
                    f"{subject.name:17s} MAM {mam:3s} {r.rate:>6}/s sent {r.sent} "
                    f"received {r.received_total} p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms "
                    f"server {r.server_us_per_msg:.1f} us/msg ({r.server_cpu:.0%} of a core, "
                    f"waited {r.server_wait:.0%}) gen-cpu {r.gen_cpu:.0%} "
                    f"{'sustained' if r.sustained else 'NOT sustained'} "
                    f"load {load[0]:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
