"""``imhost serve``: the web app, the XMPP listeners and the worker in one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn
from sqlalchemy import func, select

from imhost.accounts.models import StaffRole, User
from imhost.cli.context import console, fail
from imhost.config import Settings
from imhost.hosting.nodes import NodeIdInUse
from imhost.monitoring import rules
from imhost.monitoring.runner import ProbeRunner, ProbeSpec, platform_specs, service_specs
from imhost.runtime import Runtime, build_runtime
from imhost.web.app import create_app
from imhost.worker.jobs import default_jobs
from imhost.worker.scheduler import run_forever, threadsafe_setter

log = logging.getLogger(__name__)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _has_admin(runtime: Runtime) -> bool:
    with runtime.session_factory() as session:
        count = session.scalar(
            select(func.count()).select_from(User).where(User.staff_role == StaffRole.ADMIN)
        )
    return bool(count)


def load_shipped_articles(runtime: Runtime) -> None:
    """The help center's shipped articles, loaded at every start (idempotent; staff edits are
    kept: imhost.support.shipped)."""
    from imhost.db.engine import transaction
    from imhost.support.shipped import load_shipped

    with transaction(runtime.session_factory, write=True) as session:
        report = load_shipped(session, runtime.clock)
    if report.created or report.updated:
        log.info(
            "help center: %d shipped articles added, %d updated",
            len(report.created),
            len(report.updated),
        )


def run_server(settings: Settings, *, demo: bool, migrate: bool) -> None:
    if demo and settings.public_url.startswith("http://"):
        # Plain-http demo on this machine: a Secure cookie would never come back.
        settings = settings.model_copy(
            update={"security": settings.security.model_copy(update={"cookie_secure": False})}
        )
    if settings.role in ("all", "web") and not _port_free(settings.http_host, settings.http_port):
        fail(
            f"port {settings.http_port} on {settings.http_host} is in use; "
            "choose another with --port or IMHOST_HTTP_PORT"
        )
    runtime = build_runtime(settings)
    if migrate:
        from imhost.db.migrations import upgrade

        upgrade(settings.resolved_database_url)
    load_shipped_articles(runtime)
    logins = None
    if demo:
        from imhost.cli.demo import seed_demo

        logins = seed_demo(runtime)
    elif not _has_admin(runtime):
        fail(
            "there is no staff admin yet. Create one with `imhost admin create`, "
            "or try imhost with `imhost serve --demo`."
        )
    _run(_serve(runtime, logins))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop (a dependency except on Windows), as the in-memory engine's
    ``--uvloop`` does; on Windows on the standard event loop."""
    if sys.platform == "win32":
        asyncio.run(main)
        return
    import uvloop

    uvloop.run(main)


def _settle_collector() -> None:
    """After start, the collector settings of ``python -m imhost.xmpp``: what start built
    (modules, app routes, hosts) leaves the collector's view, collections of the young
    generation stay cheap and full ones rare (a full pass over thousands of sessions is a
    latency spike of tens of milliseconds)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


SWITCH_INTERVAL = 0.001
"""Seconds a thread holding the GIL runs before another that waits for it gets it (Python's
default is 0.005). The event loop shares the GIL with the database threads (the batch after
a burst of logins, usage writes, the worker's jobs): at 5 ms the loop waited up to 5 ms per
hand-over whenever one of them ran Python code, at 1 ms it waits up to 1 ms (an event loop
ticking every 1 ms beside a busy thread: lag p50 11 ms at 5 ms, 1.4 ms at 1 ms)."""


def _favour_the_loop() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our event loop: we own SIGINT/SIGTERM and stop every part together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        """uvicorn's housekeeping once a second instead of ten times (its ``on_tick``
        refreshes the Date header at counters divisible by 10 and notices ``should_exit``);
        a stop is seen within a second."""
        should_exit = await self.on_tick(0)
        while not should_exit:
            await asyncio.sleep(1.0)
            should_exit = await self.on_tick(0)


async def _start_xmpp(runtime: Runtime) -> Any:
    if runtime.settings.role not in ("all", "xmpp") or not runtime.settings.xmpp.enabled:
        return None
    # Imported here: only a process that runs the XMPP engine loads it.
    from imhost.hosting.engines.builtin import start_builtin_engine

    try:
        server = await start_builtin_engine(runtime)
    except NodeIdInUse as exc:
        runtime.engine.dispose()
        fail(exc.detail)
    runtime.xmpp = server
    return server


async def _serve(runtime: Runtime, logins: object | None) -> None:
    settings = runtime.settings
    tasks: list[asyncio.Task[None]] = []
    server: uvicorn.Server | None = None
    xmpp = await _start_xmpp(runtime)
    if settings.role in ("all", "web"):
        config = uvicorn.Config(
            create_app(runtime),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            lifespan="off",
            proxy_headers=False,
            backlog=1024,
        )
        server = _EmbeddedServer(config)
        tasks.append(asyncio.create_task(server.serve()))
    if settings.role in ("all", "worker"):
        wake = asyncio.Event()
        runtime.wake_delivery = threadsafe_setter(wake)
        tasks.append(
            asyncio.create_task(
                run_forever(
                    runtime.session_factory,
                    runtime.clock,
                    default_jobs(runtime),
                    fast=runtime.deliver_notifications,
                    wake=wake,
                )
            )
        )
    if settings.role in ("all", "worker") and settings.monitoring.enabled:
        tasks.append(asyncio.create_task(_run_probes(runtime)))
    if server is not None:
        while not server.started:
            await asyncio.sleep(0.05)
    _settle_collector()
    _favour_the_loop()
    _print_banner(runtime, logins)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    console.print("stopping…")
    if server is not None:
        server.should_exit = True
    if xmpp is not None:
        await xmpp.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    runtime.wake_delivery = None
    runtime.engine.dispose()


async def _run_probes(runtime: Runtime) -> None:
    """Probe every active hosted service on schedule (docs/monitoring.md)."""
    m = runtime.settings.monitoring
    runner = ProbeRunner(
        runtime.session_factory,
        runtime.clock,
        concurrency=m.concurrency,
        policy=rules.Policy(down_after=m.down_after, up_after=m.up_after),
    )

    def load() -> list[ProbeSpec]:
        xmpp = runtime.xmpp
        with runtime.session_factory() as session:
            ports = {
                "c2s_port": getattr(xmpp, "c2s_port", None),
                "direct_tls_port": getattr(xmpp, "direct_tls_port", None),
            }
            role = runtime.settings.role
            return service_specs(session, runtime.settings, **ports) + platform_specs(
                session,
                runtime.settings,
                **ports,
                web=role in ("all", "web"),
                xmpp=role in ("all", "xmpp"),
            )

    await runner.run_forever(load)


def _print_banner(runtime: Runtime, logins: object | None) -> None:
    settings = runtime.settings
    base = f"http://{settings.http_host}:{settings.http_port}"
    lines = [
        f"[bold]imhost is running[/] ({settings.role}); data in {settings.data_dir.resolve()}",
        f"  web:     {base}",
        f"  portal:  {base}/portal/",
        f"  console: {base}/console/",
        f"  API:     {base}/api/v1/docs",
    ]
    if runtime.xmpp is not None:
        x = settings.xmpp
        lines.append(
            f"  XMPP:    {x.bind} port {x.c2s_port} (STARTTLS) "
            f"and {x.c2s_direct_tls_port} (Direct TLS)"
        )
    if settings.smtp_url is None:
        lines.append(f"  e-mail:  written to {(settings.data_dir / 'outbox').resolve()}")
    if logins is not None:
        from imhost.cli.demo import DemoLogins

        assert isinstance(logins, DemoLogins)
        lines.append("")
        lines.append("[bold]Demo sign-ins[/] (email / password):")
        for who, email, password in logins.web:
            lines.append(f"  {email} / {password}    [dim]{who}[/]")
        if logins.xmpp:
            lines.append("[bold]Demo XMPP accounts[/] (jid / password):")
            for jid, password in logins.xmpp:
                lines.append(f"  {jid} / {password}")
        lines.extend(logins.notes)
    # Plain lines, never wrapped, so URLs and passwords are easy to copy and to grep.
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)
