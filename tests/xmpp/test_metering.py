"""Usage counters per host, their flush as idempotent usage records, and engine metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imhost.kit.clock import FrozenClock

from .harness import DOMAIN, OTHER, Harness

pytestmark = pytest.mark.anyio


def totals(records: list, host: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r.host == host:
            out[r.metric] = out.get(r.metric, 0) + r.quantity
    return out


async def test_counts_per_host_and_flushes_minute_buckets() -> None:
    clock = FrozenClock(datetime(2026, 3, 1, 10, 15, 30, tzinfo=UTC))
    async with Harness(clock=clock) as h:
        a = await h.online("alice")
        b = await h.online("bob")
        for i in range(3):
            a.send(f"<message to='bob@example.test' type='chat'><body>{i}</body></message>")
        a.send(
            "<message to='bob@example.test' type='chat'><composing "
            "xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )
        a.send("<iq type='get' id='x' to='example.test'><q xmlns='urn:none'/></iq>")
        await b.recv()
        await a.recv()
        await h.server.meter.flush()
        usage = h.backend.usage
        t = totals(usage, DOMAIN)
        assert t["messages"] == 3  # with a body
        assert t["stanzas_message"] == 4
        assert t["stanzas_iq"] == 1
        assert t["stanzas_presence"] == 2  # the two initial presences
        assert t["bytes_in"] > 0 and t["bytes_out"] > 0
        assert t["connections_peak"] == 2
        assert sorted(r.subject for r in usage if r.metric == "active_users") == [
            "alice@example.test",
            "bob@example.test",
        ]
        assert all(r.bucket_start == datetime(2026, 3, 1, 10, 15, tzinfo=UTC) for r in usage)
        assert {r.metric for r in usage if r.host == OTHER} <= {
            "offline_storage_bytes",
            "private_storage_bytes",
            "archive_storage_bytes",
        }
        keys = [r.idempotency_key for r in usage]
        assert len(keys) == len(set(keys))


async def test_failed_flush_keeps_the_batch_and_retries_with_same_keys() -> None:
    clock = FrozenClock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    async with Harness(clock=clock) as h:
        a = await h.online("alice")
        await h.online("bob")
        a.send("<message to='bob@example.test'><body>x</body></message>")
        await a.recv()
        h.backend.fail_sink = True
        await h.server.meter.flush()
        assert h.backend.usage == []
        pending = list(h.server.meter.pending)
        assert pending
        clock.advance(timedelta(minutes=1))
        a.send("<message to='bob@example.test'><body>y</body></message>")
        await a.recv()
        h.backend.fail_sink = False
        await h.server.meter.flush()
        assert totals(h.backend.usage, DOMAIN)["messages"] == 2
        kept = {r.idempotency_key for r in pending}
        assert kept <= {r.idempotency_key for r in h.backend.usage}
        # a retried batch collapses on its keys at the sink
        await h.backend.record(pending)
        assert totals(h.backend.usage, DOMAIN)["messages"] == 2


async def test_active_user_counted_once_per_day() -> None:
    clock = FrozenClock(datetime(2026, 3, 1, 23, 58, tzinfo=UTC))
    async with Harness(clock=clock) as h:
        await h.online("alice", "one")
        await h.online("alice", "two")
        await h.server.meter.flush()
        clock.advance(timedelta(minutes=5))  # next UTC day
        await h.server.meter.flush()
        await h.online("alice", "three")
        await h.server.meter.flush()
        active = [r for r in h.backend.usage if r.metric == "active_users"]
        assert [r.bucket_start.date().isoformat() for r in active] == ["2026-03-01", "2026-03-02"]
        assert active[0].idempotency_key == "active:example.test:2026-03-01:alice@example.test"


async def test_storage_gauges_sampled_per_bucket() -> None:
    clock = FrozenClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    async with Harness(clock=clock) as h:
        a = await h.online("alice")
        a.send("<message to='carol@example.test'><body>stored</body></message>")
        await a.recv()
        await h.server.meter.flush()
        gauges = [
            r for r in h.backend.usage if r.metric == "offline_storage_bytes" and r.host == DOMAIN
        ]
        assert len(gauges) == 1 and gauges[0].quantity > 0
        await h.server.meter.flush()  # same minute: not sampled again
        assert (
            len(
                [
                    r
                    for r in h.backend.usage
                    if r.metric == "offline_storage_bytes" and r.host == DOMAIN
                ]
            )
            == 1
        )


async def test_graceful_stop_flushes() -> None:
    h = Harness()
    await h.server.start(listen=False)
    a = await h.online("alice")
    await h.online("bob")
    a.send("<message to='bob@example.test'><body>last words</body></message>")
    await a.recv()
    await h.server.stop()
    assert totals(h.backend.usage, DOMAIN)["messages"] == 1


async def test_metrics_snapshot() -> None:
    async with Harness() as h:
        a = await h.online("alice")
        await h.client().login_plain("bob", "wrong")
        a.send("<presence/>")
        await a.recv()
        snap = h.server.metrics_snapshot()[DOMAIN]
        assert snap["connections"] == 1
        assert snap["auth_failures"] == 1 and snap["auth_successes"] == 1
        assert snap["stanzas_presence"] == 2
        assert h.server.engine_stats()["streams"] >= 1


async def test_a_quiet_host_gives_no_records_and_a_closed_connection_its_peak_once() -> None:
    """Issue 16: an idle host costs one check a flush. Its last connection's peak is still
    reported once after it closed, and nothing after that."""
    clock = FrozenClock(datetime(2026, 3, 1, 10, 15, 30, tzinfo=UTC))
    async with Harness(clock=clock) as h:
        meter = h.server.meter
        counters = meter.counters(DOMAIN)
        assert counters.quiet()
        assert meter.collect() == []
        counters.connection_opened()
        counters.messages += 2
        assert not counters.quiet()
        assert totals(meter.collect(), DOMAIN) == {"messages": 2, "connections_peak": 1}
        assert not counters.quiet()  # the connection is still open
        counters.connection_closed()
        assert totals(meter.collect(), DOMAIN) == {"connections_peak": 1}
        assert counters.quiet()
        assert meter.collect() == []
        assert counters.totals["messages"] == 2
