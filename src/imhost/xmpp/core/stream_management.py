"""XEP-0198 Stream Management of one stream: acks, resumption and hibernation.

Before a resource is bound, the step takes ``<resume/>`` (§5: a new connection takes over a
session of the same account); ``<enable/>``, ``<r/>`` and ``<a/>`` then are
``unexpected-request``. Once bound, the stream hands it every element in the SM namespace::

    C: <enable xmlns='urn:xmpp:sm:3' resume='true'/>
    S: <enabled xmlns='urn:xmpp:sm:3' id='...' resume='true' max='300'/>
    S: <message .../><r xmlns='urn:xmpp:sm:3'/>
    C: <a xmlns='urn:xmpp:sm:3' h='1'/>

With resumption on, a lost connection leaves the session hibernating for
``sm_resume_timeout_seconds``; stanzas for it are kept unacknowledged. When the session ends
for good, unacknowledged messages are routed again (§4: another resource, or offline).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from typing import TYPE_CHECKING

from .errors import StreamError, StreamErrorCondition
from .negotiation import State, spawn
from .parser import parse_fragment
from .xml import NS_SM, NS_STANZA_ERRORS, Element, escape_attr

if TYPE_CHECKING:
    from .router import HostState
    from .stream import C2SStream

SM_UNEXPECTED = f"<failed xmlns='{NS_SM}'><unexpected-request xmlns='{NS_STANZA_ERRORS}'/></failed>"
SM_NOT_FOUND = f"<failed xmlns='{NS_SM}'><item-not-found xmlns='{NS_STANZA_ERRORS}'/></failed>"
ACK_REQUEST = f"<r xmlns='{NS_SM}'/>"


class StreamManagement:
    """The XEP-0198 state of one stream (moved to the new stream when a session resumes)."""

    __slots__ = (
        "_hibernate_handle",
        "enabled",
        "id",
        "r_pending",
        "received",
        "resumable",
        "sent",
        "stream",
        "unacked",
    )

    def __init__(self, stream: C2SStream) -> None:
        self.stream = stream
        self.enabled = False
        """``<enable/>`` was accepted: stanzas are counted and kept until acknowledged."""
        self.resumable = False
        """The session may be resumed: a lost connection makes it hibernate, not end."""
        self.id = ""
        """The resumption id (``previd``) the client was given."""
        self.received = 0
        """Stanzas handled from the client (the ``h`` we acknowledge)."""
        self.sent = 0
        """Stanzas sent to the client since enabling."""
        self.r_pending = False
        """An ``<r/>`` was sent and not answered yet (no second one meanwhile)."""
        self.unacked: deque[tuple[int, str]] | None = None
        """(sequence number, serialised stanza) of what the client has not acknowledged."""
        self._hibernate_handle: asyncio.TimerHandle | None = None

    # -- NegotiationStep --------------------------------------------------------------------

    def offer(self) -> str:
        return f"<sm xmlns='{NS_SM}'/>" if self.stream.authenticated else ""

    def negotiate(self, el: Element) -> bool:
        """Before binding: ``<resume/>``; enabling or acking has no session yet."""
        if not self.stream.authenticated or el.ns != NS_SM:
            return False
        name = el.name
        if name == "resume":
            self._resume(el)
            return True
        if name in ("enable", "r", "a"):
            self.stream.write(SM_UNEXPECTED)
            return True
        return False

    # -- a bound stream ---------------------------------------------------------------------

    def handle(self, el: Element) -> None:
        """An element in the SM namespace on a bound stream."""
        stream = self.stream
        name = el.name
        if name == "r":
            stream.write(f"<a xmlns='{NS_SM}' h='{self.received & 0xFFFFFFFF}'/>")
            return
        if name == "a":
            try:
                h = int(el.get("h", ""))
            except ValueError:
                raise StreamError(StreamErrorCondition.UNDEFINED_CONDITION, "bad h") from None
            self.ack(h)
            return
        if name == "enable":
            if self.enabled:
                stream.write(SM_UNEXPECTED)
                return
            self.enabled = True
            self.unacked = deque()
            resume = el.get("resume") in ("true", "1")
            attrs = ""
            if resume:
                self.resumable = True
                self.id = secrets.token_urlsafe(18)
                stream.services.router.resumable[self.id] = stream
                maximum = stream.services.settings.sm_resume_timeout_seconds
                attrs = f" id='{self.id}' resume='true' max='{maximum}'"
            stream.write(f"<enabled xmlns='{NS_SM}'{attrs}/>")
            return
        if name == "resume":
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "already bound")
        raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, name)

    def ack(self, h: int) -> None:
        """The client acknowledged ``h`` stanzas: forget those."""
        queue = self.unacked
        self.r_pending = False
        if queue is None:
            return
        if h > self.sent:
            raise StreamError(
                StreamErrorCondition.UNDEFINED_CONDITION, "acknowledged more than was sent"
            )
        while queue and queue[0][0] <= h:
            queue.popleft()

    def track(self, data: str) -> bool:
        """Count and keep a stanza about to be sent; False (and the stream failed) when the
        client has left too many unacknowledged."""
        self.sent += 1
        queue = self.unacked
        assert queue is not None
        queue.append((self.sent, data))
        if len(queue) > self.stream.services.settings.sm_max_unacked:
            self.resumable = False
            self.stream.fail(
                StreamError(
                    StreamErrorCondition.POLICY_VIOLATION, "too many unacknowledged stanzas"
                )
            )
            return False
        return True

    def take_ack_request(self) -> str | None:
        """The ``<r/>`` to append after a batch with unacknowledged stanzas, at most one
        outstanding."""
        if self.enabled and not self.r_pending and self.unacked:
            self.r_pending = True
            return ACK_REQUEST
        return None

    # -- resumption (§5) --------------------------------------------------------------------

    def _resume(self, el: Element) -> None:
        """XEP-0198 §5: take over a hibernating (or half-dead) session of the same account."""
        stream = self.stream
        router = stream.services.router
        previd = el.get("previd", "")
        old = router.resumable.get(previd)
        try:
            h = int(el.get("h", ""))
        except ValueError:
            h = -1
        if (
            old is None
            or old.bare_str != stream.bare_str
            or old.host_state is not stream.host_state
            or h < 0
        ):
            stream.write(SM_NOT_FOUND)
            return
        previous = old.sm
        if h > previous.sent:
            stream.write(SM_UNEXPECTED)
            return
        host = stream.host_state
        assert host is not None and old.jid is not None
        previous.cancel_hibernation()
        stream.take_over_session(old)
        self.received = previous.received
        self.sent = previous.sent
        self.unacked = previous.unacked
        self.id = previous.id
        self.enabled = True
        self.resumable = True
        router.resumable[self.id] = stream
        host.sessions.setdefault(stream.localpart, {})[stream.resource] = stream
        stream.mark_bound(host)
        self.ack(h)
        stream.write(
            f"<resumed xmlns='{NS_SM}' previd='{escape_attr(previd)}' "
            f"h='{self.received & 0xFFFFFFFF}'/>"
        )
        for _, data in list(self.unacked or ()):
            stream.write(data if not stream.ws else parse_fragment(data).serialize(""))

    # -- hibernation ------------------------------------------------------------------------

    def hibernate(self) -> None:
        """Connection lost with resumption enabled: keep the session for a while."""
        stream = self.stream
        stream.drop_connection()
        loop = asyncio.get_running_loop()
        self._hibernate_handle = loop.call_later(
            stream.services.settings.sm_resume_timeout_seconds, self._hibernation_expired
        )

    def _hibernation_expired(self) -> None:
        self._hibernate_handle = None
        if self.stream.state is State.HIBERNATING:
            self.stream.end_hibernation()

    def cancel_hibernation(self) -> None:
        if self._hibernate_handle is not None:
            self._hibernate_handle.cancel()
            self._hibernate_handle = None

    # -- the end of the session -------------------------------------------------------------

    def forget(self) -> None:
        """The stream ends: no more resumption of it."""
        self.cancel_hibernation()
        if self.id:
            self.stream.services.router.resumable.pop(self.id, None)

    def requeue_unacked(self, host: HostState) -> None:
        """XEP-0198 §4: unacknowledged messages are re-routed (other resource or offline)."""
        queue = self.unacked
        self.unacked = None
        if not queue:
            return
        router = self.stream.services.router
        for _, data in queue:
            try:
                el = parse_fragment(data)
            except ValueError:
                continue
            if el.name != "message" or el.get("type") in ("error", "groupchat", "headline"):
                continue
            if el.find("body") is None:
                continue
            pending = router.route_message(host, el, self.stream.bare_jid)
            if pending is not None:
                spawn(pending)
