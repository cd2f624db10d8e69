"""The probe runner against the built-in engine of a runtime on loopback: the listener is
stopped (an incident opens, once), started again (it recovers and resolves); suspended
services are not probed; concurrency is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import MonitoringSettings, Settings, XmppSettings
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.hosting.engines.builtin import HostedXmppServer, start_builtin_engine
from imhost.kit.clock import FrozenClock, SystemClock
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.models import CheckState, Incident, ProbeCheck
from imhost.monitoring.probes import ProbeResult, Step
from imhost.monitoring.runner import ProbeRunner, ProbeSpec, service_specs, service_subject
from imhost.runtime import Runtime, build_runtime
from tests.hosting.factories import make_org

pytestmark = pytest.mark.anyio

DOMAIN = "watched.example"


@dataclass
class Live:
    runtime: Runtime
    server: HostedXmppServer
    service_id: str
    clock: FrozenClock


@pytest.fixture
async def live(
    engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[Live]:
    settings = Settings(
        data_dir=tmp_path,
        xmpp=XmppSettings(c2s_port=0, c2s_direct_tls_port=0, idle_parser_seconds=0),
        monitoring=MonitoringSettings(step_timeout_seconds=3),
    )
    runtime = build_runtime(settings, engine=engine, clock=SystemClock())
    with transaction(runtime.session_factory) as session:
        org = make_org(session, runtime.clock)
        service = hosting.create_service(
            session, runtime.clock, org, base_domain="im.test", domain=DOMAIN
        )
        service_id = service.id
    server = await start_builtin_engine(runtime)
    live = Live(runtime, server, service_id, FrozenClock())
    yield live
    await live.server.stop()


def _specs(live: Live) -> list[ProbeSpec]:
    with live.runtime.session_factory() as session:
        return service_specs(
            session,
            live.runtime.settings,
            c2s_port=live.server.c2s_port,
            direct_tls_port=live.server.direct_tls_port,
        )


async def _round(runner: ProbeRunner, live: Live, specs: list[ProbeSpec]) -> list[ProbeResult]:
    runner.run_now(specs)
    done = await runner.run_due(specs)
    live.clock.advance(60)
    return [result for _, result in done]


def _count_incidents(live: Live) -> int:
    with live.runtime.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Incident)) or 0)


async def test_stopping_the_listener_opens_one_incident_and_restarting_resolves_it(
    live: Live,
) -> None:
    runner = ProbeRunner(
        live.runtime.session_factory, live.clock, policy=rules.Policy(down_after=2, up_after=2)
    )
    specs = _specs(live)
    assert {s.check_name for s in specs} == {"xmpp-starttls", "xmpp-direct_tls"}
    for _ in range(2):
        results = await _round(runner, live, specs)
        assert all(r.ok for r in results), [r.summary for r in results]
    subject = service_subject(live.service_id)
    with live.runtime.session_factory() as session:
        assert monitoring.subject_state(session, subject) is CheckState.UP

    await live.server.stop()  # the listener dies
    for _ in range(4):
        results = await _round(runner, live, specs)
        assert not any(r.ok for r in results)
        assert all(r.failed is not None and r.failed.name == "connect" for r in results)
    assert _count_incidents(live) == 1
    with live.runtime.session_factory() as session:
        [incident] = monitoring.open_incidents(session)
        assert incident.title == f"{DOMAIN} is not working"
        assert monitoring.subject_state(session, subject) is CheckState.DOWN

    live.server = await start_builtin_engine(live.runtime)  # restarted (on new ports)
    specs = _specs(live)
    for _ in range(2):
        await _round(runner, live, specs)
    live.clock.advance(timedelta(minutes=5))
    with transaction(live.runtime.session_factory, write=True) as session:
        resolved = monitoring.settle_incidents(session, live.clock)
        assert [i.reference for i in resolved] == [incident.reference]
        assert monitoring.subject_state(session, subject) is CheckState.UP
        uptime = monitoring.subject_uptime(
            session, subject, live.clock.now() - timedelta(hours=1), live.clock.now()
        )
        # rounds a minute apart: good at 0, 1; failed at 2-5 (down at 3); good at 6, 7 (up at 7)
        assert uptime.minutes_down == 4
    assert _count_incidents(live) == 1


async def test_suspended_services_are_not_probed(live: Live) -> None:
    with transaction(live.runtime.session_factory, write=True) as session:
        service = hosting.get_service(session, live.service_id)
        hosting.suspend_service(session, live.runtime.clock, service, reason="Unpaid invoice.")
    assert _specs(live) == []


async def test_concurrency_is_bounded_and_first_runs_are_spread(live: Live) -> None:
    runner = ProbeRunner(live.runtime.session_factory, live.clock, concurrency=3)

    def slow(n: int) -> ProbeSpec:
        async def run() -> ProbeResult:
            await asyncio.sleep(0.05)
            return ProbeResult("tcp", [Step("connect", True, 0.05)])

        return ProbeSpec(f"component:c{n}", "tcp", 60, run)

    specs = [slow(n) for n in range(12)]
    assert await runner.run_due(specs) == []  # first sight: each gets its slot, none runs
    live.clock.advance(60)
    done = await runner.run_due(specs)
    assert len(done) == 12
    assert runner.peak_running == 3
    with live.runtime.session_factory() as session:
        rows = session.scalars(select(ProbeCheck)).all()
        assert len(rows) == 12


async def test_the_platform_components_are_probed_for_real(live: Live) -> None:
    import socket

    import uvicorn

    from imhost.monitoring.runner import platform_specs
    from imhost.web.app import create_app

    live.runtime.xmpp = live.server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    web = uvicorn.Server(
        uvicorn.Config(
            create_app(live.runtime),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
        )
    )
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.02)
    try:
        with live.runtime.session_factory() as session:
            specs = platform_specs(
                session,
                live.runtime.settings,
                c2s_port=live.server.c2s_port,
                direct_tls_port=live.server.direct_tls_port,
                http_port=port,
            )
        assert {(s.subject, s.check_name) for s in specs} == {
            ("component:xmpp-c2s", "c2s-port"),
            ("component:xmpp-c2s", "direct-tls-port"),
            ("component:web", "healthz"),
            ("component:api", "readyz"),
            ("component:websocket", "rfc7395"),
            ("component:email", "outbox-disk"),
        }
        runner = ProbeRunner(live.runtime.session_factory, live.clock)
        found = dict(
            zip([s.check_name for s in specs], await _round(runner, live, specs), strict=True)
        )
        # The suite's database is made by create_all, not migrated: /readyz says not ready.
        assert found.pop("readyz").summary == "http: the server answered 503"
        assert all(r.ok for r in found.values()), [r.summary for r in found.values()]
    finally:
        web.should_exit = True
        await task
    results = {
        spec.check_name: result
        for spec, result in zip(specs, [await s.run() for s in specs], strict=True)
    }
    assert results["healthz"].summary == "http: the connection failed"
    assert not results["rfc7395"].ok
    assert results["c2s-port"].ok  # the XMPP listener still runs
