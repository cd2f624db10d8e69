"""Runs probes on schedule: each subject at its own slot in the interval (a hash of its id,
so thousands of services are not probed in the same second), at most ``concurrency`` at once,
and records the results of a round in one transaction.

The worker owns one :class:`ProbeRunner` and calls :meth:`ProbeRunner.run_due` every tick
(``run_forever``); tests call ``run_due`` with a travelling clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import Settings
from imhost.db.engine import transaction
from imhost.hosting.models import HostedService, ServiceStatus
from imhost.kit.clock import Clock

from . import rules
from . import service as monitoring
from .probes import (
    ProbeResult,
    Step,
    TlsMode,
    XmppTarget,
    check_disk,
    check_smtp,
    probe_http,
    probe_tcp,
    probe_websocket,
    probe_xmpp,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeSpec:
    """One check of one subject: what to run and how often."""

    subject: str
    check_name: str
    interval: int
    run: Callable[[], Awaitable[ProbeResult]]
    label: str | None = None

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.check_name}"


class ProbeRunner:
    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Clock,
        *,
        concurrency: int = 100,
        policy: rules.Policy | None = None,
        incidents: monitoring.IncidentPolicy | None = None,
    ) -> None:
        self.factory = factory
        self.clock = clock
        self.semaphore = asyncio.Semaphore(concurrency)
        self.policy = policy or rules.Policy()
        self.incidents = incidents or monitoring.IncidentPolicy()
        self._next: dict[str, datetime] = {}
        self.running = 0
        self.peak_running = 0

    def due(self, specs: Sequence[ProbeSpec]) -> list[ProbeSpec]:
        """The specs whose slot has come. A spec seen for the first time is given its slot
        in the coming interval (a restart does not probe everything at once)."""
        now = self.clock.now()
        due = []
        for spec in specs:
            at = self._next.get(spec.key)
            if at is None:
                self._next[spec.key] = rules.next_run(now, spec.key, spec.interval)
            elif at <= now:
                due.append(spec)
                self._next[spec.key] = rules.next_run(now, spec.key, spec.interval)
        return due

    def run_now(self, specs: Sequence[ProbeSpec]) -> None:
        """Make ``specs`` due at once (a staff "check now", and tests)."""
        for spec in specs:
            self._next[spec.key] = self.clock.now()

    async def run_due(self, specs: Sequence[ProbeSpec]) -> list[tuple[ProbeSpec, ProbeResult]]:
        due = self.due(specs)
        if not due:
            return []
        results = await asyncio.gather(*(self._run_one(spec) for spec in due))
        done = list(zip(due, results, strict=True))
        await asyncio.to_thread(self._record, done)
        return done

    async def _run_one(self, spec: ProbeSpec) -> ProbeResult:
        async with self.semaphore:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            start = time.perf_counter()
            try:
                return await spec.run()
            except Exception:
                log.exception("probe %s failed unexpectedly", spec.key)
                seconds = time.perf_counter() - start
                return ProbeResult(
                    spec.check_name,
                    [Step("probe", False, seconds, "the probe itself failed (see the log)")],
                )
            finally:
                self.running -= 1

    def _record(self, done: Sequence[tuple[ProbeSpec, ProbeResult]]) -> None:
        with transaction(self.factory, write=True) as session:
            for spec, result in done:
                monitoring.record_result(
                    session,
                    self.clock,
                    spec.subject,
                    spec.check_name,
                    result,
                    policy=self.policy,
                    incidents=self.incidents,
                    label=spec.label,
                )

    async def run_forever(
        self, load: Callable[[], Sequence[ProbeSpec]], *, tick: float = 1.0, reload: float = 30.0
    ) -> None:
        """Run due probes every ``tick`` seconds; the list of specs is read again every
        ``reload`` seconds (new services are picked up, removed ones dropped)."""
        specs: Sequence[ProbeSpec] = []
        loaded_at = float("-inf")
        while True:
            try:
                if time.monotonic() - loaded_at >= reload:
                    specs = await asyncio.to_thread(load)
                    loaded_at = time.monotonic()
                await self.run_due(specs)
            except Exception:
                log.exception("probe round failed")
            await asyncio.sleep(tick)


def service_subject(service_id: str) -> str:
    return f"service:{service_id}"


def ca_file(settings: Settings) -> Path | None:
    m = settings.monitoring
    if m.ca_file is not None:
        return m.ca_file
    if settings.xmpp.certificate is not None:
        return None
    directory = settings.xmpp.certificate_dir or settings.data_dir / "tls"
    return directory / "xmpp-cert.pem"


def service_specs(
    session: Session,
    settings: Settings,
    *,
    c2s_port: int | None = None,
    direct_tls_port: int | None = None,
) -> list[ProbeSpec]:
    """A STARTTLS and a Direct TLS probe of every active hosted service, against this
    platform's XMPP listeners (``c2s_port``/``direct_tls_port`` override the configured ports,
    for an engine listening on a port chosen at start)."""
    m = settings.monitoring
    host = _probe_host(settings)
    ports = [(TlsMode.STARTTLS, c2s_port or settings.xmpp.c2s_port)]
    if settings.xmpp.direct_tls_enabled:
        ports.append((TlsMode.DIRECT, direct_tls_port or settings.xmpp.c2s_direct_tls_port))
    bundle = ca_file(settings)
    interval = rules.interval_seconds(m.interval_seconds)
    specs = []
    rows = session.execute(
        select(HostedService.id, HostedService.domain)
        .where(HostedService.status == ServiceStatus.ACTIVE.value)
        .order_by(HostedService.domain)
    ).all()
    for service_id, domain in rows:
        for mode, port in ports:
            target = XmppTarget(
                host=host,
                port=port,
                domain=domain,
                tls=mode,
                ca_file=bundle,
                step_timeout=m.step_timeout_seconds,
                expiry_warning_days=m.expiry_warning_days,
            )
            specs.append(
                ProbeSpec(
                    subject=service_subject(service_id),
                    check_name=f"xmpp-{mode.value}",
                    interval=interval,
                    run=_bound(target),
                    label=domain,
                )
            )
    return specs


def _probe_host(settings: Settings) -> str:
    host = settings.monitoring.probe_host or (
        "127.0.0.1" if settings.xmpp.bind in ("0.0.0.0", "") else settings.xmpp.bind
    )
    return "::1" if host == "::" else host


def platform_specs(
    session: Session,
    settings: Settings,
    *,
    c2s_port: int | None = None,
    direct_tls_port: int | None = None,
    http_port: int | None = None,
    web: bool = True,
    xmpp: bool = True,
) -> list[ProbeSpec]:
    """The status page's components: XMPP client ports, XMPP over WebSocket, the web portal
    (``/healthz``), the API (``/readyz``: database and schema) and e-mail (the SMTP relay, or
    the disk of the outbox when mail goes to the data directory)."""
    m = settings.monitoring
    timeout = m.step_timeout_seconds
    interval = rules.interval_seconds(m.interval_seconds)
    host = _probe_host(settings)
    specs: list[ProbeSpec] = []

    def add(component: str, check: str, run: Callable[[], Awaitable[ProbeResult]]) -> None:
        specs.append(ProbeSpec(f"component:{component}", check, interval, run))

    if xmpp and settings.xmpp.enabled:
        c2s = c2s_port or settings.xmpp.c2s_port
        add("xmpp-c2s", "c2s-port", lambda: probe_tcp(host, c2s, timeout=timeout))
        if settings.xmpp.direct_tls_enabled:
            tls = direct_tls_port or settings.xmpp.c2s_direct_tls_port
            add("xmpp-c2s", "direct-tls-port", lambda: probe_tcp(host, tls, timeout=timeout))
    if web:
        http_host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host
        base = f"http://{http_host}:{http_port or settings.http_port}"
        add("web", "healthz", lambda: probe_http(f"{base}/healthz", timeout=timeout))
        add("api", "readyz", lambda: probe_http(f"{base}/readyz", timeout=timeout))
        domain = session.scalar(
            select(HostedService.domain)
            .where(HostedService.status == ServiceStatus.ACTIVE.value)
            .order_by(HostedService.created_at)
            .limit(1)
        )
        if domain is not None and xmpp:
            ws = base.replace("http://", "ws://") + "/xmpp-websocket"
            add("websocket", "rfc7395", lambda: probe_websocket(ws, domain, timeout=timeout))
    if settings.smtp_url:
        from urllib.parse import urlparse

        parsed = urlparse(settings.smtp_url)
        implicit = parsed.scheme == "smtps"
        smtp_host = parsed.hostname or "localhost"
        smtp_port = parsed.port or (465 if implicit else 25)
        add(
            "email",
            "smtp",
            lambda: check_smtp(smtp_host, smtp_port, timeout=timeout, implicit_tls=implicit),
        )
    else:
        data_dir = settings.data_dir

        async def outbox() -> ProbeResult:
            return check_disk(data_dir, min_free_bytes=100 * 1024 * 1024)

        add("email", "outbox-disk", outbox)
    return specs


def _bound(target: XmppTarget) -> Callable[[], Awaitable[ProbeResult]]:
    async def run() -> ProbeResult:
        return await probe_xmpp(target)

    return run
