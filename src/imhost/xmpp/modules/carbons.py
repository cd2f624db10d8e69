"""XEP-0280: Message Carbons."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from .api import C2SStream

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_MARKERS = "urn:xmpp:chat-markers:0"
IM_PAYLOADS = frozenset((NS_CHATSTATES, NS_RECEIPTS, NS_MARKERS))

CARBONS = SessionKey[bool]("carbons", False)

PRIORITY = 50
"""After blocking (a refused message is not copied), before the core's delivery."""


def eligible(stanza: Element) -> bool:
    """§6: chat, or normal with a body, or IM payloads (receipts, chat states, markers);
    never groupchat/headline/error, never ``<private/>`` or ``<no-copy/>``, never a carbon."""
    mtype = stanza.attrs.get("type", "normal")
    if mtype not in ("chat", "normal"):
        return False
    has_body = False
    im_payload = False
    for child in stanza.elements():
        ns = child.ns
        if ns == NS_CARBONS:
            return False  # <private/>, or already a carbon
        if ns == NS_HINTS and child.name == "no-copy":
            return False
        if child.name == "body":
            has_body = True
        elif ns in IM_PAYLOADS:
            im_payload = True
    return mtype == "chat" or has_body or im_payload


def wrap(stanza: Element, direction: str, own_bare: str, to: str) -> Element:
    """``<message from=bare to=resource><sent|received><forwarded>original</...>``."""
    attrs = {"from": own_bare, "to": to, "type": stanza.attrs.get("type", "normal")}
    msg = Element("message", stanza.ns, attrs)
    msg.sub(direction, NS_CARBONS).sub("forwarded", NS_FORWARD).children.append(stanza)
    return msg


class CarbonsModule(Module):
    """XEP-0280 §4 enable/disable, §5 copies of messages a user sends and receives to the
    user's other resources that enabled carbons::

        C (alice/phone): <iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>
        S: <iq type='result' id='c1' to='alice@example.test/phone'/>
        (bob sends alice/desktop a chat message; alice/phone gets:)
        S: <message from='alice@example.test' to='alice@example.test/phone' type='chat'>
             <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>
               <message xmlns='jabber:client' from='bob@example.test/res'
                 to='alice@example.test/desktop' type='chat'><body>hi</body></message>
             </forwarded></received></message>

    Received copies go to enabled resources that would not get the message anyway (RFC 6121
    §8.5 picks the delivered ones). ``<private xmlns='urn:xmpp:carbons:2'/>`` and
    ``<no-copy xmlns='urn:xmpp:hints'/>`` stop copies. Enabling for another account is
    ``forbidden``; carbons state ends with the session.
    """

    name = "carbons"

    def load(self) -> None:
        ctx = self.ctx
        ctx.add_feature(NS_CARBONS)
        ctx.iq_handler(NS_CARBONS, IqType.SET, self.on_set, IqTarget.ACCOUNT)
        ctx.hook(Hook.MESSAGE_OUT, self.on_sent, priority=PRIORITY)
        ctx.hook(Hook.MESSAGE_TO_BARE, self.on_received, priority=PRIORITY)
        ctx.hook(Hook.MESSAGE_TO_FULL, self.on_received, priority=PRIORITY)
        ctx.hook(Hook.SESSION_CLOSED, self.on_closed)
        self._enabled: dict[str, int] = {}
        """localpart -> number of sessions with carbons on (skip all work when zero)."""

    def on_set(self, event: StanzaEvent) -> Element:
        session = event.session
        if session is None or event.to is None or event.to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only for your own sessions")
        payload = next(event.stanza.elements())
        if payload.name not in ("enable", "disable"):
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "expected <enable/> or <disable/>")
        self._switch(session, payload.name == "enable")
        return result_of(event.stanza)

    def _switch(self, session: C2SStream, on: bool) -> None:
        if session.get(CARBONS) == on:
            return
        session.set(CARBONS, on)
        count = self._enabled.get(session.localpart, 0) + (1 if on else -1)
        if count > 0:
            self._enabled[session.localpart] = count
        else:
            self._enabled.pop(session.localpart, None)

    def on_closed(self, event: SessionEvent) -> None:
        self._switch(event.session, False)

    def on_sent(self, event: StanzaEvent) -> None:
        session = event.session
        if session is None or session.localpart not in self._enabled:
            return None
        stanza = event.stanza
        if not eligible(stanza):
            return None
        to = event.to
        for other in self.ctx.sessions(session.localpart):
            if other is session or not other.get(CARBONS) or other.closed:
                continue
            if to is not None and to.resource and other.jid == to:
                continue  # it gets the message itself
            other.deliver(wrap(stanza, "sent", session.bare_str, other.jid_str))
        return None

    def on_received(self, event: StanzaEvent) -> None:
        to = event.to
        if to is None or not to.local or to.local not in self._enabled:
            return None
        stanza = event.stanza
        if not eligible(stanza):
            return None
        sessions = self.ctx.sessions(to.local)
        direct = None
        if to.resource:
            direct = next((s for s in sessions if s.resource == to.resource), None)
        delivered = [direct] if direct is not None else _bare_targets(sessions)
        if not delivered:
            return None  # offline storage: the message comes later, to whoever logs in
        bare = to.bare
        sender = stanza.attrs.get("from")
        for other in sessions:
            if other.jid_str == sender:
                continue  # a message between own resources: the sender wrote it
            if other.get(CARBONS) and other not in delivered and other.available:
                other.deliver(wrap(stanza, "received", bare, other.jid_str))
        return None


def _bare_targets(sessions: list[C2SStream]) -> list[C2SStream]:
    """RFC 6121 §8.5.2.1.1: the available resources with the highest non-negative priority."""
    best = max((s.priority for s in sessions if s.available), default=-1)
    if best < 0:
        return []
    return [s for s in sessions if s.available and s.priority == best]
