"""What a session's start reads of its account, in one read transaction.

At the first presence the engine asks for the roster, the pending subscription requests,
the block list and the offline messages: four reads, each a transaction on a worker thread.
:class:`SessionStartReads` reads all four together on the first ask (the sessions that start
while another's read runs are read together after it, in one transaction: a
:class:`~imhost.hosting.dataplane.runner.ReadBatcher`) and answers the others from that
snapshot for ``ttl`` seconds (2 s), unless this process writes any of them for the account
meanwhile (every write of the store adapters calls :meth:`SessionStartReads.changed`
before and after it, so a snapshot never hides a write made here). A write by another
process (another node, the web app writing the database directly) within those seconds is
seen at the next read, as if the read had happened a moment earlier.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.hosting import repository as repo
from imhost.hosting.dataplane.runner import DbRunner, ReadBatcher
from imhost.hosting.models import (
    XmppAccount,
    XmppBlockedJid,
    XmppOfflineMessage,
    XmppPendingSubscription,
    XmppRosterItem,
)
from imhost.xmpp.ports import RosterItem

SESSION_START_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class AccountReads:
    roster_version: str
    roster: tuple[RosterItem, ...]
    pending_in: tuple[tuple[str, str], ...]
    blocked: frozenset[str]
    offline_waiting: bool


def read_account(session: Session, account_id: str) -> AccountReads:
    waiting = session.scalar(
        select(XmppOfflineMessage.id).where(XmppOfflineMessage.account_id == account_id).limit(1)
    )
    return AccountReads(
        roster_version=repo.roster_version(session, account_id),
        roster=tuple(repo.roster_items(session, account_id)),
        pending_in=tuple(repo.pending_in(session, account_id).items()),
        blocked=frozenset(repo.blocked_jids(session, account_id)),
        offline_waiting=waiting is not None,
    )


def read_accounts(session: Session, account_ids: list[str]) -> dict[str, AccountReads]:
    """What :func:`read_account` reads, of several accounts (sessions starting at once): one
    query per kind of data for all of them, in one transaction."""
    ids = sorted(set(account_ids))
    versions: dict[str, int | None] = dict(
        session.execute(
            select(XmppAccount.id, XmppAccount.roster_version).where(XmppAccount.id.in_(ids))
        ).all()
    )
    rosters: dict[str, list[RosterItem]] = {}
    for account_id, jid, name, subscription, ask, approved, groups in session.execute(
        select(
            XmppRosterItem.account_id,
            XmppRosterItem.jid,
            XmppRosterItem.name,
            XmppRosterItem.subscription,
            XmppRosterItem.ask,
            XmppRosterItem.approved,
            XmppRosterItem.groups,
        )
        .where(XmppRosterItem.account_id.in_(ids))
        .order_by(XmppRosterItem.account_id, XmppRosterItem.jid)
    ):
        rosters.setdefault(account_id, []).append(
            RosterItem(
                jid=jid,
                name=name,
                subscription=subscription,
                ask=ask,
                approved=approved,
                groups=tuple(groups or ()),
            )
        )
    pending: dict[str, dict[str, str]] = {}
    for account_id, jid, stanza in session.execute(
        select(
            XmppPendingSubscription.account_id,
            XmppPendingSubscription.jid,
            XmppPendingSubscription.stanza,
        ).where(XmppPendingSubscription.account_id.in_(ids))
    ):
        pending.setdefault(account_id, {})[jid] = stanza
    blocked: dict[str, set[str]] = {}
    for account_id, jid in session.execute(
        select(XmppBlockedJid.account_id, XmppBlockedJid.jid).where(
            XmppBlockedJid.account_id.in_(ids)
        )
    ):
        blocked.setdefault(account_id, set()).add(jid)
    waiting = set(
        session.scalars(
            select(XmppOfflineMessage.account_id)
            .where(XmppOfflineMessage.account_id.in_(ids))
            .distinct()
        )
    )
    return {
        account_id: AccountReads(
            roster_version=str(versions.get(account_id) or 0),
            roster=tuple(rosters.get(account_id, ())),
            pending_in=tuple(pending.get(account_id, {}).items()),
            blocked=frozenset(blocked.get(account_id, ())),
            offline_waiting=account_id in waiting,
        )
        for account_id in account_ids
    }


class SessionStartReads:
    """See the module docstring. Used from the event loop only."""

    def __init__(self, runner: DbRunner, *, ttl: float = SESSION_START_SECONDS) -> None:
        self.runner = runner
        self.ttl = ttl
        self._snapshots: dict[str, tuple[float, AccountReads]] = {}
        self._reading: dict[str, asyncio.Future[AccountReads]] = {}
        self._changes: dict[str, int] = {}
        self._batch: ReadBatcher[str, AccountReads] = ReadBatcher(runner, read_accounts)

    def changed(self, account_id: str) -> None:
        """A write of this account's roster, subscriptions, block list or offline messages
        begins or has ended: no snapshot read before it is used any more."""
        self._snapshots.pop(account_id, None)
        self._reading.pop(account_id, None)  # later askers read again
        self._changes[account_id] = self._changes.get(account_id, 0) + 1

    def prune(self) -> None:
        now = time.monotonic()
        for account_id in [k for k, (until, _) in self._snapshots.items() if until <= now]:
            del self._snapshots[account_id]
        for account_id in [k for k in self._changes if k not in self._reading]:
            del self._changes[account_id]

    async def of(self, account_id: str) -> AccountReads:
        cached = self._snapshots.get(account_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        reading = self._reading.get(account_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(account_id))
            self._reading[account_id] = reading
        return await asyncio.shield(reading)

    async def _read(self, account_id: str) -> AccountReads:
        seen = self._changes.get(account_id, 0)
        try:
            reads = await self._batch.get(account_id)
        finally:
            if self._reading.get(account_id) is asyncio.current_task():
                del self._reading[account_id]
        if seen == self._changes.get(account_id, 0):
            self._snapshots[account_id] = (time.monotonic() + self.ttl, reads)
        return reads
