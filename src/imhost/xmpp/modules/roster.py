"""RFC 6121 §2: the roster (get, set, push, remove) and roster versioning (§2.6)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from imhost.kit.jid import parse_jid

from ..ports import RosterItem
from .api import (
    Element,
    Hook,
    IqTarget,
    IqType,
    Module,
    SessionEvent,
    SessionKey,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    result_of,
)
from .common import new_iq, presence

if TYPE_CHECKING:
    from .api import C2SStream

NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"

MAX_NAME_CHARS = 1024
"""Longest item name accepted (RFC 6121 §2.3.3: longer is ``not-acceptable``)."""
MAX_GROUP_CHARS = 1024
MAX_GROUPS_PER_ITEM = 64
MAX_ROSTER_ITEMS = 5000
"""Items per account; past it a roster set adding an item is ``resource-constraint``."""

ROSTER_REQUESTED = SessionKey[bool]("roster-requested", False)
"""RFC 6121 §2.1.6: the session asked for the roster, so it is an "interested resource"."""
ROSTER_VERSIONING = SessionKey[bool]("roster-versioning", False)
"""The session used ``ver`` in its roster get (§2.6): pushes carry the new version."""

SUBSCRIPTIONS = ("none", "to", "from", "both")


@dataclass(slots=True)
class AccountRoster:
    """The cached roster of one account: version and items by bare JID."""

    version: str
    items: dict[str, RosterItem]


def item_element(item: RosterItem, *, remove: bool = False) -> Element:
    """``<item/>`` as in a roster result or push (RFC 6121 §2.1.2)."""
    attrs = {"jid": item.jid}
    if remove:
        attrs["subscription"] = "remove"
        return Element("item", NS_ROSTER, attrs)
    if item.name:
        attrs["name"] = item.name
    attrs["subscription"] = item.subscription
    if item.ask:
        attrs["ask"] = "subscribe"
    if item.approved:
        attrs["approved"] = "true"
    el = Element("item", NS_ROSTER, attrs)
    for group in item.groups:
        el.sub("group", text=group)
    return el


def with_to(item: RosterItem, on: bool) -> RosterItem:
    """Add or remove the "to" direction of a subscription (Appendix A)."""
    has_from = item.subscription in ("from", "both")
    return replace(item, subscription=_sub(on, has_from))


def with_from(item: RosterItem, on: bool) -> RosterItem:
    """Add or remove the "from" direction of a subscription (Appendix A)."""
    has_to = item.subscription in ("to", "both")
    return replace(item, subscription=_sub(has_to, on))


def _sub(to: bool, from_: bool) -> str:
    if to and from_:
        return "both"
    if to:
        return "to"
    if from_:
        return "from"
    return "none"


class RosterModule(Module):
    """RFC 6121 §2 roster management, with versioning (§2.6) and pushes (§2.1.6).

    The roster of an account with a bound session is cached (loaded at resource binding), so
    presence broadcast and subscription processing read it without a store round trip; every
    change is written to the store first, then to the cache, then pushed to each interested
    resource (one that has requested the roster)::

        C: <iq type='set' id='a1'><query xmlns='jabber:iq:roster'>
             <item jid='bob@example.test' name='Bob'><group>Friends</group></item>
           </query></iq>
        S: <iq type='set' to='alice@example.test/res' from='alice@example.test' id='...'>
             <query xmlns='jabber:iq:roster' ver='3'>
               <item jid='bob@example.test' name='Bob' subscription='none'>
                 <group>Friends</group></item></query></iq>
        S: <iq type='result' id='a1' to='alice@example.test/res'/>

    Errors (§2.3.3, §2.5.3): another user's roster ``forbidden``; not exactly one item, no
    ``jid`` or a duplicate group ``bad-request``; a name or group too long, an empty group or
    too many groups ``not-acceptable``; the user's own JID ``not-allowed``; removing an item
    that is not there ``item-not-found``.
    """

    name = "roster"

    def load(self) -> None:
        self._cache: dict[str, AccountRoster] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        ctx = self.ctx
        ctx.iq_handler(NS_ROSTER, IqType.GET, self.on_get, IqTarget.ACCOUNT)
        ctx.iq_handler(NS_ROSTER, IqType.SET, self.on_set, IqTarget.ACCOUNT)
        ctx.add_stream_feature(lambda _s: Element("ver", NS_ROSTERVER))
        ctx.hook(Hook.SESSION_BOUND, self.on_bound, priority=100)
        ctx.hook(Hook.SESSION_CLOSED, self.on_closed, priority=-100)

    # -- cache --------------------------------------------------------------------------------

    def cached(self, localpart: str) -> AccountRoster | None:
        """The cached roster of an account with a bound session (None when not loaded)."""
        return self._cache.get(localpart)

    async def roster(self, localpart: str) -> AccountRoster:
        """The roster, from the cache or the store (cached only while the account is bound)."""
        found = self._cache.get(localpart)
        if found is not None:
            return found
        version, items = await self.ctx.stores.roster.get_roster(self.ctx.domain, localpart)
        found = self._cache.get(localpart)
        if found is not None:  # loaded meanwhile
            return found
        loaded = AccountRoster(version, {i.jid: i for i in items})
        if self.ctx.sessions(localpart):
            self._cache[localpart] = loaded
        return loaded

    def lock(self, localpart: str) -> asyncio.Lock:
        """Serialises read-modify-write of one account's roster (subscriptions, sets)."""
        lock = self._locks.get(localpart)
        if lock is None:
            lock = self._locks[localpart] = asyncio.Lock()
        return lock

    async def on_bound(self, event: SessionEvent) -> None:
        async with self.lock(event.session.localpart):
            await self.roster(event.session.localpart)

    def on_closed(self, event: SessionEvent) -> None:
        localpart = event.session.localpart
        if not self.ctx.sessions(localpart):
            self._cache.pop(localpart, None)
            lock = self._locks.get(localpart)
            if lock is not None and not lock.locked():
                del self._locks[localpart]

    # -- changes ------------------------------------------------------------------------------

    async def save(self, localpart: str, item: RosterItem) -> None:
        """Store an item, update the cache and push it (hold :meth:`lock` around the read)."""
        version = await self.ctx.stores.roster.set_item(self.ctx.domain, localpart, item)
        cached = self._cache.get(localpart)
        if cached is not None:
            cached.items[item.jid] = item
            cached.version = version
        self.push(localpart, item, version)

    async def delete(self, localpart: str, item: RosterItem) -> None:
        version = await self.ctx.stores.roster.remove_item(self.ctx.domain, localpart, item.jid)
        cached = self._cache.get(localpart)
        if cached is not None:
            cached.items.pop(item.jid, None)
            cached.version = version
        self.push(localpart, item, version, remove=True)

    def push(self, localpart: str, item: RosterItem, version: str, *, remove: bool = False) -> None:
        """RFC 6121 §2.1.6: a roster push to every interested resource of the account."""
        bare = f"{localpart}@{self.ctx.domain}"
        for session in self.ctx.sessions(localpart):
            if not session.get(ROSTER_REQUESTED) or session.closed:
                continue
            iq = new_iq("set", session.jid_str, bare)
            query = iq.sub("query", NS_ROSTER)
            if session.get(ROSTER_VERSIONING):
                query.attrs["ver"] = version
            query.children.append(item_element(item, remove=remove))
            session.deliver(iq)

    # -- iq handlers --------------------------------------------------------------------------

    @staticmethod
    def _own(event: StanzaEvent) -> C2SStream:
        session = event.session
        if session is None or event.to is None or event.to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "this is not your roster")
        return session

    def on_get(self, event: StanzaEvent) -> Element | Awaitable[Element]:
        """RFC 6121 §2.1.3 roster get, §2.6.3 with ``ver``."""
        session = self._own(event)
        session.set(ROSTER_REQUESTED, True)
        query = event.stanza.find("query", NS_ROSTER)
        ver = query.get("ver") if query is not None else None
        if ver is not None:
            session.set(ROSTER_VERSIONING, True)
        cached = self._cache.get(session.localpart)
        if cached is not None:
            return self._result(event.stanza, cached, ver)
        return self._get_async(event.stanza, session.localpart, ver)

    async def _get_async(self, iq: Element, localpart: str, ver: str | None) -> Element:
        return self._result(iq, await self.roster(localpart), ver)

    @staticmethod
    def _result(iq: Element, roster: AccountRoster, ver: str | None) -> Element:
        reply = result_of(iq)
        if ver is not None and ver == roster.version:
            return reply  # §2.6.3: unchanged, the client keeps its copy; pushes follow
        query = reply.sub("query", NS_ROSTER)
        if ver is not None:
            query.attrs["ver"] = roster.version
        query.children.extend(item_element(i) for i in roster.items.values())
        return reply

    def on_set(self, event: StanzaEvent) -> Awaitable[Element]:
        """RFC 6121 §2.3 (add/update) and §2.5 (remove)."""
        session = self._own(event)
        query = event.stanza.find("query", NS_ROSTER)
        items = list(query.elements()) if query is not None else []
        if len(items) != 1 or items[0].name != "item" or items[0].ns != NS_ROSTER:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "a roster set has exactly one item")
        item_el = items[0]
        jid_attr = item_el.get("jid")
        if not jid_attr:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "the item has no jid")
        try:
            contact = parse_jid(jid_attr)
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.JID_MALFORMED, str(exc)) from None
        if item_el.get("subscription") == "remove":
            return self._remove(event.stanza, session, str(contact))
        if contact.bare == session.bare_str:
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED, "you cannot add yourself to your roster"
            )
        name = item_el.get("name")
        if name is not None and len(name) > MAX_NAME_CHARS:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE,
                f"the name is longer than {MAX_NAME_CHARS} characters",
            )
        groups = _groups(item_el.elements())
        return self._update(event.stanza, session, str(contact), name or None, groups)

    async def _update(
        self,
        iq: Element,
        session: C2SStream,
        contact: str,
        name: str | None,
        groups: tuple[str, ...],
    ) -> Element:
        localpart = session.localpart
        async with self.lock(localpart):
            roster = await self.roster(localpart)
            old = roster.items.get(contact)
            if old is None and len(roster.items) >= MAX_ROSTER_ITEMS:
                raise StanzaError(
                    StanzaErrorCondition.RESOURCE_CONSTRAINT,
                    f"your roster is full ({MAX_ROSTER_ITEMS} contacts)",
                )
            # §2.1.2.5, §2.1.2.2: subscription and ask in a roster set are ignored.
            if old is None:
                item = RosterItem(jid=contact, name=name, groups=groups)
            else:
                item = replace(old, name=name, groups=groups)
            if item != old:
                await self.save(localpart, item)
        return result_of(iq)

    async def _remove(self, iq: Element, session: C2SStream, contact: str) -> Element:
        """§2.5.2: cancel both directions of the subscription, then remove the item."""
        localpart = session.localpart
        store = self.ctx.stores.roster
        domain = self.ctx.domain
        async with self.lock(localpart):
            roster = await self.roster(localpart)
            old = roster.items.get(contact)
            if old is None:
                raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such roster item")
            pending = await store.get_pending_in(domain, localpart)
            had_pending = contact in pending
            if had_pending:
                await store.remove_pending_in(domain, localpart, contact)
            await self.delete(localpart, old)
        bare = session.bare_str
        to_contact: list[Element] = []
        if old.subscription in ("to", "both") or old.ask:
            to_contact.append(presence(bare, contact, "unsubscribe"))
        if old.subscription in ("from", "both") or had_pending:
            to_contact.append(presence(bare, contact, "unsubscribed"))
        if old.subscription in ("from", "both"):
            to_contact.extend(
                presence(s.jid_str, contact, "unavailable")
                for s in self.ctx.sessions(localpart)
                if s.available
            )
        for stanza in to_contact:
            await _maybe(self.ctx.route(stanza))
        return result_of(iq)


def _groups(children: Iterable[Element]) -> tuple[str, ...]:
    groups: list[str] = []
    for child in children:
        if child.name != "group" or child.ns != NS_ROSTER:
            continue
        text = child.text
        if not text.strip():
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "a group name is empty")
        if len(text) > MAX_GROUP_CHARS:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE,
                f"a group name is longer than {MAX_GROUP_CHARS} characters",
            )
        if text in groups:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, f"duplicate group {text!r}")
        groups.append(text)
    if len(groups) > MAX_GROUPS_PER_ITEM:
        raise StanzaError(
            StanzaErrorCondition.NOT_ACCEPTABLE,
            f"an item may be in at most {MAX_GROUPS_PER_ITEM} groups",
        )
    return tuple(groups)


async def _maybe(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending
