"""Adapters of the per-account stores without a storage limit: ``RosterStore``,
``VCardStore`` and ``BlockListStore`` (:mod:`imhost.xmpp.ports`). An unknown account reads
as empty and its writes are ignored, as the ports say."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from imhost.hosting import repository as repo
from imhost.hosting.dataplane.runner import AccountLookup, DbRunner
from imhost.xmpp.ports import RosterItem


class DbRosterStore:
    """``RosterStore``: roster items with a version (XEP-0237) and pending inbound
    subscription requests (RFC 6121 §3.1.3), per account."""

    def __init__(self, runner: DbRunner, accounts: AccountLookup) -> None:
        self.runner = runner
        self.accounts = accounts

    async def get_roster(self, domain: str, localpart: str) -> tuple[str, list[RosterItem]]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return "0", []

        def read(session: Session) -> tuple[str, list[RosterItem]]:
            return repo.roster_version(session, account_id), repo.roster_items(session, account_id)

        return await self.runner.run(read)

    async def set_item(self, domain: str, localpart: str, item: RosterItem) -> str:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return "0"

        def write(session: Session) -> str:
            version = repo.bump_roster_version(session, account_id)
            repo.upsert_roster_item(session, account_id, item)
            return version

        return await self.runner.run(write, write=True)

    async def remove_item(self, domain: str, localpart: str, jid: str) -> str:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return "0"

        def write(session: Session) -> str:
            if repo.delete_roster_item(session, account_id, jid):
                return repo.bump_roster_version(session, account_id)
            return repo.roster_version(session, account_id)

        return await self.runner.run(write, write=True)

    async def get_pending_in(self, domain: str, localpart: str) -> dict[str, str]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return {}
        return await self.runner.run(lambda s: repo.pending_in(s, account_id))

    async def set_pending_in(self, domain: str, localpart: str, jid: str, stanza: str) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return
        await self.runner.run(
            lambda s: repo.upsert_pending_in(s, account_id, jid, stanza), write=True
        )

    async def remove_pending_in(self, domain: str, localpart: str, jid: str) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return
        await self.runner.run(lambda s: repo.delete_pending_in(s, account_id, jid))


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
    """``BlockListStore``: the account's blocked JIDs (XEP-0191)."""

    def __init__(self, runner: DbRunner, accounts: AccountLookup) -> None:
        self.runner = runner
        self.accounts = accounts

    async def get_blocklist(self, domain: str, localpart: str) -> set[str]:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None:
            return set()
        return await self.runner.run(lambda s: repo.blocked_jids(s, account_id))

    async def block(self, domain: str, localpart: str, jids: Sequence[str]) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None or not jids:
            return
        await self.runner.run(lambda s: repo.add_blocked(s, account_id, jids), write=True)

    async def unblock(self, domain: str, localpart: str, jids: Sequence[str] | None) -> None:
        account_id = await self.accounts.account_id(domain, localpart)
        if account_id is None or (jids is not None and not jids):
            return
        await self.runner.run(lambda s: repo.delete_blocked(s, account_id, jids))
