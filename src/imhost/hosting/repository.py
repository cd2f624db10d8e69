"""Queries of the data plane's adapters in :mod:`imhost.hosting.dataplane`: the host
directory, account authentication and client versions, and the per-account stores (roster,
pending subscriptions, vCards, blocking). Each takes the session of the caller's transaction
and never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imhost.hosting.models import (
    HostedService,
    XmppAccount,
    XmppBlockedJid,
    XmppPendingSubscription,
    XmppRosterItem,
    XmppVCard,
)
from imhost.xmpp.ports import RosterItem

# -- host directory and accounts ----------------------------------------------------------------


def hosted_services(session: Session) -> Sequence[HostedService]:
    return session.scalars(select(HostedService)).all()


def accounts_changed_since(session: Session, since: datetime) -> list[tuple[str, str, bool, str]]:
    """(domain, localpart, disabled, disabled reason) of the accounts updated since ``since``."""
    rows = session.execute(
        select(
            HostedService.domain,
            XmppAccount.localpart,
            XmppAccount.disabled,
            XmppAccount.disabled_reason,
        )
        .join(HostedService, HostedService.id == XmppAccount.service_id)
        .where(XmppAccount.updated_at >= since)
    )
    return [(d, lp, bool(dis), reason or "") for d, lp, dis, reason in rows]


def existing_account_ids(session: Session, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` are still accounts (a deletion leaves no row to poll for)."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        found.update(session.scalars(select(XmppAccount.id).where(XmppAccount.id.in_(chunk))))
    return found


def accounts_of_services(
    session: Session, service_ids: Sequence[str], limit: int
) -> Sequence[XmppAccount]:
    """Up to ``limit`` accounts of the services, those who signed in last first (the
    engine's credential cache warmed at start)."""
    if not service_ids:
        return []
    return session.scalars(
        select(XmppAccount)
        .where(XmppAccount.service_id.in_(list(service_ids)))
        .order_by(XmppAccount.last_login_at.desc().nulls_last(), XmppAccount.id)
        .limit(limit)
    ).all()


def find_account(session: Session, service_id: str | None, localpart: str) -> XmppAccount | None:
    return session.scalar(
        select(XmppAccount).where(
            XmppAccount.service_id == service_id, XmppAccount.localpart == localpart
        )
    )


def find_accounts(
    session: Session, service_id: str, localparts: Sequence[str]
) -> Sequence[XmppAccount]:
    """The accounts of ``service_id`` named in ``localparts`` (those that exist)."""
    return session.scalars(
        select(XmppAccount).where(
            XmppAccount.service_id == service_id, XmppAccount.localpart.in_(list(localparts))
        )
    ).all()


# -- roster -------------------------------------------------------------------------------------


def roster_version(session: Session, account_id: str) -> str:
    version = session.scalar(select(XmppAccount.roster_version).where(XmppAccount.id == account_id))
    return str(version or 0)


def roster_items(session: Session, account_id: str) -> list[RosterItem]:
    rows = session.scalars(
        select(XmppRosterItem)
        .where(XmppRosterItem.account_id == account_id)
        .order_by(XmppRosterItem.jid)
    )
    return [
        RosterItem(
            jid=r.jid,
            name=r.name,
            subscription=r.subscription,
            ask=r.ask,
            approved=r.approved,
            groups=tuple(r.groups or ()),
        )
        for r in rows
    ]


def bump_roster_version(session: Session, account_id: str) -> str:
    """Next roster version (XEP-0237), the account row locked for the rest of the transaction."""
    account = session.get(XmppAccount, account_id, with_for_update=True)
    if account is None:
        return "0"
    account.roster_version = (account.roster_version or 0) + 1
    return str(account.roster_version)


def upsert_roster_item(session: Session, account_id: str, row: RosterItem) -> None:
    item = session.scalar(
        select(XmppRosterItem).where(
            XmppRosterItem.account_id == account_id, XmppRosterItem.jid == row.jid
        )
    )
    if item is None:
        item = XmppRosterItem(account_id=account_id, jid=row.jid)
        session.add(item)
    item.name = row.name
    item.subscription = row.subscription
    item.ask = row.ask
    item.approved = row.approved
    item.groups = list(row.groups)


def delete_roster_item(session: Session, account_id: str, jid: str) -> bool:
    result = session.execute(
        delete(XmppRosterItem).where(
            XmppRosterItem.account_id == account_id, XmppRosterItem.jid == jid
        )
    )
    return bool(getattr(result, "rowcount", 0))


# -- pending subscription requests ----------------------------------------------------------------


def pending_in(session: Session, account_id: str) -> dict[str, str]:
    rows = session.scalars(
        select(XmppPendingSubscription).where(XmppPendingSubscription.account_id == account_id)
    )
    return {r.jid: r.stanza for r in rows}


def upsert_pending_in(session: Session, account_id: str, jid: str, stanza: str) -> None:
    row = session.scalar(
        select(XmppPendingSubscription).where(
            XmppPendingSubscription.account_id == account_id,
            XmppPendingSubscription.jid == jid,
        )
    )
    if row is None:
        session.add(XmppPendingSubscription(account_id=account_id, jid=jid, stanza=stanza))
    else:
        row.stanza = stanza


def delete_pending_in(session: Session, account_id: str, jid: str) -> None:
    session.execute(
        delete(XmppPendingSubscription).where(
            XmppPendingSubscription.account_id == account_id,
            XmppPendingSubscription.jid == jid,
        )
    )


# -- vCards ---------------------------------------------------------------------------------------


def vcard_xml(session: Session, account_id: str) -> str | None:
    return session.scalar(select(XmppVCard.xml).where(XmppVCard.account_id == account_id))


def upsert_vcard(session: Session, account_id: str, xml: str) -> None:
    row = session.get(XmppVCard, account_id)
    if row is None:
        session.add(XmppVCard(account_id=account_id, xml=xml))
    else:
        row.xml = xml


# -- blocking -------------------------------------------------------------------------------------


def blocked_jids(session: Session, account_id: str) -> set[str]:
    return set(
        session.scalars(select(XmppBlockedJid.jid).where(XmppBlockedJid.account_id == account_id))
    )


def add_blocked(session: Session, account_id: str, jids: Sequence[str]) -> None:
    have = blocked_jids(session, account_id)
    for jid in dict.fromkeys(jids):
        if jid not in have:
            session.add(XmppBlockedJid(account_id=account_id, jid=jid))


def delete_blocked(session: Session, account_id: str, jids: Sequence[str] | None) -> None:
    """Remove ``jids`` from the account's block list, or all of it when ``jids`` is None."""
    stmt = delete(XmppBlockedJid).where(XmppBlockedJid.account_id == account_id)
    if jids is not None:
        stmt = stmt.where(XmppBlockedJid.jid.in_(list(jids)))
    session.execute(stmt)
