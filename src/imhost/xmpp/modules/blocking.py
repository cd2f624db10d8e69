"""XEP-0191: Blocking Command."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from imhost.kit.jid import JID, parse_jid

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
    error_reply,
    result_of,
)
from .common import BLOCKLIST, is_blocked, new_iq, presence, sender_of

if TYPE_CHECKING:
    from .api import C2SStream

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
MAX_BLOCKED = 1000
"""JIDs one account may block."""

BLOCKLIST_REQUESTED = SessionKey[bool]("blocklist-requested", False)
"""§3.1: the session retrieved the block list, so it gets the pushes."""

PRIORITY = 100
"""Blocking runs before carbons, presence and CSI."""


def blocked_error(stanza: Element) -> Element:
    """§3.5: ``not-acceptable`` with ``<blocked xmlns='urn:xmpp:blocking:errors'/>``."""
    reply = error_reply(
        stanza, StanzaErrorCondition.NOT_ACCEPTABLE, "you have blocked this contact"
    )
    err = reply.find("error")
    assert err is not None
    err.sub("blocked", NS_BLOCKING_ERRORS)
    return reply


class BlockingModule(Module):
    """XEP-0191 §3: block list retrieval, block, unblock (one, some or all) with pushes to
    every resource that retrieved the list, and enforcement::

        C: <iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>
             <item jid='mallory@example.test'/></block></iq>
        S (push): <iq type='set' to='alice@example.test/res'><block xmlns='urn:xmpp:blocking'>
             <item jid='mallory@example.test'/></block></iq>
        S: <iq type='result' id='b1' to='alice@example.test/res'/>
        C: <message to='mallory@example.test'><body>hi</body></message>
        S: <message type='error' from='mallory@example.test'><error type='modify'>
             <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
             <blocked xmlns='urn:xmpp:blocking:errors'/></error></message>

    §3.4 inbound: presence from a blocked JID is dropped; a message or an iq get/set gets
    ``service-unavailable`` (as if the user did not exist); other stanzas are dropped. §3.5
    outbound: a message, directed presence or iq to a blocked JID is ``not-acceptable`` with
    the ``<blocked/>`` element. Blocking a contact subscribed to the user's presence sends it
    unavailable; unblocking sends it the current presence. The list is cached on the
    account's sessions, so enforcement never touches the store for an online user.
    Errors: an empty ``<block/>`` ``bad-request``, a bad JID ``jid-malformed``, more than
    1000 JIDs ``not-acceptable``, another user's list ``forbidden``.
    """

    name = "blocking"

    def load(self) -> None:
        self._passing: set[int] = set()
        self._lists: dict[str, frozenset[str]] = {}
        """localpart -> block list, for every account with a bound session (the hot path's
        lookup: one dict access per inbound stanza)."""
        ctx = self.ctx
        ctx.add_feature(NS_BLOCKING, IqTarget.BOTH)
        ctx.iq_handler(NS_BLOCKING, IqType.GET, self.on_get, IqTarget.ACCOUNT)
        ctx.iq_handler(NS_BLOCKING, IqType.SET, self.on_set, IqTarget.ACCOUNT)
        ctx.hook(Hook.SESSION_BOUND, self.on_bound, priority=PRIORITY)
        ctx.hook(Hook.SESSION_CLOSED, self.on_closed)
        ctx.hook(Hook.MESSAGE_OUT, self.on_message_out, priority=PRIORITY)
        ctx.hook(Hook.PRESENCE_OUT, self.on_presence_out, priority=PRIORITY)
        ctx.hook(Hook.MESSAGE_TO_BARE, self.on_message_in, priority=PRIORITY)
        ctx.hook(Hook.MESSAGE_TO_FULL, self.on_message_in, priority=PRIORITY)
        ctx.hook(Hook.PRESENCE_TO_BARE, self.on_presence_in, priority=PRIORITY)
        ctx.hook(Hook.PRESENCE_TO_FULL, self.on_presence_in, priority=PRIORITY)
        ctx.hook(Hook.OFFLINE_STORE, self.on_offline_store, priority=PRIORITY)
        self._deliver_hooked = False
        """``on_deliver`` is attached only while an online account has a non-empty list, so
        the common case (nobody blocks anyone) pays nothing per delivered stanza."""

    # -- the list -----------------------------------------------------------------------------

    async def blocklist(self, localpart: str) -> frozenset[str]:
        """The account's block list: cached while it has a session, else from the store."""
        known = self._lists.get(localpart)
        if known is not None:
            return known
        return frozenset(await self.ctx.stores.blocklist.get_blocklist(self.ctx.domain, localpart))

    async def on_bound(self, event: SessionEvent) -> None:
        session = event.session
        known = self._lists.get(session.localpart)
        if known is not None:
            session.set(BLOCKLIST, known)
            return
        blocklist = await self.ctx.stores.blocklist.get_blocklist(
            self.ctx.domain, session.localpart
        )
        self._cache(session.localpart, frozenset(blocklist))

    def on_closed(self, event: SessionEvent) -> None:
        if not self.ctx.sessions(event.session.localpart):
            self._lists.pop(event.session.localpart, None)
            self._sync_deliver_hook()

    def _sync_deliver_hook(self) -> None:
        wanted = any(self._lists.values())
        if wanted and not self._deliver_hooked:
            self.ctx.hook(Hook.DELIVER, self.on_deliver, priority=PRIORITY)
        elif not wanted and self._deliver_hooked:
            self.ctx.unhook(Hook.DELIVER, self.on_deliver)
        self._deliver_hooked = wanted

    def _cache(self, localpart: str, blocklist: frozenset[str]) -> None:
        sessions = self.ctx.sessions(localpart)
        for session in sessions:
            session.set(BLOCKLIST, blocklist)
        if sessions:
            self._lists[localpart] = blocklist
        self._sync_deliver_hook()

    # -- iq -----------------------------------------------------------------------------------

    @staticmethod
    def _own(event: StanzaEvent) -> C2SStream:
        session = event.session
        if session is None or event.to is None or event.to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "this is not your block list")
        return session

    def on_get(self, event: StanzaEvent) -> Element:
        session = self._own(event)
        session.set(BLOCKLIST_REQUESTED, True)
        reply = result_of(event.stanza)
        query = reply.sub("blocklist", NS_BLOCKING)
        blocklist: frozenset[str] = session.get(BLOCKLIST)
        for jid in sorted(blocklist):
            query.sub("item", attrs={"jid": jid})
        return reply

    def on_set(self, event: StanzaEvent) -> Awaitable[Element]:
        session = self._own(event)
        payload = next(event.stanza.elements(), None)
        if payload is None or payload.ns != NS_BLOCKING or payload.name not in ("block", "unblock"):
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "expected <block/> or <unblock/>")
        jids: list[str] = []
        for item in payload.elements():
            if item.name != "item" or item.ns != NS_BLOCKING:
                continue
            value = item.get("jid")
            if not value:
                raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "an item has no jid")
            try:
                jids.append(str(parse_jid(value)))
            except ValueError as exc:
                raise StanzaError(StanzaErrorCondition.JID_MALFORMED, str(exc)) from None
        if payload.name == "block":
            if not jids:
                raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "block at least one JID")
            return self._block(event.stanza, session, jids)
        return self._unblock(event.stanza, session, jids or None)

    async def _block(self, iq: Element, session: C2SStream, jids: list[str]) -> Element:
        current = session.get(BLOCKLIST)
        new = [j for j in dict.fromkeys(jids) if j not in current]
        if len(current) + len(new) > MAX_BLOCKED:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE, f"you can block at most {MAX_BLOCKED} JIDs"
            )
        if new:
            await self.ctx.stores.blocklist.block(self.ctx.domain, session.localpart, new)
            # §3.3: contacts subscribed to the user's presence see the user go offline.
            self._presence_to(session, new, available=False)
            # re-read: another resource may have changed the list while the store wrote
            latest = self._lists.get(session.localpart, current)
            self._cache(session.localpart, latest | frozenset(new))
        self._push(session.localpart, "block", jids)
        return result_of(iq)

    async def _unblock(self, iq: Element, session: C2SStream, jids: list[str] | None) -> Element:
        current = session.get(BLOCKLIST)
        await self.ctx.stores.blocklist.unblock(self.ctx.domain, session.localpart, jids)
        removed = sorted(current) if jids is None else [j for j in jids if j in current]
        latest = self._lists.get(session.localpart, current)
        self._cache(session.localpart, frozenset() if jids is None else latest - frozenset(jids))
        self._presence_to(session, removed, available=True)
        self._push(session.localpart, "unblock", jids or [])
        return result_of(iq)

    def _push(self, localpart: str, action: str, jids: list[str]) -> None:
        """§3.3/§3.4: push the change to every resource that retrieved the list."""
        bare = f"{localpart}@{self.ctx.domain}"
        for session in self.ctx.sessions(localpart):
            if not session.get(BLOCKLIST_REQUESTED) or session.closed:
                continue
            iq = new_iq("set", session.jid_str, bare)
            el = iq.sub(action, NS_BLOCKING)
            for jid in jids:
                el.sub("item", attrs={"jid": jid})
            session.deliver(iq)

    def _presence_to(self, session: C2SStream, jids: list[str], *, available: bool) -> None:
        from .roster import RosterModule

        roster = self.ctx.module(RosterModule)
        cached = roster.cached(session.localpart) if roster is not None else None
        if cached is None:
            return
        sessions = [s for s in self.ctx.sessions(session.localpart) if s.available]
        for jid in jids:
            item = cached.items.get(jid)
            if item is None or item.subscription not in ("from", "both"):
                continue
            for s in sessions:
                if available and s.presence is not None:
                    out = Element(
                        "presence", s.presence.ns, dict(s.presence.attrs), s.presence.children
                    )
                    out.attrs["from"] = s.jid_str
                    out.attrs["to"] = jid
                else:
                    out = presence(s.jid_str, jid, "unavailable")
                pending = self.ctx.route(out)
                if pending is not None:
                    self.ctx.spawn(_wait(pending))

    # -- enforcement --------------------------------------------------------------------------

    def on_message_out(self, event: StanzaEvent) -> bool:
        if not self._deliver_hooked:  # no online account blocks anyone: the common case
            return False
        return self._refuse_outbound(event)

    def on_presence_out(self, event: StanzaEvent) -> bool:
        if event.to is None:
            return False
        return self._refuse_outbound(event)

    def _refuse_outbound(self, event: StanzaEvent) -> bool:
        session = event.session
        to = event.to
        if session is None or to is None:
            return False
        blocklist = session.get(BLOCKLIST)
        if not blocklist or not is_blocked(blocklist, to):
            return False
        if event.stanza.get("type") != "error":
            self._deliver_own(session, blocked_error(event.stanza))
        return True

    def _deliver_own(self, session: C2SStream, stanza: Element) -> None:
        """Deliver an error this module made (it names the blocked JID as sender, so it must
        not be caught by :meth:`on_deliver`)."""
        key = id(stanza)
        self._passing.add(key)
        try:
            session.deliver(stanza)
        finally:
            self._passing.discard(key)

    def _recipient_blocks(self, to: JID | None, stanza: Element) -> bool | None:
        """True/False when the recipient is online (cached list), None when unknown."""
        if to is None or not to.local:
            return False
        blocklist = self._lists.get(to.local)
        if blocklist is None:
            return None
        if not blocklist:
            return False
        sender = sender_of(stanza)
        return sender is not None and is_blocked(blocklist, sender) and not _own(sender, to)

    def on_message_in(self, event: StanzaEvent) -> bool:
        if not self._deliver_hooked:
            return False  # an offline recipient's list is checked before offline storage
        if self._recipient_blocks(event.to, event.stanza):
            if event.stanza.get("type") not in ("error", "groupchat", "headline"):
                self._bounce(event.stanza, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return True
        return False

    def on_presence_in(self, event: StanzaEvent) -> bool | Awaitable[bool]:
        verdict = self._recipient_blocks(event.to, event.stanza)
        if verdict is None and event.stanza.get("type") in (
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed",
        ):
            return self._offline_blocks(event)
        return bool(verdict)

    async def on_offline_store(self, event: StanzaEvent) -> bool:
        if await self._offline_blocks(event):
            self._bounce(event.stanza, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return True
        return False

    async def _offline_blocks(self, event: StanzaEvent) -> bool:
        to = event.to
        sender = sender_of(event.stanza)
        if to is None or sender is None or not to.local or _own(sender, to):
            return False
        blocklist = await self.blocklist(to.local)
        return is_blocked(blocklist, sender)

    def on_deliver(self, event: StanzaEvent) -> bool:
        """Last line: anything else from a blocked JID (e.g. an iq to a full JID) is dropped."""
        session = event.session
        stanza = event.stanza
        if session is None or (self._passing and id(stanza) in self._passing):
            return False
        blocklist = session.get(BLOCKLIST)
        is_request = stanza.name == "iq" and stanza.attrs.get("type") in ("get", "set")
        if not blocklist and not is_request:
            return False
        sender = sender_of(stanza)
        if sender is None or not sender.local or sender.bare == session.bare_str:
            return False
        if blocklist and is_blocked(blocklist, sender):
            if is_request:
                self._bounce(stanza, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return True
        if is_request and sender.domain == self.ctx.domain:
            # §3.5 for iq, which has no outbound hook: the sender blocked the recipient.
            origin = self.ctx.session(sender)
            if origin is not None and session.jid is not None:
                theirs = origin.get(BLOCKLIST)
                if theirs and is_blocked(theirs, session.jid):
                    self._deliver_own(origin, blocked_error(stanza))
                    return True
        return False

    def _bounce(self, stanza: Element, condition: StanzaErrorCondition) -> None:
        """An error to the (local, full-JID) sender."""
        sender = sender_of(stanza)
        if sender is None or stanza.get("type") == "error":
            return
        origin = self.ctx.session(sender) if sender.resource else None
        if origin is not None:
            origin.deliver(error_reply(stanza, condition))


def _own(sender: JID, to: JID) -> bool:
    return sender.bare == to.bare or (not sender.local and sender.domain == to.domain)


async def _wait(pending: Awaitable[None]) -> None:
    await pending
