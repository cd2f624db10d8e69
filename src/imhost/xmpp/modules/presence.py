"""RFC 6121 §3-4: presence subscriptions (the Appendix A state machine) and presence
broadcast, probes, directed presence and unavailable on disconnect."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from imhost.kit.jid import JID, try_parse_jid

from ..core.parser import parse_fragment
from ..ports import RosterItem
from .api import (
    Element,
    Hook,
    Module,
    ModuleContext,
    SessionEvent,
    SessionKey,
    StanzaErrorCondition,
    StanzaEvent,
    error_reply,
)
from .common import (
    BLOCKLIST,
    available_sessions,
    is_blocked,
    presence,
    retarget,
    sender_of,
)
from .roster import RosterModule, with_from, with_to

if TYPE_CHECKING:
    from .api import C2SStream

NS_PREAPPROVAL = "urn:xmpp:features:pre-approval"

SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))

MAX_PENDING_REQUESTS = 500
"""Unanswered inbound subscription requests kept per account (a flood beyond is dropped)."""
MAX_STATUS_CHARS = 1024
NS_NICK = "http://jabber.org/protocol/nick"

MAX_LAST_SEEN = 10_000
"""Accounts per host whose last unavailable presence is remembered for probes (§4.3.2)."""
NS_DELAY = "urn:xmpp:delay"


@dataclass(frozen=True, slots=True)
class LastSeen:
    """An offline account's last unavailable presence (stamped) and who may see it: the
    subscribers and block list as they were when it went offline."""

    presence: Element
    subscribers: frozenset[str]
    blocklist: frozenset[str]


BROADCAST = SessionKey[bool]("presence-broadcast", False)
"""The session's available presence has been broadcast (so unavailable must follow)."""
DIRECTED = SessionKey[set[str] | None]("presence-directed", None)
"""RFC 6121 §4.6: JIDs this session sent directed available presence to."""


class PresenceModule(Module):
    """RFC 6121 §3 (subscriptions) and §4 (exchanging presence).

    Subscription requests and answers are stamped with the sender's bare JID, change both
    rosters by the state table of Appendix A (pushes to interested resources), and are routed
    or delivered only where the table says so::

        C: <presence to='bob@example.test' type='subscribe'/>
        S (to alice, push): <item jid='bob@example.test' subscription='none' ask='subscribe'/>
        S (to bob): <presence from='alice@example.test' to='bob@example.test' type='subscribe'/>
        C (bob): <presence to='alice@example.test' type='subscribed'/>
        S (to alice, push): <item jid='bob@example.test' subscription='to'/>
        S (to alice): <presence from='bob@example.test/res' to='alice@example.test'/>

    Initial presence probes the contacts the user is subscribed to (``to``/``both``) and is
    broadcast to those subscribed to the user (``from``/``both``) and to the user's other
    resources; directed presence is remembered and gets unavailable when the session ends;
    pending inbound requests are delivered again at each initial presence (§3.1.3). Stanzas
    to and from blocked JIDs (XEP-0191, see :mod:`.blocking`) are skipped.
    """

    name = "presence"
    depends = (RosterModule,)

    def load(self) -> None:
        self._last_seen: dict[str, LastSeen] = {}
        self._roster: RosterModule | None = self.ctx.module(RosterModule)
        ctx = self.ctx
        ctx.hook(Hook.PRESENCE_OUT, self.on_presence_out)
        ctx.hook(Hook.PRESENCE_TO_BARE, self.on_presence_in)
        ctx.hook(Hook.PRESENCE_TO_FULL, self.on_presence_in)
        ctx.hook(Hook.SESSION_AVAILABLE, self.on_available)
        ctx.hook(Hook.SESSION_CLOSED, self.on_closed)
        ctx.add_stream_feature(lambda _s: Element("sub", NS_PREAPPROVAL))

    @property
    def roster(self) -> RosterModule:
        """The roster module of this host (looked up once: it is loaded before presence)."""
        module = self._roster
        if module is None:
            module = self._roster = self.ctx.module(RosterModule)
            if module is None:
                raise RuntimeError("the presence module needs the roster module")
        return module

    # -- from the user's client ---------------------------------------------------------------

    def on_presence_out(self, event: StanzaEvent) -> bool | Awaitable[bool] | None:
        session = event.session
        if session is None:
            return None
        stanza = event.stanza
        ptype = stanza.attrs.get("type")
        to = event.to
        if to is None:
            if ptype is None:
                return self._broadcast_available(session, stanza)
            if ptype == "unavailable":
                self._broadcast_unavailable(session, stanza)
            return True  # other undirected types mean nothing (§4.7.1)
        if ptype in SUBSCRIPTION_TYPES:
            return self._outbound_subscription(session, stanza, to, ptype)
        if ptype == "probe":
            return True  # §4.3: probes are the server's business
        if ptype is None:
            directed = session.get(DIRECTED)
            if directed is None:
                directed = set()
                session.set(DIRECTED, directed)
            directed.add(str(to))
        elif ptype == "unavailable":
            directed = session.get(DIRECTED)
            if directed:
                directed.discard(str(to))
        return None  # the core routes directed presence

    def _broadcast_available(self, session: C2SStream, stanza: Element) -> bool | Awaitable[bool]:
        """§4.2.2 initial presence (probes too) and §4.4.2 presence updates."""
        initial = not session.get(BROADCAST)
        session.set(BROADCAST, True)
        if self._last_seen:
            self._last_seen.pop(session.localpart, None)
        roster = self.roster.cached(session.localpart)
        if roster is None:
            return self._broadcast_available_async(session, stanza, initial)
        self._send_available(session, stanza, roster.items.values(), initial)
        return True

    async def _broadcast_available_async(
        self, session: C2SStream, stanza: Element, initial: bool
    ) -> bool:
        roster = await self.roster.roster(session.localpart)
        self._send_available(session, stanza, list(roster.items.values()), initial)
        return True

    def _send_available(
        self,
        session: C2SStream,
        stanza: Element,
        items: Iterable[RosterItem],
        initial: bool,
    ) -> None:
        ctx = self.ctx
        blocklist = session.get(BLOCKLIST)
        for item in items:
            contact = _jid(item.jid)
            if contact is None or (blocklist and is_blocked(blocklist, contact)):
                continue
            if item.subscription in ("from", "both"):
                _spawn(ctx, ctx.route(retarget(stanza, item.jid)))
            if initial and item.subscription in ("to", "both"):
                probe = presence(session.jid_str, item.jid, "probe")
                _spawn(ctx, ctx.route(probe))
        for other in available_sessions(ctx, session.localpart):
            if other is session:
                continue
            other.deliver(retarget(stanza, other.jid_str))
            if initial and other.presence is not None:
                session.deliver(_presence_of(other, session.jid_str))

    def _broadcast_unavailable(self, session: C2SStream, stanza: Element | None = None) -> None:
        """§4.5.2: unavailable to subscribers, own resources and directed-presence targets."""
        if not session.get(BROADCAST):
            self._directed_unavailable(session, stanza, set())
            return
        session.set(BROADCAST, False)
        if stanza is None:
            stanza = presence(session.jid_str, None, "unavailable")
        ctx = self.ctx
        blocklist = session.get(BLOCKLIST)
        roster = self.roster.cached(session.localpart)
        sent: set[str] = set()
        if roster is not None:
            for item in roster.items.values():
                if item.subscription not in ("from", "both"):
                    continue
                contact = _jid(item.jid)
                if contact is None or (blocklist and is_blocked(blocklist, contact)):
                    continue
                sent.add(item.jid)
                _spawn(ctx, ctx.route(retarget(stanza, item.jid)))
        remaining = False
        for other in available_sessions(ctx, session.localpart):
            if other is not session:
                remaining = True
                other.deliver(retarget(stanza, other.jid_str))
        if not remaining and roster is not None:
            self._remember(session, stanza, roster.items.values())
        self._directed_unavailable(session, stanza, sent)

    def _remember(self, session: C2SStream, stanza: Element, items: Iterable[RosterItem]) -> None:
        """§4.3.2: keep the account's last unavailable presence to answer probes with."""
        last = self._last_seen
        last.pop(session.localpart, None)
        if len(last) >= MAX_LAST_SEEN:
            del last[next(iter(last))]
        kept = Element("presence", stanza.ns, dict(stanza.attrs), list(stanza.children))
        kept.attrs.pop("to", None)
        kept.attrs["from"] = session.jid_str
        kept.attrs["type"] = "unavailable"
        stamp = self.ctx.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        kept.sub("delay", NS_DELAY, {"from": self.ctx.domain, "stamp": stamp})
        subscribers = frozenset(i.jid for i in items if i.subscription in ("from", "both"))
        last[session.localpart] = LastSeen(kept, subscribers, session.get(BLOCKLIST))

    def last_seen(self, localpart: str) -> LastSeen | None:
        """The remembered last unavailable presence of an offline account."""
        return self._last_seen.get(localpart)

    def _directed_unavailable(
        self, session: C2SStream, stanza: Element | None, already: set[str]
    ) -> None:
        directed = session.get(DIRECTED)
        if not directed:
            return
        session.set(DIRECTED, None)
        for target in directed:
            jid = _jid(target)
            if jid is None or jid.bare in already:
                continue
            base = stanza if stanza is not None else presence(session.jid_str, None, "unavailable")
            _spawn(self.ctx, self.ctx.route(retarget(base, target)))

    async def _outbound_subscription(
        self, session: C2SStream, stanza: Element, to: JID, ptype: str
    ) -> bool:
        """§3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4: the user's server, outbound."""
        ctx = self.ctx
        contact = to.bare
        bare = session.bare_str
        if contact == bare:
            session.deliver(
                error_reply(
                    stanza,
                    StanzaErrorCondition.NOT_ALLOWED,
                    "you cannot subscribe to your own presence",
                )
            )
            return True
        out = Element("presence", stanza.ns, dict(stanza.attrs), stanza.children)
        out.attrs["from"] = bare
        out.attrs["to"] = contact
        if to.domain != ctx.domain:
            # No federation yet: let the core answer (remote-server-not-found to the session).
            out.attrs["from"] = session.jid_str
            await _wait(ctx.route(out))
            return True
        roster = self.roster
        localpart = session.localpart
        store = ctx.stores.roster
        route = False
        share_presence = False
        withdraw_presence = False
        async with roster.lock(localpart):
            items = (await roster.roster(localpart)).items
            item = items.get(contact)
            current = item or RosterItem(jid=contact)
            sub = current.subscription
            new: RosterItem | None = None
            if ptype == "subscribe":
                route = True
                if sub in ("none", "from") and not current.ask:
                    new = replace(current, ask=True)
            elif ptype == "unsubscribe":
                route = True
                if sub in ("to", "both") or current.ask:
                    new = replace(with_to(current, False), ask=False)
            elif ptype == "subscribed":
                pending = await store.get_pending_in(ctx.domain, localpart)
                if contact in pending:
                    await store.remove_pending_in(ctx.domain, localpart, contact)
                    if sub not in ("from", "both"):
                        new = replace(with_from(current, True), approved=False)
                    route = share_presence = True
                elif sub not in ("from", "both") and not current.approved:
                    new = replace(current, approved=True)  # §3.4 pre-approval
            else:  # unsubscribed
                pending = await store.get_pending_in(ctx.domain, localpart)
                if contact in pending:
                    await store.remove_pending_in(ctx.domain, localpart, contact)
                    route = True
                if sub in ("from", "both"):
                    new = with_from(current, False)
                    route = withdraw_presence = True
                elif current.approved:
                    new = replace(current, approved=False)
            if new is not None and new != item:
                await roster.save(localpart, new)
                self._last_seen.pop(localpart, None)
        if route:
            await _wait(ctx.route(out))
        if share_presence:
            for s in available_sessions(ctx, localpart):
                await _wait(ctx.route(_presence_of(s, contact)))
        if withdraw_presence:
            for s in available_sessions(ctx, localpart):
                await _wait(ctx.route(presence(s.jid_str, contact, "unavailable")))
        return True

    # -- to a local user ---------------------------------------------------------------------

    def on_presence_in(self, event: StanzaEvent) -> bool | Awaitable[bool] | None:
        stanza = event.stanza
        ptype = stanza.attrs.get("type")
        if ptype is None or ptype in ("unavailable", "error"):
            return None  # the core delivers it
        to = event.to
        sender = sender_of(stanza)
        if to is None or sender is None or not to.local:
            return True
        if ptype == "probe":
            return self._answer_probe(to, sender)
        if ptype in SUBSCRIPTION_TYPES:
            return self._inbound_subscription(stanza, to.to_bare(), sender.to_bare(), ptype)
        return True

    def _answer_probe(self, to: JID, prober: JID) -> bool | Awaitable[bool]:
        """§4.3.2: a subscribed prober gets the presence of every available resource."""
        sessions = available_sessions(self.ctx, to.local)
        if not sessions:
            last = self._last_seen.get(to.local)
            if (
                last is not None
                and prober.domain == self.ctx.domain
                and prober.bare in last.subscribers
                and not is_blocked(last.blocklist, prober)
            ):
                _spawn(self.ctx, self.ctx.route(retarget(last.presence, str(prober))))
            return True
        blocklist = sessions[0].get(BLOCKLIST)
        if blocklist and is_blocked(blocklist, prober):
            return True
        roster = self.roster.cached(to.local)
        if roster is None:
            return True
        item = roster.items.get(prober.bare)
        if item is None or item.subscription not in ("from", "both"):
            return True
        target = str(prober)
        for s in sessions:
            if s.presence is not None:
                _spawn(self.ctx, self.ctx.route(_presence_of(s, target)))
        return True

    async def _inbound_subscription(
        self, stanza: Element, to: JID, sender: JID, ptype: str
    ) -> bool:
        """§3.1.3, §3.1.6, §3.2.3, §3.3.3: the contact's server, inbound."""
        ctx = self.ctx
        localpart = to.local
        contact = sender.bare
        store = ctx.stores.roster
        roster = self.roster
        deliver = False
        answer: str | None = None
        share_presence = False
        withdraw_presence = False
        stanza.attrs["from"] = contact
        stanza.attrs["to"] = to.bare
        async with roster.lock(localpart):
            items = (await roster.roster(localpart)).items
            item = items.get(contact)
            sub = item.subscription if item is not None else "none"
            new: RosterItem | None = None
            if ptype == "subscribe":
                if sub in ("from", "both"):
                    answer = "subscribed"  # already approved: answer for the user
                elif item is not None and item.approved:
                    new = replace(with_from(item, True), approved=False)
                    answer = "subscribed"
                    share_presence = True
                elif item is None and not await ctx.stores.auth.account_exists(
                    ctx.domain, localpart
                ):
                    answer = "unsubscribed"  # §3.1.3: no such contact
                else:
                    pending = await store.get_pending_in(ctx.domain, localpart)
                    if contact in pending or len(pending) < MAX_PENDING_REQUESTS:
                        stanza = _request_to_keep(stanza)
                        await store.set_pending_in(
                            ctx.domain, localpart, contact, stanza.serialize()
                        )
                        deliver = True
                    # else: the user has a flood of unanswered requests; this one is dropped
            elif ptype == "subscribed":
                if item is not None and item.ask:
                    new = replace(with_to(item, True), ask=False)
                    deliver = True
            elif ptype == "unsubscribe":
                pending = await store.get_pending_in(ctx.domain, localpart)
                if contact in pending:
                    await store.remove_pending_in(ctx.domain, localpart, contact)
                    deliver = True
                if item is not None and sub in ("from", "both"):
                    new = with_from(item, False)
                    deliver = withdraw_presence = True  # §3.3.3
            elif item is not None and (sub in ("to", "both") or item.ask):  # unsubscribed
                new = replace(with_to(item, False), ask=False)
                deliver = True
            if new is not None and new != item:
                await roster.save(localpart, new)
                self._last_seen.pop(localpart, None)
        if deliver:
            data: str | None = None
            for s in available_sessions(ctx, localpart):
                data = s.deliver(stanza, data)
        if answer is not None:
            await _wait(ctx.route(presence(to.bare, contact, answer)))
        if share_presence:
            for s in available_sessions(ctx, localpart):
                await _wait(ctx.route(_presence_of(s, contact)))
        if withdraw_presence:
            for s in available_sessions(ctx, localpart):
                await _wait(ctx.route(presence(s.jid_str, contact, "unavailable")))
        return True

    # -- session life -------------------------------------------------------------------------

    async def on_available(self, event: SessionEvent) -> None:
        """§3.1.3: subscription requests that arrived while offline, at each login."""
        session = event.session
        ctx = self.ctx
        pending = await ctx.stores.roster.get_pending_in(ctx.domain, session.localpart)
        blocklist = session.get(BLOCKLIST)
        for contact, xml in pending.items():
            jid = _jid(contact)
            if jid is None or (blocklist and is_blocked(blocklist, jid)):
                continue
            try:
                stanza = parse_fragment(xml)
            except ValueError:
                stanza = presence(contact, session.bare_str, "subscribe")
            session.deliver(stanza)

    def on_closed(self, event: SessionEvent) -> None:
        """§4.5.2 unavailable on disconnect (a stream closing without unavailable)."""
        self._broadcast_unavailable(event.session)


def _request_to_keep(stanza: Element) -> Element:
    """A subscription request as stored and delivered: addresses, type, and only the
    ``<status/>`` and XEP-0172 ``<nick/>`` a person reads (bounded), not arbitrary payloads."""
    kept = Element("presence", stanza.ns, {k: stanza.attrs[k] for k in ("from", "to", "type")})
    status = stanza.find("status")
    if status is not None and status.ns == stanza.ns:
        kept.sub("status", text=status.text[:MAX_STATUS_CHARS])
    nick = stanza.find("nick", NS_NICK)
    if nick is not None:
        kept.sub("nick", NS_NICK, text=nick.text[:MAX_STATUS_CHARS])
    return kept


def _presence_of(session: C2SStream, to: str) -> Element:
    """The last available presence of ``session``, addressed to ``to``."""
    base = session.presence
    if base is None:
        return presence(session.jid_str, to)
    attrs = dict(base.attrs)
    attrs["from"] = session.jid_str
    attrs["to"] = to
    return Element("presence", base.ns, attrs, base.children)


def _jid(value: str) -> JID | None:
    return try_parse_jid(value)


def _spawn(ctx: ModuleContext, pending: Awaitable[None] | None) -> None:
    if pending is not None:
        ctx.spawn(_wait(pending))


async def _wait(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending
