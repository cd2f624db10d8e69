"""Usage counters per virtual host, and their flush to the :class:`UsageSink`.

Counting is a handful of integer increments on the hot path (no I/O per stanza). Every
``metering_flush_seconds`` the counters are swapped out and turned into
:class:`~imhost.xmpp.ports.UsageRecord` rows with idempotency keys
``<node>:<incarnation>:<host>:<metric>:<minute>:<flush sequence>``. The incarnation names this
run of the process (issued at start, never reused), so a process restarted within the same
minute, whose flush sequence starts again at 1, cannot write a key its previous run wrote
(its usage would be dropped as duplicates). If the sink fails, the same batch (same keys) is
retried at the next flush, so a retry after a partial write collapses and nothing is counted
twice. A ``kill -9`` loses what was counted since the last successful flush (at most
one interval, plus whatever the sink was refusing at the time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from imhost.kit.clock import Clock

from ..ports import ArchiveStore, OfflineStore, PrivateStore, UsageRecord, UsageSink

log = logging.getLogger("imhost.xmpp.metering")

_COUNTERS = (
    "messages",
    "stanzas_message",
    "stanzas_presence",
    "stanzas_iq",
    "bytes_in",
    "bytes_out",
    "room_messages",
    "room_deliveries",
)


class HostCounters:
    """Counters of one virtual host since the last flush, plus cumulative totals (metrics)."""

    __slots__ = (
        "active_today",
        "auth_failures",
        "auth_successes",
        "bytes_in",
        "bytes_out",
        "connections",
        "connections_peak",
        "messages",
        "new_active",
        "room_deliveries",
        "room_messages",
        "stanzas_iq",
        "stanzas_message",
        "stanzas_presence",
        "totals",
    )

    def __init__(self) -> None:
        self.messages = 0
        self.stanzas_message = 0
        self.stanzas_presence = 0
        self.stanzas_iq = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.room_messages = 0
        """Groupchat messages accepted by the host's rooms (XEP-0045), each counted once."""
        self.room_deliveries = 0
        """Copies of those messages delivered to occupants (the fan-out)."""
        self.connections = 0
        """Current authenticated connections (a gauge, not reset by a flush)."""
        self.connections_peak = 0
        self.auth_failures = 0
        self.auth_successes = 0
        self.active_today: set[str] = set()
        self.new_active: list[str] = []
        self.totals: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    def connection_opened(self) -> None:
        self.connections += 1
        if self.connections > self.connections_peak:
            self.connections_peak = self.connections

    def connection_closed(self) -> None:
        self.connections -= 1

    def mark_active(self, bare_jid: str) -> None:
        """XEP-less "active user": an account that bound a session this UTC day."""
        if bare_jid not in self.active_today:
            self.active_today.add(bare_jid)
            self.new_active.append(bare_jid)

    def quiet(self) -> bool:
        """Nothing to report: no traffic since the last flush and no connection now or in
        the interval (:meth:`take` would give only zeros, which are never recorded)."""
        return not (
            self.messages
            or self.stanzas_message
            or self.stanzas_presence
            or self.stanzas_iq
            or self.bytes_in
            or self.bytes_out
            or self.room_messages
            or self.connections_peak
            or self.connections
            or self.new_active
        )

    def take(self) -> dict[str, int]:
        """Swap out the interval counters (adding them to the totals)."""
        out = {
            "messages": self.messages,
            "stanzas_message": self.stanzas_message,
            "stanzas_presence": self.stanzas_presence,
            "stanzas_iq": self.stanzas_iq,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "room_messages": self.room_messages,
            "room_deliveries": self.room_deliveries,
        }
        self.messages = self.stanzas_message = self.stanzas_presence = self.stanzas_iq = 0
        self.bytes_in = self.bytes_out = 0
        self.room_messages = self.room_deliveries = 0
        totals = self.totals
        for key, value in out.items():
            totals[key] += value
        out["connections_peak"] = self.connections_peak
        self.connections_peak = self.connections
        return out

    def snapshot(self) -> dict[str, int]:
        """Cumulative values for /metrics (totals plus what is not yet flushed)."""
        pending = {
            "messages": self.messages,
            "stanzas_message": self.stanzas_message,
            "stanzas_presence": self.stanzas_presence,
            "stanzas_iq": self.stanzas_iq,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "room_messages": self.room_messages,
            "room_deliveries": self.room_deliveries,
        }
        out = {k: self.totals[k] + pending[k] for k in _COUNTERS}
        out["connections"] = self.connections
        out["auth_failures"] = self.auth_failures
        out["auth_successes"] = self.auth_successes
        return out


def new_incarnation() -> str:
    """A random name for one run of a process (48 bits: two runs of one node never share it)."""
    return secrets.token_hex(6)


def minute_start(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


class Meter:
    """Owns the counters of every host and the flush loop."""

    MAX_PENDING_RECORDS = 200_000

    def __init__(
        self,
        sink: UsageSink | None,
        clock: Clock,
        node_id: str,
        flush_seconds: float,
        offline: OfflineStore | None = None,
        private: PrivateStore | None = None,
        incarnation: str | None = None,
        archive: ArchiveStore | None = None,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.node_id = node_id
        self.incarnation = incarnation or new_incarnation()
        """This run of the process; in every key, so a restart never repeats a key."""
        self.flush_seconds = flush_seconds
        self.offline = offline
        self.private = private
        self.archive = archive
        self.hosts: dict[str, HostCounters] = {}
        self.seq = 0
        self.pending: deque[UsageRecord] = deque()
        self.dropped = 0
        self._interval_start = clock.now()
        self._day = self._interval_start.date()
        self._gauge_bucket: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.enabled = sink is not None

    def counters(self, domain: str) -> HostCounters:
        hc = self.hosts.get(domain)
        if hc is None:
            hc = self.hosts[domain] = HostCounters()
        return hc

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and do one last flush (graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.enabled:
            await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:  # a bad sink must never kill the loop
                log.exception("metering flush failed")

    def collect(self) -> list[UsageRecord]:
        """Swap the counters into records (no I/O)."""
        now = self.clock.now()
        bucket = minute_start(self._interval_start)
        self._interval_start = now
        self.seq += 1
        seq = self.seq
        stamp = bucket.strftime("%Y%m%dT%H%M")
        prefix = f"{self.node_id}:{self.incarnation}"
        records: list[UsageRecord] = []
        for domain, hc in self.hosts.items():
            if hc.quiet():  # an idle host costs one check a flush
                continue
            values = hc.take()
            for metric, quantity in values.items():
                if quantity == 0 and metric != "connections_peak":
                    continue
                if metric == "connections_peak" and quantity == 0 and hc.connections == 0:
                    continue
                records.append(
                    UsageRecord(
                        host=domain,
                        metric=metric,
                        bucket_start=bucket,
                        quantity=quantity,
                        idempotency_key=f"{prefix}:{domain}:{metric}:{stamp}:{seq}",
                    )
                )
            if hc.new_active:
                day = bucket.date().isoformat()
                for jid in hc.new_active:
                    records.append(
                        UsageRecord(
                            host=domain,
                            metric="active_users",
                            bucket_start=bucket,
                            quantity=1,
                            idempotency_key=f"active:{domain}:{day}:{jid}",
                            subject=jid,
                        )
                    )
                hc.new_active = []
        if now.date() != self._day:
            self._day = now.date()
            for hc in self.hosts.values():
                hc.active_today = set()
        return records

    async def _gauges(self) -> list[UsageRecord]:
        """Storage gauges, sampled once per minute bucket."""
        bucket = minute_start(self.clock.now())
        gauges: list[tuple[str, Callable[[str], Awaitable[int]]]] = []
        if self.offline is not None:
            gauges.append(("offline_storage_bytes", self.offline.bytes_used))
        if self.private is not None:
            gauges.append(("private_storage_bytes", self.private.bytes_used))
        if self.archive is not None:
            gauges.append(("archive_storage_bytes", self.archive.archive_bytes_used))
        if bucket == self._gauge_bucket or not gauges:
            return []
        self._gauge_bucket = bucket
        stamp = bucket.strftime("%Y%m%dT%H%M")
        out: list[UsageRecord] = []
        for domain in list(self.hosts):
            for metric, read in gauges:
                try:
                    value = await read(domain)
                except Exception:
                    log.exception("gauge %s for %s failed", metric, domain)
                    continue
                out.append(
                    UsageRecord(
                        host=domain,
                        metric=metric,
                        bucket_start=bucket,
                        quantity=value,
                        idempotency_key=f"{self.node_id}:{domain}:{metric}:{stamp}",
                    )
                )
        return out

    async def flush(self) -> None:
        """Collect and send; on failure keep the batch (bounded) for the next flush."""
        if self.sink is None:
            return
        self.pending.extend(self.collect())
        try:
            self.pending.extend(await self._gauges())
        except Exception:
            log.exception("gauges failed")
        if not self.pending:
            return
        batch = list(self.pending)
        try:
            await self.sink.record(batch)
        except Exception as exc:  # noqa: BLE001 - any sink failure: keep and retry
            log.warning("usage sink failed (%s); keeping %d records", exc, len(batch))
            while len(self.pending) > self.MAX_PENDING_RECORDS:
                self.pending.popleft()
                self.dropped += 1
            return
        for _ in range(len(batch)):
            self.pending.popleft()
