"""Resource binding (RFC 6120 §7), as a negotiation step; the stream becomes a session.

::

    C: <iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>
         <resource>phone</resource></bind></iq>
    S: <iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>
         <jid>alice@example.test/phone</jid></bind></iq>

The RFC 3921 §3 session iq is answered with an empty result (RFC 6121 Appendix E: a no-op
kept for old clients), and offered as ``<optional/>``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from imhost.kit.jid import JID, prepare_resource

from .errors import (
    StanzaErrorCondition,
    StreamError,
    StreamErrorCondition,
    make_error_reply,
)
from .hooks import Hook
from .xml import NS_BIND, NS_CLIENT, NS_SESSION, Element

if TYPE_CHECKING:
    from .stream import C2SStream


class ResourceBinding:
    """RFC 6120 §7 on one stream: the limits on connections per account and per service,
    a server-generated resource when none is asked, and the new session replacing an old
    one of the same full JID (RFC 6120 §7.7.2.2)."""

    __slots__ = ("stream",)

    def __init__(self, stream: C2SStream) -> None:
        self.stream = stream

    # -- NegotiationStep --------------------------------------------------------------------

    def offer(self) -> str:
        if not self.stream.authenticated:
            return ""
        return f"<bind xmlns='{NS_BIND}'/><session xmlns='{NS_SESSION}'><optional/></session>"

    def negotiate(self, el: Element) -> bool:
        if not self.stream.authenticated or el.ns != NS_CLIENT or el.name != "iq":
            return False
        if el.find("bind", NS_BIND) is not None:
            self._bind(el)
            return True
        if el.find("session", NS_SESSION) is not None:
            reply = Element("iq", attrs={"type": "result", "id": el.get("id", "")})
            self.stream.write_stanza(reply)
            return True
        raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "bind a resource first")

    # -- binding ----------------------------------------------------------------------------

    def _bind(self, iq: Element) -> None:
        """RFC 6120 §7: bind a resource (server-generated when none is asked)."""
        stream = self.stream
        host = stream.host_state
        assert host is not None and stream.bare_jid is not None
        router = stream.services.router
        if iq.get("type") != "set":
            stream.write_stanza(make_error_reply(iq, StanzaErrorCondition.BAD_REQUEST))
            return
        bind = iq.find("bind", NS_BIND)
        assert bind is not None
        wanted = (bind.find_text("resource", NS_BIND) or "").strip()
        try:
            resource = prepare_resource(wanted) if wanted else ""
        except ValueError as exc:
            stream.write_stanza(make_error_reply(iq, StanzaErrorCondition.BAD_REQUEST, str(exc)))
            return
        limits = host.vhost.limits
        mine = host.sessions.get(stream.localpart, {})
        others = [s for r, s in mine.items() if r != resource]
        if (
            limits.max_connections_per_account is not None
            and len(others) >= limits.max_connections_per_account
        ):
            stream.write_stanza(
                make_error_reply(
                    iq,
                    StanzaErrorCondition.RESOURCE_CONSTRAINT,
                    f"this account already has {len(others)} connections (the limit)",
                )
            )
            return
        if limits.max_connections is not None and host.connections >= limits.max_connections:
            stream.write_stanza(
                make_error_reply(
                    iq,
                    StanzaErrorCondition.RESOURCE_CONSTRAINT,
                    "this service has reached its limit of concurrent connections",
                )
            )
            return
        if not resource:
            resource = secrets.token_hex(6)
            while resource in mine:
                resource = secrets.token_hex(6)
        old = mine.get(resource)
        if old is not None:
            # RFC 6120 §7.7.2.2: the new session wins; the old one gets <conflict/>.
            old.sm.resumable = False
            old.fail(StreamError(StreamErrorCondition.CONFLICT, "replaced by a new connection"))
        stream.jid = JID(stream.localpart, host.domain, resource)
        stream.jid_str = str(stream.jid)
        host.sessions.setdefault(stream.localpart, {})[resource] = stream
        stream.mark_bound(host)
        reply = Element("iq", attrs={"type": "result", "id": iq.get("id", "")})
        reply.sub("bind", NS_BIND).sub("jid", NS_BIND, text=stream.jid_str)
        stream.write_stanza(reply)
        fired = router.fire_session(Hook.SESSION_BOUND, stream)
        if not isinstance(fired, bool):
            stream.run_in_order(fired)
