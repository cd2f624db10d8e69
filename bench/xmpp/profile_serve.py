"""The 1:1 chat load on ``imhost serve`` (SQLite, metering on) and on the in-memory engine
(``python -m imhost.xmpp``), side by side: server CPU per message and p99 per rate.

    taskset -c 1 python3 bench/xmpp/profile_serve.py                      # both, 5000 10000
    taskset -c 1 python3 bench/xmpp/profile_serve.py --rates 5000 --seconds 10 --only serve
    taskset -c 1 python3 bench/xmpp/profile_serve.py --only serve --profile /tmp/serve.prof

Each server is pinned to core 0 (``taskset -c 0``) and gets the same ``--users`` accounts
(half send, half receive, in fixed pairs), SASL PLAIN without TLS on loopback, no message
rate limit; the in-memory engine runs with its benchmark flags (``--uvloop``, metering on)
and the modules ``imhost serve`` loads. The server's CPU is read from
``/proc/<pid>/task/*/schedstat`` around each step, like ``bench/xmpp/run.py``.

``--profile FILE`` runs ``imhost serve`` under cProfile (slower: compare profiles with each
other, not with the unprofiled numbers) and writes the stats to FILE at its end.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_proc
from loadgen import Conn, StepResult, connect_many, run_step

PROFILED = (
    "import cProfile, os, signal, sys\n"
    "profile = cProfile.Profile()\n"
    "def stop(signum, frame):\n"
    "    profile.disable()\n"
    "    profile.dump_stats(os.environ['IMHOST_BENCH_PROFILE'])\n"
    "signal.signal(signal.SIGUSR2, stop)\n"
    "from imhost.cli.main import app\n"
    "profile.enable()\n"
    "app()\n"
)


class Subject(abc.ABC):
    name = ""
    pid = 0
    port = 0

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a wait)."""


class Serve(Subject):
    name = "imhost serve"

    def __init__(self, data_dir: Path, profile: str | None) -> None:
        python: tuple[str, ...] = ("-c", serve_proc.SERVE)
        env: dict[str, str] = {}
        if profile:
            python = ("-c", PROFILED)
            env["IMHOST_BENCH_PROFILE"] = profile
        self.profile = profile
        self.proc = serve_proc.start(data_dir, extra_env=env, python=python, timeout=300)
        self.pid = self.proc.pid
        self.port = self.proc.c2s_port

    def stop(self) -> None:
        if self.profile:
            os.kill(self.pid, signal.SIGUSR2)
            time.sleep(3)
        self.proc.stop()


class Memory(Subject):
    name = "in-memory engine"

    def __init__(self, users: int, tmp: Path) -> None:
        self.port = serve_proc.free_port()
        cmd = [
            "taskset", "-c", "0", sys.executable, "-m", "imhost.xmpp",
            "--domain", serve_proc.DOMAIN, "--users", str(users),
            "--user-prefix", serve_proc.PREFIX, "--password", serve_proc.PASSWORD,
            "--port", str(self.port), "--tls-port", str(serve_proc.free_port()),
            "--no-tls", "--plain-without-tls", "--no-rate-limit", "--uvloop",
            "--cert-dir", str(tmp / "tls"), "--log", "WARNING",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise RuntimeError(f"python -m imhost.xmpp did not start: {line!r}")
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def measure(
    subject: Subject, users: int, rates: list[int], seconds: float, threads: dict[int, float]
) -> list[StepResult]:
    """One step per rate; ``threads`` gets, per rate, the CPU per message of the server's
    threads other than the event loop's (database writes, the usage journal)."""
    names = [f"{serve_proc.PREFIX}{i}" for i in range(users)]
    conns, _ = await connect_many(
        "127.0.0.1", subject.port, names, serve_proc.DOMAIN, serve_proc.PASSWORD, in_flight=50
    )
    half = len(conns) // 2
    senders: list[Conn] = conns[:half]
    receivers: list[Conn] = conns[half : 2 * half]
    await asyncio.sleep(3)  # logins' background writes (last login, usage) settle
    out = []
    for rate in rates:
        run0, wait0 = serve_proc.cpu_seconds(subject.pid)
        loop0 = serve_proc.loop_cpu_seconds(subject.pid)
        res = await run_step(senders, receivers, serve_proc.DOMAIN, rate, seconds)
        run1, wait1 = serve_proc.cpu_seconds(subject.pid)
        loop1 = serve_proc.loop_cpu_seconds(subject.pid)
        threads[rate] = ((run1 - run0) - (loop1 - loop0)) / max(1, res.sent) * 1e6
        res.server_cpu = (run1 - run0) / res.duration
        res.server_wait = (wait1 - wait0) / res.duration
        res.server_us_per_msg = (run1 - run0) / max(1, res.sent) * 1e6
        out.append(res)
        await asyncio.sleep(2)
    for c in conns:
        c.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--rates", type=int, nargs="+", default=[5000, 10000])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--only", choices=["serve", "memory"], default=None)
    p.add_argument("--profile", default=None)
    p.add_argument("--label", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp_path = Path(tmp)
        makers = []
        if args.only in (None, "serve"):
            serve_proc.seed(tmp_path / "data", args.users)
            makers.append(lambda: Serve(tmp_path / "data", args.profile))
        if args.only in (None, "memory"):
            makers.append(lambda: Memory(args.users, tmp_path))
        for make in makers:
            subject = make()
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
                    f"{subject.name:17s}{' (' + args.label + ')' if args.label else ''} "
                    f"{r.rate:>6}/s sent {r.sent} p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms "
                    f"server {r.server_us_per_msg:.1f} us/msg (threads other than the loop "
                    f"{threads[r.rate]:.1f}; {r.server_cpu:.0%} of a core, "
                    f"waited {r.server_wait:.0%}) gen-cpu {r.gen_cpu:.0%} "
                    f"{'sustained' if r.sustained else 'NOT sustained'} "
                    f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
