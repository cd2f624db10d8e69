"""``ArchiveStore`` (:mod:`imhost.xmpp.ports`): the accounts' XEP-0313 message archives in
``xmpp_archive`` and their preferences in ``xmpp_archive_prefs``.

The engine appends in batches (its :class:`~imhost.xmpp.modules.mam.ArchiveWriter` queue,
one transaction per batch, never on the message path) and reads for queries. A page is one
indexed range read on ``(account_id, stamp, archive_id)`` (or ``(account_id, with_jid,
stamp)``), plus one count. Full-text search (``urn:xmpp:fulltext:0``) is a case-insensitive
``LIKE`` per word over the owner's rows: no text index, but bounded by one account's archive.
The archive's size per service (the ``archive_storage_bytes`` gauge) is summed once, then
kept by the appends and summed again every :data:`SIZE_REFRESH_SECONDS` (the retention job
runs in another process).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from imhost.hosting.dataplane.hosts import HostCache
from imhost.hosting.dataplane.runner import AccountLookup, DbRunner
from imhost.hosting.models import XmppArchivedMessage, XmppArchivePrefs
from imhost.xmpp.ports import (
    ArchivedMessage,
    ArchiveFilter,
    ArchivePage,
    ArchivePrefs,
    UnknownArchiveId,
)

SIZE_REFRESH_SECONDS = 300.0

Row = XmppArchivedMessage
INSERT_SQLITE = (
    "INSERT INTO xmpp_archive (account_id, service_id, archive_id, with_jid, with_resource, "
    "outgoing, stamp, stanza, body, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account_id, archive_id) DO NOTHING"
)
INSERT_POSTGRESQL = (
    "INSERT INTO xmpp_archive (account_id, service_id, archive_id, with_jid, with_resource, "
    "outgoing, stamp, stanza, body, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (account_id, archive_id) DO NOTHING"
)
"""A batch of archived messages, written by the driver's executemany (``write`` below)."""
SQLITE_STAMP = "%Y-%m-%d %H:%M:%S.%f"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _after(key: tuple[datetime, str]) -> ColumnElement[bool]:
    stamp, archive_id = key
    return or_(Row.stamp > stamp, and_(Row.stamp == stamp, Row.archive_id > archive_id))


def _before(key: tuple[datetime, str]) -> ColumnElement[bool]:
    stamp, archive_id = key
    return or_(Row.stamp < stamp, and_(Row.stamp == stamp, Row.archive_id < archive_id))


def query_page(
    session: Session,
    account_id: str,
    domain: str,
    localpart: str,
    f: ArchiveFilter,
    *,
    after: str | None,
    before: str | None,
    last: bool,
    limit: int,
) -> ArchivePage:
    """One page of an account's archive (the contract of ``ArchiveStore.query``)."""
    named = {i for i in (after, before, f.after_id, f.before_id, *f.ids) if i}
    keys: dict[str, tuple[datetime, str]] = {}
    if named:
        rows = session.execute(
            select(Row.archive_id, Row.stamp).where(
                Row.account_id == account_id, Row.archive_id.in_(named)
            )
        )
        keys = {archive_id: (stamp, archive_id) for archive_id, stamp in rows}
        for archive_id in sorted(named):
            if archive_id not in keys:
                raise UnknownArchiveId(archive_id)
    conditions: list[ColumnElement[bool]] = [Row.account_id == account_id]
    if f.with_jid is not None:
        bare, _, resource = f.with_jid.partition("/")
        conditions.append(Row.with_jid == bare)
        if resource:
            conditions.append(Row.with_resource == resource)
    if f.start is not None:
        conditions.append(Row.stamp >= f.start)
    if f.end is not None:
        conditions.append(Row.stamp <= f.end)
    if f.after_id:
        conditions.append(_after(keys[f.after_id]))
    if f.before_id:
        conditions.append(_before(keys[f.before_id]))
    if f.ids:
        conditions.append(Row.archive_id.in_(set(f.ids)))
    if f.text:
        for word in f.text.split():
            pattern = f"%{_escape_like(word.lower())}%"
            conditions.append(func.lower(Row.body).like(pattern, escape="\\"))
    count = session.scalar(select(func.count()).select_from(Row).where(*conditions)) or 0
    cut = list(conditions)
    if after:
        cut.append(_after(keys[after]))
    if before:
        cut.append(_before(keys[before]))
    backward = last or bool(before)
    order = (Row.stamp.desc(), Row.archive_id.desc()) if backward else (Row.stamp, Row.archive_id)
    rows_found = list(session.scalars(select(Row).where(*cut).order_by(*order).limit(limit + 1)))
    complete = len(rows_found) <= limit
    rows_found = rows_found[:limit]
    if backward:
        rows_found.reverse()
    messages = [
        ArchivedMessage(
            id=r.archive_id,
            domain=domain,
            localpart=localpart,
            with_jid=r.with_jid,
            with_resource=r.with_resource,
            stamp=r.stamp,
            outgoing=r.outgoing,
            stanza=r.stanza,
            text=r.body,
        )
        for r in rows_found
    ]
    return ArchivePage(messages, complete, count)


class DbArchiveStore:
    """``ArchiveStore`` on the database; an unknown account's messages are dropped and its
    archive reads as empty, as the port says."""

    def __init__(self, runner: DbRunner, accounts: AccountLookup, hosts: HostCache) -> None:
        self.runner = runner
        self.accounts = accounts
        self.hosts = hosts
        self._bytes: dict[str, tuple[float, int]] = {}
        """service id -> (monotonic time summed, bytes)."""

    async def append(self, messages: Sequence[ArchivedMessage]) -> None:
        rows: list[tuple[Any, ...]] = []
        owners: dict[tuple[str, str], str | None] = {}
        for m in messages:
            service_id = self.hosts.service_id_of(m.domain)
            key = (m.domain, m.localpart)
            if key not in owners:
                owners[key] = await self.accounts.account_id(m.domain, m.localpart)
            account_id = owners[key]
            if service_id is None or account_id is None:
                continue
            rows.append(
                (
                    account_id,
                    service_id,
                    m.id,
                    m.with_jid,
                    m.with_resource,
                    m.outgoing,
                    m.stamp,
                    m.stanza,
                    m.text,
                    m.size,
                )
            )
        if not rows:
            return

        def write(session: Session) -> int:
            # The driver's executemany on prepared tuples: no ORM objects and no per-row
            # type processing, so the writing thread holds the interpreter lock briefly and
            # the event loop keeps routing. A row stored already (a retried batch) is skipped.
            connection = session.connection()
            sqlite = connection.dialect.name == "sqlite"
            params = [
                (
                    *row[:6],
                    # as SQLAlchemy's DateTime stores it on SQLite: naive UTC text
                    row[6].astimezone(UTC).strftime(SQLITE_STAMP) if sqlite else row[6],
                    *row[7:],
                )
                for row in rows
            ]
            result = connection.exec_driver_sql(
                INSERT_SQLITE if sqlite else INSERT_POSTGRESQL, params
            )
            return result.rowcount

        inserted = await self.runner.run(write, write=True)
        if inserted == len(rows):
            for row in rows:
                service_id, size = row[1], row[9]
                known = self._bytes.get(service_id)
                if known is not None:
                    self._bytes[service_id] = (known[0], known[1] + size)
        else:
            # some were stored before (or the driver cannot say): sum again at the next read
            for service_id in {row[1] for row in rows}:
                self._bytes.pop(service_id, None)

    async def query(
        self,
        domain: str,
        localpart: str,
        filter: ArchiveFilter,
        *,
        after: str | None = None,
        before: str | None = None,
        last: bool = False,
        limit: int = 50,
    ) -> ArchivePage:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            for archive_id in (after, before, filter.after_id, filter.before_id, *filter.ids):
                if archive_id:
                    raise UnknownArchiveId(archive_id)
            return ArchivePage([], True, 0)
        found = account_id
        return await self.runner.run(
            lambda s: query_page(
                s,
                found,
                domain,
                localpart,
                filter,
                after=after,
                before=before,
                last=last,
                limit=limit,
            )
        )

    async def get_prefs(self, domain: str, localpart: str) -> ArchivePrefs | None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return None

        def read(session: Session) -> ArchivePrefs | None:
            row = session.get(XmppArchivePrefs, account_id)
            if row is None:
                return None
            return ArchivePrefs(row.default, frozenset(row.always), frozenset(row.never))

        return await self.runner.run(read)

    async def set_prefs(self, domain: str, localpart: str, prefs: ArchivePrefs) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return

        def write(session: Session) -> None:
            row = session.get(XmppArchivePrefs, account_id)
            if row is None:
                row = XmppArchivePrefs(account_id=account_id)
                session.add(row)
            row.default = prefs.default
            row.always = sorted(prefs.always)
            row.never = sorted(prefs.never)

        await self.runner.run(write, write=True)

    async def archive_bytes_used(self, domain: str) -> int:
        service_id = self.hosts.service_id_of(domain)
        if service_id is None:
            return 0
        known = self._bytes.get(service_id)
        now = time.monotonic()
        if known is not None and now - known[0] < SIZE_REFRESH_SECONDS:
            return known[1]
        total = await self.runner.run(
            lambda s: s.scalar(
                select(func.coalesce(func.sum(Row.size), 0)).where(Row.service_id == service_id)
            )
        )
        self._bytes[service_id] = (now, int(total or 0))
        return int(total or 0)
