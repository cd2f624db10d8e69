"""Usage keys that never collide: one live process per node_id, a new incarnation per start,
and a retried flush that still counts once (issue 9: a restarted process metered nothing,
two nodes left at the default node_id lost 46 % of their usage as duplicates)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import SecuritySettings, Settings, XmppSettings
from imhost.hosting import nodes
from imhost.hosting.engines.builtin import start_builtin_engine
from imhost.hosting.models import HostedService
from imhost.hosting.ports import DbBackend
from imhost.kit.clock import FrozenClock
from imhost.metering.models import UsageRecord as MeteredUsage
from imhost.runtime import Runtime, build_runtime
from imhost.xmpp.core.metering import Meter
from imhost.xmpp.ports import UsageRecord

from .factories import make_service

pytestmark = pytest.mark.anyio

DOMAIN = "a.example"


@dataclass
class Setup:
    factory: sessionmaker[Session]
    clock: FrozenClock
    backend: DbBackend
    service: HostedService


@pytest.fixture
async def setup(session_factory: sessionmaker[Session], clock: FrozenClock) -> AsyncIterator[Setup]:
    backend = DbBackend(session_factory, clock, SecuritySettings(), host_refresh_seconds=3600)
    with session_factory() as session:
        service = make_service(session, clock, domain=DOMAIN)
        session.commit()
    await backend.start()
    yield Setup(session_factory, clock, backend, service)
    await backend.close()


def metered_messages(factory: sessionmaker[Session]) -> Decimal:
    with factory() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(MeteredUsage.quantity), 0)).where(
                MeteredUsage.metric == "messages"
            )
        )
    return Decimal(total)


def count_messages(meter: Meter, n: int) -> None:
    meter.counters(DOMAIN).messages += n


# --- keys -----------------------------------------------------------------------------------


async def test_a_process_restarted_within_the_minute_meters_everything(setup: Setup) -> None:
    first = Meter(setup.backend.usage, setup.clock, "xmpp1", 1.0)
    count_messages(first, 3_832)
    await first.stop()  # the last flush of the first run
    setup.clock.advance(timedelta(seconds=20))  # restarted within the same minute
    second = Meter(setup.backend.usage, setup.clock, "xmpp1", 1.0)
    count_messages(second, 5)
    await second.flush()
    assert metered_messages(setup.factory) == 3_837


async def test_two_runs_of_one_node_write_different_keys(setup: Setup) -> None:
    one = Meter(None, setup.clock, "xmpp1", 1.0, incarnation="aaaa")
    two = Meter(None, setup.clock, "xmpp1", 1.0, incarnation="bbbb")
    count_messages(one, 1)
    count_messages(two, 1)
    [key_one] = [r.idempotency_key for r in one.collect() if r.metric == "messages"]
    [key_two] = [r.idempotency_key for r in two.collect() if r.metric == "messages"]
    assert key_one.startswith("xmpp1:aaaa:a.example:messages:")
    assert key_two.startswith("xmpp1:bbbb:a.example:messages:")


class LostAnswer:
    """A sink whose first write commits but whose answer never arrives (a timeout after the
    commit): the engine must send the same batch again, and metering count it once."""

    def __init__(self, backend: DbBackend) -> None:
        self.backend = backend
        self.calls = 0

    async def record(self, records: list[UsageRecord]) -> None:
        self.calls += 1
        await self.backend.usage.record(records)
        if self.calls == 1:
            raise TimeoutError("the answer was lost after the commit")


async def test_a_retried_flush_is_not_counted_twice(setup: Setup) -> None:
    sink = LostAnswer(setup.backend)
    meter = Meter(sink, setup.clock, "xmpp1", 1.0)
    count_messages(meter, 7)
    await meter.flush()  # written, but the meter thinks it failed and keeps the batch
    assert len(meter.pending) > 0
    count_messages(meter, 2)
    await meter.flush()  # the same batch again (same keys), and the new counts
    assert sink.calls == 2
    assert not meter.pending
    assert metered_messages(setup.factory) == 9


# --- the lease on a node_id -----------------------------------------------------------------


def test_a_second_process_with_the_same_node_id_is_refused(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first = nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-a:100")
    with pytest.raises(nodes.NodeIdInUse) as refused:
        nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-b:200")
    message = refused.value.detail
    assert "node-a:100" in message and "'xmpp1'" in message
    assert "IMHOST_XMPP__NODE_ID" in message
    # another name is fine
    other = nodes.claim_node(session_factory, clock, "xmpp2", 30, holder="node-b:200")
    assert other.incarnation != first.incarnation


def test_the_lease_is_renewed_and_a_crashed_node_can_start_again_after_it(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first = nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-a:100")
    clock.advance(timedelta(seconds=25))
    assert nodes.renew_node(session_factory, clock, first)
    clock.advance(timedelta(seconds=25))  # 50 s after the start, 25 s after the renewal
    with pytest.raises(nodes.NodeIdInUse, match="in 6 s"):
        nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-b:200")
    clock.advance(timedelta(seconds=6))  # node-a crashed: nobody renews
    second = nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-b:200")
    assert second.incarnation != first.incarnation
    # the first process, back from a long pause, learns it lost the name
    assert not nodes.renew_node(session_factory, clock, first)
    assert nodes.renew_node(session_factory, clock, second)


def test_a_clean_stop_frees_the_name_at_once(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first = nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-a:100")
    nodes.release_node(session_factory, clock, first)
    again = nodes.claim_node(session_factory, clock, "xmpp1", 30, holder="node-a:101")
    assert again.incarnation != first.incarnation


def test_a_process_of_this_machine_that_is_gone_does_not_hold_the_name(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    host = socket.gethostname()
    alive = f"{host}:{os.getpid()}"
    nodes.claim_node(session_factory, clock, "xmpp1", 30, holder=f"{host}:{2**22 + 12345}")
    nodes.claim_node(session_factory, clock, "xmpp1", 30, holder=alive)  # the old pid is gone
    with pytest.raises(nodes.NodeIdInUse):  # this process is alive: it holds the name
        nodes.claim_node(session_factory, clock, "xmpp1", 30, holder=f"{host}:1")


async def test_two_engines_with_the_default_node_id_the_second_refuses_to_start(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    def runtime(name: str) -> Runtime:
        settings = Settings(
            data_dir=tmp_path / name,
            xmpp=XmppSettings(c2s_port=0, c2s_direct_tls_port=0, metering_flush_seconds=60),
        )
        return build_runtime(settings, engine=engine, clock=clock)

    one, two = runtime("one"), runtime("two")
    first = await start_builtin_engine(one, listen=False)
    try:
        with pytest.raises(nodes.NodeIdInUse, match="node 'xmpp1'"):
            await start_builtin_engine(two, listen=False)
    finally:
        await first.stop()
    # stopped cleanly: the name is free again
    second = await start_builtin_engine(two, listen=False)
    assert second.meter.incarnation != first.meter.incarnation
    await second.stop()
