"""Adapters of the per-account stores without a storage limit: ``RosterStore``,
``VCardStore`` and ``BlockListStore`` (:mod:`imhost.xmpp.ports`). An unknown account reads
as empty and its writes are ignored, as the ports say."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.orm import Session

from imhost.hosting import repository as repo
from imhost.hosting.dataplane.runner import AccountLookup, DbRunner
from imhost.hosting.dataplane.signin import SessionStartReads
from imhost.xmpp.ports import RosterItem

T = TypeVar("T")


class DbRosterStore:
    """``RosterStore``: roster items with a version (XEP-0237) and pending inbound
    subscription requests (RFC 6121 §3.1.3), per account. Reads come from the session
    start's snapshot (:class:`SessionStartReads`); every write drops it."""

    def __init__(self, runner: DbRunner, accounts: AccountLookup, reads: SessionStartReads) -> None:
        self.runner = runner
        self.accounts = accounts
        self.reads = reads

    async def _write(self, account_id: str, work: Callable[[Session], T]) -> T:
        self.reads.changed(account_id)
        try:
            return await self.runner.run(work, write=True)
        finally:
            self.reads.changed(account_id)

    async def get_roster(self, domain: str, localpart: str) -> tuple[str, list[RosterItem]]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return "0", []
        reads = await self.reads.of(account_id)
        return reads.roster_version, list(reads.roster)

    async def set_item(self, domain: str, localpart: str, item: RosterItem) -> str:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return "0"

        def write(session: Session) -> str:
            version = repo.bump_roster_version(session, account_id)
            repo.upsert_roster_item(session, account_id, item)
            return version

        return await self._write(account_id, write)

    async def remove_item(self, domain: str, localpart: str, jid: str) -> str:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return "0"

        def write(session: Session) -> str:
            if repo.delete_roster_item(session, account_id, jid):
                return repo.bump_roster_version(session, account_id)
            return repo.roster_version(session, account_id)

        return await self._write(account_id, write)

    async def get_pending_in(self, domain: str, localpart: str) -> dict[str, str]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return {}
        return dict((await self.reads.of(account_id)).pending_in)

    async def set_pending_in(self, domain: str, localpart: str, jid: str, stanza: str) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return
        await self._write(account_id, lambda s: repo.upsert_pending_in(s, account_id, jid, stanza))

    async def remove_pending_in(self, domain: str, localpart: str, jid: str) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return
        await self._write(account_id, lambda s: repo.delete_pending_in(s, account_id, jid))


class DbVCardStore:
    """``VCardStore``: one vCard (XEP-0054) per account."""

    def __init__(self, runner: DbRunner, accounts: AccountLookup) -> None:
        self.runner = runner
        self.accounts = accounts

    async def get_vcard(self, domain: str, localpart: str) -> str | None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return None
        return await self.runner.run(lambda s: repo.vcard_xml(s, account_id))

    async def set_vcard(self, domain: str, localpart: str, xml: str) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return
        await self.runner.run(lambda s: repo.upsert_vcard(s, account_id, xml), write=True)


class DbBlockListStore:
    """``BlockListStore``: the account's blocked JIDs (XEP-0191); reads from the session
    start's snapshot, which every write drops."""

    def __init__(self, runner: DbRunner, accounts: AccountLookup, reads: SessionStartReads) -> None:
        self.runner = runner
        self.accounts = accounts
        self.reads = reads

    async def _write(self, account_id: str, work: Callable[[Session], None]) -> None:
        self.reads.changed(account_id)
        try:
            await self.runner.run(work, write=True)
        finally:
            self.reads.changed(account_id)

    async def get_blocklist(self, domain: str, localpart: str) -> set[str]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return set()
        return set((await self.reads.of(account_id)).blocked)

    async def block(self, domain: str, localpart: str, jids: Sequence[str]) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None or not jids:
            return
        await self._write(account_id, lambda s: repo.add_blocked(s, account_id, jids))

    async def unblock(self, domain: str, localpart: str, jids: Sequence[str] | None) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None or (jids is not None and not jids):
            return
        await self._write(account_id, lambda s: repo.delete_blocked(s, account_id, jids))
