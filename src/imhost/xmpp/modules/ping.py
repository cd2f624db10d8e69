"""XEP-0199: XMPP Ping."""

from __future__ import annotations

from .api import Element, IqTarget, IqType, Module, StanzaEvent, result_of

NS_PING = "urn:xmpp:ping"


class PingModule(Module):
    """XEP-0199 §4.2 (client-to-server ping) and §4.3: the server answers pings to itself and,
    as the account's server, to the user's own bare JID::

        C: <iq type='get' id='p1' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>
        S: <iq type='result' id='p1' from='example.test' to='alice@example.test/res'/>

    A ping to another account's bare JID is answered by the server on its behalf (§4.4 is for
    full JIDs, which the core forwards to the client).
    """

    name = "ping"

    def load(self) -> None:
        self.ctx.add_feature(NS_PING, IqTarget.BOTH)
        self.ctx.iq_handler(NS_PING, IqType.GET, self.on_ping, IqTarget.BOTH)

    def on_ping(self, event: StanzaEvent) -> Element:
        return result_of(event.stanza)
