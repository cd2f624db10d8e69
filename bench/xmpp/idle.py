"""Idle cost of ``imhost serve``: CPU and memory of a server nobody uses.

    python3 bench/xmpp/idle.py                  # 60 s, then the biggest memory holders
    python3 bench/xmpp/idle.py --seconds 30 --no-holders
    PYTHONPATH=/work/main/src python3 bench/xmpp/idle.py --label main   # another tree

Seeds a fresh data directory (migrated, the demo data, ``--users`` XMPP accounts), starts
``imhost serve --demo`` pinned to core 0 (``taskset -c 0``), waits ``--settle`` seconds, then
reads its CPU time (``/proc/<pid>/task/*/schedstat``, all threads) before and after
``--seconds`` of idleness: the idle CPU in % of one core, and the RSS at the end.

Then (unless ``--no-holders``) a second, separate start runs under tracemalloc (``python -X
tracemalloc=10``; tracing costs memory and CPU, so it never runs in the measured start). After
the same settle time a signal makes it write a snapshot, grouped here by the package whose
code allocated each block: the innermost frame outside the import machinery. Code objects of
an imported module therefore count for the package that imported it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_proc

TRACED = (
    "import os, signal, sys, tracemalloc\n"
    "def dump(signum, frame):\n"
    "    tracemalloc.take_snapshot().dump(os.environ['IMHOST_BENCH_SNAPSHOT'])\n"
    "signal.signal(signal.SIGUSR1, dump)\n"
    "from imhost.cli.main import app\n"
    "app()\n"
)


def package_of(filename: str) -> str:
    """``imhost.web``, ``sqlalchemy``, ``<stdlib>``... for a source file name."""
    path = Path(filename)
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            name = rest[0].removesuffix(".py") if rest else "?"
            return name.split(".")[0] if name.endswith(".so") else name
    if "imhost" in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index("imhost") :]
        return ".".join(p.removesuffix(".py") for p in rest[:2])
    if filename.startswith("<"):
        return filename
    return "<stdlib>"


def holders(snapshot_path: Path, top: int) -> list[tuple[str, float]]:
    snap = tracemalloc.Snapshot.load(str(snapshot_path))
    sizes: Counter[str] = Counter()
    for trace in snap.traces:
        owner = "<import machinery>"
        for frame in trace.traceback:  # innermost first
            name = frame.filename
            if name.startswith("<frozen") or "importlib" in name:
                continue
            owner = package_of(name)
            break
        sizes[owner] += trace.size
    return [(name, size / 2**20) for name, size in sizes.most_common(top)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--settle", type=float, default=15)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--no-holders", action="store_true")
    p.add_argument("--label", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        data_dir = Path(tmp) / "data"
        serve_proc.seed(data_dir, args.users)
        server = serve_proc.start(data_dir)
        try:
            time.sleep(args.settle)
            run0, _ = serve_proc.cpu_seconds(server.pid)
            t0 = time.monotonic()
            time.sleep(args.seconds)
            run1, _ = serve_proc.cpu_seconds(server.pid)
            elapsed = time.monotonic() - t0
            rss = serve_proc.rss_mb(server.pid)
        finally:
            server.stop()
        load = os.getloadavg()
        print(
            f"imhost serve idle{' (' + args.label + ')' if args.label else ''}: "
            f"CPU {100 * (run1 - run0) / elapsed:.2f} % of a core over {elapsed:.0f} s, "
            f"RSS {rss:.0f} MB ({args.users} XMPP accounts; load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
        )
        if args.no_holders:
            return
        snapshot = Path(tmp) / "snapshot.tracemalloc"
        traced = serve_proc.start(
            data_dir,
            extra_env={"IMHOST_BENCH_SNAPSHOT": str(snapshot)},
            python=("-X", "tracemalloc=10", "-c", TRACED),
            timeout=600,
        )
        try:
            time.sleep(args.settle)
            os.kill(traced.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                size = snapshot.stat().st_size if snapshot.exists() else -1
                time.sleep(1)
                if size > 0 and snapshot.stat().st_size == size:
                    break
            traced_rss = serve_proc.rss_mb(traced.pid)
        finally:
            traced.stop()
        rows = holders(snapshot, args.top)
        total = sum(s.size for s in tracemalloc.Snapshot.load(str(snapshot)).traces) / 2**20
        print(
            f"Python heap traced after {args.settle:.0f} s: {total:.1f} MB "
            f"(RSS under tracing {traced_rss:.0f} MB); biggest holders:"
        )
        for name, mb in rows:
            print(f"  {mb:7.1f} MB  {name}")


if __name__ == "__main__":
    main()
