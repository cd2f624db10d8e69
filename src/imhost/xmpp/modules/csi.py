"""XEP-0352: Client State Indication."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import Element, Hook, Module, SessionEvent, SessionKey, StanzaEvent

if TYPE_CHECKING:
    from .api import C2SStream

NS_CSI = "urn:xmpp:csi:0"
MAX_HELD = 500
"""Held presences per session; past it the queue is flushed (memory stays bounded)."""

INACTIVE = SessionKey[bool]("csi-inactive", False)
HELD = SessionKey[dict[str, Element] | None]("csi-held", None)

PRIORITY = -100
"""After blocking: a blocked stanza is dropped, not held."""


class CsiModule(Module):
    """XEP-0352 §3-§5: a client says it is ``<inactive/>`` (screen off) or ``<active/>``.

    While inactive the server holds presence updates (available and unavailable), keeping
    only the latest per contact full JID, and sends them when the client is active again;
    messages, iq and subscription requests always go out at once::

        C: <inactive xmlns='urn:xmpp:csi:0'/>
        (bob goes away, back, away: nothing sent)
        C: <active xmlns='urn:xmpp:csi:0'/>
        S: <presence from='bob@example.test/res' to='alice@example.test'><show>away</show>
           </presence>

    ``<inactive/>`` and ``<active/>`` are top-level elements, not stanzas: the core hands them
    to :meth:`on_nonza` (``ctx.nonza_handler``), and ``<csi/>`` is in the stream features.
    """

    name = "csi"

    def load(self) -> None:
        self.ctx.nonza_handler(NS_CSI, self.on_nonza)
        self.ctx.add_stream_feature(lambda _s: Element("csi", NS_CSI))
        self.ctx.hook(Hook.SESSION_CLOSED, self.on_closed)
        self._inactive = 0
        """Sessions inactive now; ``on_deliver`` is attached only while there is one."""

    def on_nonza(self, session: C2SStream, el: Element) -> None:
        if el.name == "inactive":
            self.set_state(session, active=False)
        elif el.name == "active":
            self.set_state(session, active=True)

    def set_state(self, session: C2SStream, *, active: bool) -> None:
        """Record the client's state; becoming active sends what was held, oldest first."""
        if session.get(INACTIVE) == (not active):
            return
        session.set(INACTIVE, not active)
        self._count(-1 if active else 1)
        if active:
            self._flush(session)

    def _count(self, delta: int) -> None:
        before = self._inactive
        self._inactive = max(0, before + delta)
        if before == 0 and self._inactive > 0:
            self.ctx.hook(Hook.DELIVER, self.on_deliver, priority=PRIORITY)
        elif before > 0 and self._inactive == 0:
            self.ctx.unhook(Hook.DELIVER, self.on_deliver)

    def _flush(self, session: C2SStream) -> None:
        held = session.get(HELD)
        session.set(HELD, None)
        if held:
            for stanza in held.values():
                session.deliver(stanza)

    def on_deliver(self, event: StanzaEvent) -> bool:
        session = event.session
        if session is None or not session.get(INACTIVE):
            return False
        stanza = event.stanza
        if stanza.name != "presence" or stanza.attrs.get("type") not in (None, "unavailable"):
            return False
        held = session.get(HELD)
        if held is None:
            held = {}
            session.set(HELD, held)
        key = stanza.attrs.get("from", "")
        held.pop(key, None)  # the latest goes last, in arrival order
        held[key] = stanza
        if len(held) > MAX_HELD:
            session.set(INACTIVE, False)
            self._flush(session)
            session.set(INACTIVE, True)
            return True
        return True

    def on_closed(self, event: SessionEvent) -> None:
        event.session.set(HELD, None)
        if event.session.get(INACTIVE):
            event.session.set(INACTIVE, False)
            self._count(-1)
