"""The stores under a host's storage limit: ``OfflineStore`` and ``PrivateStore``
(:mod:`imhost.xmpp.ports`; private XML through :class:`~imhost.hosting.ports.DbPrivateStore`).

One adapter for both, because both count against one limit: the plan's storage limit
(``HostLimits.max_storage_bytes``) is checked against a byte counter per service
(:class:`_StoredBytes`), not a SUM per write: counted from the database on the first limited
write, moved by every write and deletion this process makes, counted again when older than
``STORAGE_RECOUNT_SECONDS``, and at the next limited write after an account is deleted,
disabled or reset in this process (:meth:`DbStorage.forget`; its data may have gone with it).
Exact for one process; with several nodes, each misses the others' writes and deletions for
at most that long.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.hosting.dataplane.runner import DB_ATTEMPTS, AccountLookup, DbRunner
from imhost.hosting.dataplane.signin import SessionStartReads
from imhost.hosting.models import XmppAccount, XmppOfflineMessage, XmppPrivateXml
from imhost.xmpp.ports import OfflineMessage, StorageFull

T = TypeVar("T")

GAUGE_TTL_SECONDS = 30.0
STORAGE_RECOUNT_SECONDS = 30.0
"""A service's stored-bytes counter is counted again from the database after this long."""


class ServiceIds(Protocol):
    def service_id_of(self, domain: str) -> str | None:
        """The service id of a hosted domain (None: not hosted here)."""
        ...


@dataclass(slots=True)
class _StoredBytes:
    """Offline and private bytes of one service, as this process knows them.

    ``total`` is what the database held when counted, plus this process's writes since
    (reserved before their commit, so two writes in flight cannot both take the last bytes),
    minus its deletions (after their commit, so a failed deletion frees nothing).
    """

    total: int
    counted_at: float
    """``time.monotonic()`` of the count; older than STORAGE_RECOUNT_SECONDS: count again."""


@dataclass(slots=True)
class _StorageLedger:
    """What one transaction does to the counters: growth reserved before the commit (given
    back if it rolls back), bytes freed applied after it."""

    reserved: list[tuple[str, int, _StoredBytes | None]] = field(default_factory=list)
    freed: list[tuple[str, int]] = field(default_factory=list)


class DbStorage:
    """``OfflineStore`` and the private-XML half of ``PrivateStore``; see the module docstring."""

    def __init__(
        self,
        runner: DbRunner,
        accounts: AccountLookup,
        directory: ServiceIds,
        reads: SessionStartReads | None = None,
    ) -> None:
        self.runner = runner
        self.accounts = accounts
        self.directory = directory
        self.reads = reads
        """The session start's snapshot: says whether offline messages wait (None: read)."""
        self._gauges: tuple[float, dict[str, int], dict[str, int]] | None = None
        self._offline_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._stored: dict[str, _StoredBytes] = {}
        """Service id -> stored bytes (see the module docstring); guarded by _stored_lock."""
        self._in_flight: dict[str, int] = {}
        """Service id -> bytes reserved by transactions not yet committed (for a recount)."""
        self._stored_lock = threading.Lock()

    async def _db_storage(self, work: Callable[[Session, _StorageLedger], T]) -> T:
        """:meth:`_db` for a write that changes stored bytes: ``work`` notes in the ledger
        what it reserves (:meth:`_reserve_storage`) and frees; both are settled once the
        transaction has committed or rolled back."""

        def run() -> T:
            for attempt in range(DB_ATTEMPTS):
                ledger = _StorageLedger()
                try:
                    with transaction(self.runner.factory, write=True) as session:
                        result = work(session, ledger)
                except BaseException as exc:
                    self._settle_storage(ledger, committed=False)
                    if isinstance(exc, OperationalError) and attempt < DB_ATTEMPTS - 1:
                        time.sleep(0.02 * (attempt + 1))
                        continue
                    raise
                self._settle_storage(ledger, committed=True)
                return result
            raise AssertionError("unreachable")

        return await self.runner.call(run)

    # -- stored bytes per service (the storage limit) ----------------------------------------

    def _stored_counter(self, session: Session, service_id: str) -> _StoredBytes:
        """The service's counter, counted from the database if missing or too old."""
        with self._stored_lock:
            counter = self._stored.get(service_id)
            if counter is not None and time.monotonic() - counter.counted_at < (
                STORAGE_RECOUNT_SECONDS
            ):
                return counter
        stored = hosting.stored_bytes(session, service_id)
        with self._stored_lock:
            # Another write may have counted (and reserved on its counter) meanwhile: use
            # that counter, or both writes would reserve on counters of their own.
            counter = self._stored.get(service_id)
            if counter is not None and time.monotonic() - counter.counted_at < (
                STORAGE_RECOUNT_SECONDS
            ):
                return counter
            # Writes reserved but not committed are not in the sums yet: add them.
            counted = stored + self._in_flight.get(service_id, 0)
            counter = self._stored[service_id] = _StoredBytes(counted, time.monotonic())
            return counter

    def _reserve_storage(
        self,
        session: Session,
        ledger: _StorageLedger,
        domain: str,
        service_id: str,
        growth: int,
        max_host_bytes: int | None,
    ) -> None:
        """Take ``growth`` bytes for this transaction, or raise :class:`StorageFull`.

        Called before the rows are added or changed (a count must not see them). Shrinking
        (negative growth) is never refused and frees its bytes only after the commit.
        """
        if growth < 0:
            ledger.freed.append((service_id, -growth))
            return
        if growth == 0:
            return
        counter = self._stored_counter(session, service_id) if max_host_bytes is not None else None
        with self._stored_lock:
            if counter is None:
                counter = self._stored.get(service_id)  # unlimited: keep a counter right
            if counter is not None:
                if max_host_bytes is not None and counter.total + growth > max_host_bytes:
                    raise StorageFull(domain, max_host_bytes)
                counter.total += growth
            self._in_flight[service_id] = self._in_flight.get(service_id, 0) + growth
        ledger.reserved.append((service_id, growth, counter))

    def _settle_storage(self, ledger: _StorageLedger, *, committed: bool) -> None:
        with self._stored_lock:
            for service_id, growth, counter in ledger.reserved:
                left = self._in_flight.get(service_id, 0) - growth
                if left:
                    self._in_flight[service_id] = left
                else:
                    self._in_flight.pop(service_id, None)
                if not committed and counter is not None:
                    counter.total -= growth
            if committed:
                for service_id, freed in ledger.freed:
                    current = self._stored.get(service_id)
                    if current is not None:
                        current.total = max(0, current.total - freed)

    def forget(self, service_id: str) -> None:
        """Count this service again at its next limited write (its data changed elsewhere)."""
        with self._stored_lock:
            self._stored.pop(service_id, None)

    def stored_bytes(self, domain: str) -> int | None:
        """Offline and private bytes of a host as this process counts them (None: not counted
        yet, i.e. no write under a storage limit since the last recount)."""
        service_id = self.directory.service_id_of(domain)
        if service_id is None:
            return None
        with self._stored_lock:
            counter = self._stored.get(service_id)
            return counter.total if counter is not None else None

    # OfflineStore: one operation at a time per account, in the order they were asked for,
    # so a message stored just before its recipient comes online is never left behind by
    # a pop_all that ran first on another thread.

    def _offline_lock(self, domain: str, localpart: str) -> asyncio.Lock:
        key = (domain, localpart)
        lock = self._offline_locks.get(key)
        if lock is None:
            lock = self._offline_locks[key] = asyncio.Lock()
        return lock

    async def push(
        self,
        domain: str,
        localpart: str,
        stanza: str,
        stored_at: datetime,
        limit: int,
        max_host_bytes: int | None = None,
    ) -> bool:
        account_id = await self.accounts.account_id(domain, localpart)
        service_id = self.directory.service_id_of(domain)
        if account_id is None or service_id is None:
            return False
        size = len(stanza.encode("utf-8"))

        def write(session: Session, ledger: _StorageLedger) -> bool:
            session.get(XmppAccount, account_id, with_for_update=True)  # serialise per account
            held = session.scalar(
                select(func.count())
                .select_from(XmppOfflineMessage)
                .where(XmppOfflineMessage.account_id == account_id)
            )
            if (held or 0) >= limit:
                return False
            self._reserve_storage(session, ledger, domain, service_id, size, max_host_bytes)
            session.add(
                XmppOfflineMessage(
                    account_id=account_id,
                    service_id=service_id,
                    stanza=stanza,
                    size=size,
                    stored_at=stored_at,
                )
            )
            return True

        async with self._offline_lock(domain, localpart):
            self._changed(account_id)
            try:
                return await self._db_storage(write)
            finally:
                self._changed(account_id)

    def _changed(self, account_id: str) -> None:
        if self.reads is not None:
            self.reads.changed(account_id)

    async def pop_all(self, domain: str, localpart: str) -> list[OfflineMessage]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return []

        def take(session: Session, ledger: _StorageLedger) -> list[OfflineMessage]:
            rows = list(
                session.scalars(
                    select(XmppOfflineMessage)
                    .where(XmppOfflineMessage.account_id == account_id)
                    .order_by(XmppOfflineMessage.id)
                    .with_for_update()
                )
            )
            if rows:
                session.execute(
                    delete(XmppOfflineMessage).where(
                        XmppOfflineMessage.id.in_([r.id for r in rows])
                    )
                )
                ledger.freed.append((rows[0].service_id, sum(r.size for r in rows)))
            return [OfflineMessage(r.stanza, r.stored_at) for r in rows]

        async with self._offline_lock(domain, localpart):
            # Most logins find nothing waiting: the session start's snapshot says so without
            # a write transaction.
            if self.reads is not None and not (await self.reads.of(account_id)).offline_waiting:
                return []
            self._changed(account_id)
            try:
                return await self._db_storage(take)
            finally:
                self._changed(account_id)

    async def count(self, domain: str, localpart: str) -> int:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return 0
        return await self.runner.run(
            lambda s: int(
                s.scalar(
                    select(func.count())
                    .select_from(XmppOfflineMessage)
                    .where(XmppOfflineMessage.account_id == account_id)
                )
                or 0
            )
        )

    async def _storage(self) -> tuple[dict[str, int], dict[str, int]]:
        """Stored bytes per service id (offline, private); one query each per 30 s."""
        now = time.monotonic()
        if self._gauges is not None and self._gauges[0] > now:
            return self._gauges[1], self._gauges[2]

        def read(session: Session) -> tuple[dict[str, int], dict[str, int]]:
            offline = session.execute(
                select(XmppOfflineMessage.service_id, func.sum(XmppOfflineMessage.size)).group_by(
                    XmppOfflineMessage.service_id
                )
            )
            private = session.execute(
                select(XmppPrivateXml.service_id, func.sum(XmppPrivateXml.size)).group_by(
                    XmppPrivateXml.service_id
                )
            )
            return (
                {sid: int(total or 0) for sid, total in offline},
                {sid: int(total or 0) for sid, total in private},
            )

        offline, private = await self.runner.run(read)
        self._gauges = (now + GAUGE_TTL_SECONDS, offline, private)
        return offline, private

    async def bytes_used(self, domain: str) -> int:
        """Offline storage bytes of a host (a metering gauge)."""
        service_id = self.directory.service_id_of(domain)
        if service_id is None:
            return 0
        offline, _ = await self._storage()
        return offline.get(service_id, 0)

    async def private_bytes_used(self, domain: str) -> int:
        service_id = self.directory.service_id_of(domain)
        if service_id is None:
            return 0
        _, private = await self._storage()
        return private.get(service_id, 0)

    # PrivateStore (through DbPrivateStore)

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return None
        return await self.runner.run(
            lambda s: s.scalar(
                select(XmppPrivateXml.xml).where(
                    XmppPrivateXml.account_id == account_id, XmppPrivateXml.key == key
                )
            )
        )

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        service_id = self.directory.service_id_of(domain)
        if account_id is None or service_id is None or not items:
            return
        new = {key: (xml, len(xml.encode("utf-8"))) for key, xml in items}

        def write(session: Session, ledger: _StorageLedger) -> None:
            session.get(XmppAccount, account_id, with_for_update=True)  # serialise per account
            rows = {
                row.key: row
                for row in session.scalars(
                    select(XmppPrivateXml).where(
                        XmppPrivateXml.account_id == account_id,
                        XmppPrivateXml.key.in_(list(new)),
                    )
                )
            }
            growth = sum(size - (rows[k].size if k in rows else 0) for k, (_, size) in new.items())
            self._reserve_storage(session, ledger, domain, service_id, growth, max_host_bytes)
            for key, (xml, size) in new.items():
                row = rows.get(key)
                if row is None:
                    row = XmppPrivateXml(account_id=account_id, service_id=service_id, key=key)
                    session.add(row)
                row.xml = xml
                row.size = size

        await self._db_storage(write)
