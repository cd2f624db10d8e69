"""Standalone server on the in-memory backend: ``python -m imhost.xmpp``.

For trying clients and for the benchmark. Example::

    python -m imhost.xmpp --domain bench.local --users 1000 --password secret --port 5222 \\
        --no-tls --plain-without-tls --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from pathlib import Path

from imhost.config import XmppSettings

from .memory import MemoryBackend
from .ports import HostLimits
from .server import XmppServer, default_modules


async def run(args: argparse.Namespace) -> None:
    backend = MemoryBackend(iterations=args.iterations)
    limits = HostLimits(
        message_rate=None if args.no_rate_limit else 50.0,
        max_connections_per_account=None,
        max_offline_messages=10_000,
    )
    backend.add_host(args.domain, limits=limits)
    for i in range(args.users):
        backend.create_account(args.domain, f"{args.user_prefix}{i}", args.password)
    settings = XmppSettings(
        bind=args.bind,
        c2s_port=args.port,
        c2s_direct_tls_port=args.tls_port,
        require_encryption=not args.no_tls,
        allow_plain_without_tls=args.plain_without_tls,
        direct_tls_enabled=not args.no_tls,
        certificate_dir=Path(args.cert_dir),
        unauthenticated_per_address=100_000,
        negotiation_timeout_seconds=60,
        metering_flush_seconds=args.flush,
    )
    modules = default_modules()
    if args.modules != "all":
        wanted = {m for m in args.modules.split(",") if m and m != "none"}
        modules = [m for m in modules if m.name in wanted]
    server = XmppServer.with_memory_backend(settings, backend, modules=modules)
    if args.no_metering:
        server.meter.enabled = False
        server.meter.sink = None
    if args.no_tls:
        server.settings = settings
    await server.start()
    # Long-lived objects (accounts, sessions) leave the collector's view; collections of the
    # young generation stay cheap and full ones rare (a full pass over thousands of sessions
    # is a latency spike of tens of milliseconds).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    print(f"ready c2s={server.c2s_port} tls={server.direct_tls_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m imhost.xmpp")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--users", type=int, default=2)
    p.add_argument("--user-prefix", default="user")
    p.add_argument("--password", default="password")
    p.add_argument("--iterations", type=int, default=4096)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--tls-port", type=int, default=5223)
    p.add_argument("--cert-dir", default="imhost-data/tls")
    p.add_argument("--no-tls", action="store_true")
    p.add_argument("--plain-without-tls", action="store_true")
    p.add_argument("--no-rate-limit", action="store_true")
    p.add_argument("--no-metering", action="store_true")
    p.add_argument("--flush", type=float, default=1.0)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument(
        "--modules", default="all", help="'all', 'none' or names, e.g. roster,presence,disco,ping"
    )
    p.add_argument("--log", default="WARNING")
    args = p.parse_args()
    logging.basicConfig(level=args.log)
    if args.uvloop:
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
