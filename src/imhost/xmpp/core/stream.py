"""One client-to-server stream (RFC 6120): transport, header, STARTTLS, the bound session.

A :class:`C2SStream` is an ``asyncio.Protocol`` for TCP (STARTTLS on 5222, Direct TLS on
5223, XEP-0368) and is also driven by the WebSocket entry point (RFC 7395), where each text
message is one element and ``<open/>``/``<close/>`` replace the stream header and footer.

The later negotiation steps are their own objects the stream drives (:mod:`.negotiation`):
SASL (:mod:`.saslauth`), resource binding (:mod:`.binding`) and XEP-0198 stream management
(:mod:`.stream_management`).

Once bound, the stream is the *session* modules see: ``jid``, ``available``, ``priority``,
``presence``, ``deliver()``, and typed per-module state through :meth:`get`/:meth:`set`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from imhost.config import XmppSettings
from imhost.kit.clock import Clock
from imhost.kit.jid import JID, prepare_domain

from .binding import ResourceBinding
from .errors import (
    StanzaError,
    StanzaErrorCondition,
    StreamError,
    StreamErrorCondition,
    make_error_reply,
)
from .hooks import Hook, SessionKey, StanzaEvent
from .negotiation import NegotiationStep, State, spawn
from .parser import StreamParser, parse_fragment
from .saslauth import SaslAuth
from .stream_management import StreamManagement
from .xml import (
    NS_CLIENT,
    NS_FRAMING,
    NS_SM,
    NS_STREAMS,
    NS_TLS,
    Element,
    escape_attr,
)

if TYPE_CHECKING:
    from .metering import HostCounters
    from .router import HostState, Router

log = logging.getLogger("imhost.xmpp.stream")

T = TypeVar("T")

_WS_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)

__all__ = ["C2SStream", "State", "StreamServices", "Transport", "spawn"]


class Transport(Protocol):
    """The part of ``asyncio.Transport`` a stream uses (the WebSocket shim implements it)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def is_closing(self) -> bool: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int: ...


@dataclass(slots=True)
class StreamServices:
    """What every stream shares: the router, settings, TLS and bookkeeping."""

    router: Router
    settings: XmppSettings
    clock: Clock
    ssl_context: ssl.SSLContext | None
    tls_server_end_point: bytes | None
    secret: bytes
    unauthenticated: dict[str, int] = field(default_factory=dict)
    streams: set[C2SStream] = field(default_factory=set)
    auth_failures_total: int = 0


class C2SStream(asyncio.Protocol):
    """A client stream and, once a resource is bound, the client's session."""

    __slots__ = (
        "_busy",
        "_counted_unauth",
        "_data",
        "_deadline",
        "_header",
        "_header_sent",
        "_held",
        "_out",
        "_queue",
        "_restart_pending",
        "_throttled",
        "address",
        "authenticated",
        "available",
        "bare_jid",
        "bare_str",
        "binding",
        "counters",
        "host_state",
        "jid",
        "jid_str",
        "localpart",
        "parser",
        "presence",
        "priority",
        "rx_seen",
        "sasl",
        "services",
        "sm",
        "state",
        "stream_id",
        "tls",
        "transport",
        "ws",
    )

    def __init__(self, services: StreamServices, *, ws: bool = False, tls: bool = False) -> None:
        self.services = services
        self.ws = ws
        self.tls = tls
        self.transport: Transport | None = None
        self.parser: StreamParser | None = None
        self.state = State.WAIT_HEADER
        self.address = ""
        self.stream_id = ""
        self.host_state: HostState | None = None
        self.counters: HostCounters | None = None
        self.authenticated = False
        self.localpart = ""
        self.jid: JID | None = None
        self.bare_jid: JID | None = None
        self.jid_str = ""
        self.bare_str = ""
        self.available = False
        self.priority = 0
        self.presence: Element | None = None
        self.rx_seen = True
        self._header_sent = False
        self._out: list[str] | None = None
        self._queue: deque[Element] = deque()
        self._busy = False
        self._held: bytes | None = None
        self._header: bytes | None = None
        self._restart_pending = False
        self._deadline: asyncio.TimerHandle | None = None
        self._counted_unauth = False
        self._throttled = False
        self._data: dict[SessionKey[Any], Any] | None = None
        self.sasl = SaslAuth(self)
        self.binding = ResourceBinding(self)
        self.sm = StreamManagement(self)

    @property
    def steps(self) -> tuple[NegotiationStep, ...]:
        """The negotiation steps, in the order they offer features and take elements."""
        return (self.sasl, self.binding, self.sm)

    # ======================================================================================
    # module-facing session API
    # ======================================================================================

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def domain(self) -> str:
        return self.host_state.domain if self.host_state is not None else ""

    @property
    def resource(self) -> str:
        return self.jid.resource if self.jid is not None else ""

    def get(self, key: SessionKey[T]) -> T:
        """Typed per-session state of a module (see :class:`SessionKey`)."""
        if self._data is None:
            return key.default
        value: T = self._data.get(key, key.default)
        return value

    def set(self, key: SessionKey[T], value: T) -> None:
        if self._data is None:
            self._data = {}
        self._data[key] = value

    def set_available(self, presence: Element) -> None:
        """Record an available presence (RFC 6121 §4.7.2.3 priority, -128..127)."""
        self.available = True
        self.presence = presence
        text = presence.find_text("priority")
        prio = 0
        if text:
            try:
                prio = max(-128, min(127, int(text.strip())))
            except ValueError:
                prio = 0
        self.priority = prio

    def set_unavailable(self, presence: Element | None = None) -> None:
        self.available = False
        self.presence = None

    def deliver(self, el: Element, data: str | None = None) -> str | None:
        """Send a stanza to this client (through the DELIVER hook). ``data`` is a serialised
        form shared between recipients; the (possibly new) serialised form is returned."""
        host = self.host_state
        if host is not None:
            chain = host.deliver_chain
            if chain.handlers:
                handled = chain.fire(StanzaEvent(el, self, host.domain, self.jid, None))
                if handled is True:
                    return data
        if self.ws:
            self._send_stanza(el.serialize(""))
            return data
        if data is None:
            data = el.serialize(NS_CLIENT)
        self._send_stanza(data)
        return data

    def send_raw_stanza(self, data: str) -> None:
        """Send an already serialised stanza (jabber:client, TCP form) bypassing hooks."""
        if self.ws:
            self._send_stanza(parse_fragment(data).serialize(""))
        else:
            self._send_stanza(data)

    def close_with_error(self, condition: StreamErrorCondition, text: str = "") -> None:
        """Close the stream with a stream error (e.g. suspension: policy-violation + reason)."""
        self.fail(StreamError(condition, text))

    # ======================================================================================
    # transport events
    # ======================================================================================

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)  # type: ignore[arg-type]

    def attach(self, transport: Transport) -> None:
        """Start the stream on ``transport`` (TCP, TLS or the WebSocket shim)."""
        services = self.services
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.address = str(peer[0])
        services.streams.add(self)
        self._new_parser()
        count = services.unauthenticated.get(self.address, 0) + 1
        services.unauthenticated[self.address] = count
        self._counted_unauth = True
        if count > services.settings.unauthenticated_per_address:
            self.fail(
                StreamError(
                    StreamErrorCondition.POLICY_VIOLATION,
                    "too many unauthenticated connections from your address",
                )
            )
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(
            services.settings.negotiation_timeout_seconds, self._negotiation_timeout
        )

    def data_received(self, data: bytes) -> None:
        counters = self.counters
        if counters is not None:
            counters.bytes_in += len(data)
        self.rx_seen = True
        self._feed(data)
        self.services.router.flush_pending()

    def _feed(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self._held is not None:
            self._held += data
            return
        parser = self.parser
        if parser is None:
            parser = self._new_parser(restart=False)
        try:
            rest = parser.feed(data)
        except StreamError as exc:
            self.fail(exc)
            return
        except Exception:
            log.exception("stream %s: unexpected error", self.stream_id)
            self.fail(StreamError(StreamErrorCondition.INTERNAL_SERVER_ERROR))
            return
        held = self._held_bytes()
        if held is not None:
            # a handler paused the parser at a negotiation barrier
            self._held = rest + held
            if self.transport is not None and not self.ws:
                self.transport.pause_reading()
            if not self._busy:
                self._release()

    def _held_bytes(self) -> bytes | None:
        """Bytes held at a barrier (a handler may have set it during ``feed``)."""
        return self._held

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is State.CLOSED:
            self.services.streams.discard(self)
            return
        if self.state is State.BOUND and self.sm.resumable:
            self.sm.hibernate()
            return
        self._teardown()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # ======================================================================================
    # parser plumbing
    # ======================================================================================

    def _new_parser(self, restart: bool = True) -> StreamParser:
        limits = self._max_stanza_bytes()
        if self.ws:
            header: bytes | None = _WS_HEADER
        elif not restart:
            header = self._header
        else:
            header = self._header = None
        self.parser = StreamParser(
            self._on_header,
            self._on_stanza,
            self._on_end,
            max_stanza_bytes=limits,
            header=header,
        )
        return self.parser

    def _max_stanza_bytes(self) -> int:
        """The smaller of the server-wide limit and the host's plan limit."""
        limit = self.services.settings.max_stanza_bytes
        host = self.host_state
        if host is not None:
            limit = min(limit, host.vhost.limits.max_stanza_bytes)
        return limit

    def hold_input(self) -> None:
        """A negotiation barrier: stop parsing after this element; bytes that follow wait
        for :meth:`_release` (when the step run by :meth:`run_in_order` is done)."""
        assert self.parser is not None
        self.parser.pause()
        self._held = b""

    def restart_after_input(self) -> None:
        """The held bytes start a new stream (RFC 6120 §6.4.6 after SASL, §5.4.3.3 after
        TLS): a fresh parser and header when the barrier is released."""
        self._restart_pending = True

    def _release(self) -> None:
        """Continue after a barrier: a fresh parser (stream restart) or a primed copy."""
        held = self._held or b""
        self._held = None
        if self.state is State.CLOSED:
            return
        if self._restart_pending:
            self._restart_pending = False
            self._new_parser(restart=True)
            self.state = State.WAIT_HEADER
            self._header_sent = False
        else:
            self._new_parser(restart=False)
        if self.transport is not None and not self.ws:
            self.transport.resume_reading()
        if held:
            self._feed(held)

    def park_parser(self) -> bool:
        """Free the parser of an idle bound stream; it is re-created on the next byte.

        Expat's state is most of an idle connection's memory. Only done at a stanza boundary.
        """
        parser = self.parser
        if (
            parser is not None
            and self.state is State.BOUND
            and not self.ws
            and self._held is None
            and parser.at_boundary
        ):
            parser.close()
            self.parser = None
            return True
        return False

    # ======================================================================================
    # stream header and end
    # ======================================================================================

    def _on_header(self, ns: str, name: str, attrs: dict[str, str], default_ns: str) -> None:
        if self.state is not State.WAIT_HEADER:
            raise StreamError(StreamErrorCondition.BAD_FORMAT, "unexpected stream header")
        if ns != NS_STREAMS or name != "stream":
            raise StreamError(StreamErrorCondition.INVALID_NAMESPACE, "expected stream:stream")
        if default_ns != NS_CLIENT:
            raise StreamError(
                StreamErrorCondition.INVALID_NAMESPACE, "content namespace must be jabber:client"
            )
        self._open_stream(attrs)

    def _open_stream(self, attrs: dict[str, str]) -> None:
        """RFC 6120 §4.7: check ``to`` and ``version``; answer with our header and features."""
        self.stream_id = secrets.token_urlsafe(12)
        to = attrs.get("to")
        router = self.services.router
        if not to:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, "the stream needs a 'to' domain")
        try:
            domain = prepare_domain(to)
        except ValueError:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, "not a valid domain") from None
        host = router.hosts.get(domain)
        if host is None:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, f"{domain} is not served here")
        if self.host_state is not None and self.host_state is not host:
            raise StreamError(StreamErrorCondition.HOST_UNKNOWN, "host changed on restart")
        self.host_state = host
        self.counters = host.counters
        if self.parser is not None:
            self.parser.max_stanza_bytes = self._max_stanza_bytes()
            if not self.ws:
                self._header = self.parser.header_bytes
        version = attrs.get("version", "")
        try:
            major = int(version.split(".")[0]) if version else 0
        except ValueError:
            major = 0
        self._write_header(attrs)
        if major < 1:
            raise StreamError(StreamErrorCondition.UNSUPPORTED_VERSION, "XMPP 1.0 is required")
        self.state = State.NEGOTIATING
        self.write(self._features())

    def _write_header(self, attrs: dict[str, str] | None = None) -> None:
        if self._header_sent:
            return
        self._header_sent = True
        domain = self.host_state.domain if self.host_state is not None else ""
        sid = self.stream_id or secrets.token_urlsafe(12)
        to = ""
        if attrs and attrs.get("from"):
            to = f" to='{escape_attr(attrs['from'])}'"
        frm = f" from='{escape_attr(domain)}'" if domain else ""
        if self.ws:
            self.write(
                f"<open xmlns='{NS_FRAMING}'{frm}{to} id='{sid}' version='1.0' xml:lang='en'/>"
            )
        else:
            self.write(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                f"xmlns:stream='{NS_STREAMS}'{frm}{to} id='{sid}' version='1.0' xml:lang='en'>"
            )

    def _on_end(self) -> None:
        """The client closed the stream (RFC 6120 §4.4): close ours and the connection."""
        self.sm.resumable = False
        self._close_stream()

    def _features(self) -> str:
        """RFC 6120 §4.3.2 stream features for the current state: STARTTLS, then what each
        negotiation step offers, then the modules' features."""
        settings = self.services.settings
        host = self.host_state
        assert host is not None
        parts: list[str] = []
        tls_possible = self.services.ssl_context is not None and not self.ws
        if not self.authenticated and not self.tls and tls_possible:
            required = "<required/>" if settings.require_encryption else ""
            parts.append(f"<starttls xmlns='{NS_TLS}'>{required}</starttls>")
        parts.extend(step.offer() for step in self.steps)
        if not self.authenticated:
            module_features = host.preauth_features if self.secure_enough_for_auth() else []
        else:
            module_features = host.stream_features
        for feature in module_features:
            el = feature(self)
            if el is not None:
                parts.append(el.serialize(""))
        body = "".join(parts)
        if self.ws:
            return f"<stream:features xmlns:stream='{NS_STREAMS}'>{body}</stream:features>"
        return f"<stream:features>{body}</stream:features>"

    def secure_enough_for_auth(self) -> bool:
        """Whether authentication (SASL, and pre-auth registration) may happen on this
        connection now: encrypted, over WebSocket (TLS is the web server's), or encryption
        is not required or not possible here."""
        return (
            self.tls
            or self.ws
            or not self.services.settings.require_encryption
            or self.services.ssl_context is None
        )

    # ======================================================================================
    # stanzas
    # ======================================================================================

    def _on_stanza(self, el: Element) -> None:
        if self.state is State.BOUND:
            if self._busy or self._queue:
                if el.name == "iq" and self._answer_to_server(el):
                    return
                self._queue.append(el)
                if len(self._queue) > 256 and self.transport is not None and not self.ws:
                    self.transport.pause_reading()
                return
            self._process(el)
            return
        if self.ws and el.ns == NS_FRAMING:
            self._ws_framing(el)
            return
        self._negotiate(el)

    def _answer_to_server(self, el: Element) -> bool:
        """An iq result/error answering a server request (``ctx.request``) is delivered at
        once, even while earlier stanzas wait: the handler that is waiting may be the one
        holding the queue (a module asking the client something), and answers carry no order.
        """
        if el.attrs.get("type") not in ("result", "error"):
            return False
        pending = self.services.router.pending_iq.get(el.attrs.get("id", ""))
        if pending is None:
            return False
        to = el.attrs.get("to")
        if to and to != self.domain:
            return False
        sm = self.sm
        if sm.enabled:
            sm.received += 1
        del self.services.router.pending_iq[el.attrs.get("id", "")]
        if not pending.done():
            pending.set_result(el)
        return True

    def _process(self, el: Element) -> None:
        ns = el.ns
        if ns == NS_CLIENT:
            sm = self.sm
            if sm.enabled:
                sm.received += 1
            try:
                pending = self.services.router.from_client(self, el)
            except StanzaError as exc:
                self.services.router.reply_error(self, el, exc.condition, exc.text, exc.type)
                return
            if pending is not None:
                self.run_in_order(pending)
            return
        if ns == NS_SM:
            self.sm.handle(el)
            return
        if self.ws and ns == NS_FRAMING:
            self._ws_framing(el)
            return
        host = self.host_state
        handler = host.nonza_handlers.get(ns) if host is not None else None
        if handler is None:
            raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, f"{el.name} in {ns}")
        pending = handler(self, el)
        if pending is not None:
            self.run_in_order(pending)

    def run_in_order(self, pending: Awaitable[Any]) -> None:
        """Process an asynchronous step; later stanzas wait (RFC 6120 §10.1 in-order)."""
        self._busy = True
        spawn(self._complete(pending))

    async def _complete(self, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except StreamError as exc:
            self._busy = False
            self.fail(exc)
            return
        except Exception:
            log.exception("stream %s: handler failed", self.stream_id)
        self._busy = False
        if self._held is not None:
            self._release()
        self._drain_queue()

    def _drain_queue(self) -> None:
        queue = self._queue
        try:
            while queue and not self._busy and self.state is State.BOUND:
                self._process(queue.popleft())
        except StreamError as exc:
            self.fail(exc)
            return
        if (
            not queue
            and self.transport is not None
            and not self.ws
            and self._held is None
            and not self._throttled
        ):
            self.transport.resume_reading()

    # -- negotiation ----------------------------------------------------------------------

    def _negotiate(self, el: Element) -> None:
        """An element before a resource is bound: STARTTLS here, then the negotiation steps
        (SASL, binding, XEP-0198 resumption), then pre-auth iq of modules."""
        if self.state is State.WAIT_HEADER:
            raise StreamError(StreamErrorCondition.BAD_FORMAT, "stream header expected")
        if el.ns == NS_TLS and el.name == "starttls" and not self.authenticated:
            self._starttls()
            return
        for step in self.steps:
            if step.negotiate(el):
                return
        if not self.authenticated:
            if el.ns == NS_CLIENT and el.name == "iq" and self._preauth_iq(el):
                return
            raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "authenticate first")
        raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "bind a resource first")

    def _preauth_iq(self, iq: Element) -> bool:
        """Dispatch an iq before authentication to a module (XEP-0077 registration), where
        SASL itself would be offered. Return False if nobody handles it."""
        host = self.host_state
        if host is None or iq.get("type") not in ("get", "set") or iq.get("id") is None:
            return False
        payload = next(iter(iq.elements()), None)
        if payload is None:
            return False
        handler = host.preauth_iq_handlers.get(payload.ns)
        if handler is None or not self.secure_enough_for_auth():
            return False
        try:
            result = handler(self, iq)
        except StanzaError as exc:
            self.write_stanza(make_error_reply(iq, exc.condition, exc.text, exc.type))
            return True
        if isinstance(result, Element) or result is None:
            if result is not None:
                self.write_stanza(result)
            return True
        self.hold_input()
        self.run_in_order(self._preauth_reply(iq, result))
        return True

    async def _preauth_reply(self, iq: Element, pending: Awaitable[Element | None]) -> None:
        try:
            result = await pending
        except StanzaError as exc:
            self.write_stanza(make_error_reply(iq, exc.condition, exc.text, exc.type))
            return
        except Exception:
            log.exception("pre-auth iq handler failed")
            self.write_stanza(make_error_reply(iq, StanzaErrorCondition.INTERNAL_SERVER_ERROR))
            return
        if result is not None:
            self.write_stanza(result)

    def _starttls(self) -> None:
        """RFC 6120 §5.4.2."""
        ctx = self.services.ssl_context
        if self.tls or ctx is None or self.ws:
            self.write(f"<failure xmlns='{NS_TLS}'/></stream:stream>")
            self.flush()
            self._shutdown_transport()
            return
        self.write(f"<proceed xmlns='{NS_TLS}'/>")
        self.flush()
        self.hold_input()
        self.run_in_order(self._upgrade(ctx))

    async def _upgrade(self, ctx: ssl.SSLContext) -> None:
        transport = self.transport
        assert transport is not None
        # RFC 6120 §5.4.3.3: plaintext sent after <starttls/> is discarded (no injection);
        # what arrives from now on is decrypted data and is kept.
        self._held = b""
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(
                transport,  # type: ignore[arg-type]
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.services.settings.negotiation_timeout_seconds,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake failed from %s: %s", self.address, exc)
            self._held = None
            self._teardown()
            transport.close()
            return
        if new is None:
            self._teardown()
            return
        self.transport = new
        self.tls = True
        self.restart_after_input()

    def authenticated_as(self, localpart: str) -> None:
        """SASL succeeded for ``localpart``: the stream restarts authenticated (RFC 6120
        §6.4.6) and no longer counts as an unauthenticated connection of its address."""
        host = self.host_state
        assert host is not None
        self.authenticated = True
        self.localpart = localpart
        host.counters.auth_successes += 1
        self._uncount_unauth()
        self.bare_jid = JID(localpart, host.domain)
        self.bare_str = self.bare_jid.bare
        self.restart_after_input()

    def _uncount_unauth(self) -> None:
        if self._counted_unauth:
            self._counted_unauth = False
            unauth = self.services.unauthenticated
            n = unauth.get(self.address, 1) - 1
            if n <= 0:
                unauth.pop(self.address, None)
            else:
                unauth[self.address] = n

    def mark_bound(self, host: HostState) -> None:
        """The stream is now a session of ``host`` (bound or resumed): counted, no deadline."""
        self.state = State.BOUND
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        host.connections += 1
        self.counters = host.counters
        host.counters.connection_opened()
        host.counters.mark_active(self.bare_str)

    def take_over_session(self, old: C2SStream) -> None:
        """XEP-0198 resumption: detach ``old`` (hibernating or half-dead) silently and move
        its session here (address, availability, modules' state). Its SM counters are moved
        by :class:`StreamManagement`."""
        host = self.host_state
        assert host is not None
        was_connected = old.state is State.BOUND
        old_transport = old.transport
        old.state = State.CLOSED
        old.transport = None
        if was_connected and old_transport is not None:
            old_transport.close()
        if old.counters is not None and was_connected:
            host.connections -= 1
            old.counters.connection_closed()
        self.services.streams.discard(old)
        self.jid = old.jid
        self.jid_str = old.jid_str
        self.available = old.available
        self.priority = old.priority
        self.presence = old.presence
        self._data = old._data

    def drop_connection(self) -> None:
        """The connection is gone but the session stays (XEP-0198 hibernation)."""
        self.state = State.HIBERNATING
        self.transport = None
        self._out = None
        host = self.host_state
        if host is not None and self.counters is not None:
            host.connections -= 1
            self.counters.connection_closed()

    def end_hibernation(self) -> None:
        """Nobody resumed the session in time: it ends."""
        self._teardown(connected=False)

    # ======================================================================================
    # output
    # ======================================================================================

    def write_stanza(self, el: Element) -> None:
        """Send a stanza the stream itself answers (counted by XEP-0198, no hooks)."""
        self._send_stanza(el.serialize("" if self.ws else NS_CLIENT))

    def _send_stanza(self, data: str) -> None:
        sm = self.sm
        if sm.enabled:
            if not sm.track(data):
                return
            if self.state is State.HIBERNATING:
                return
        elif self.state is State.HIBERNATING:
            return
        self.write(data)

    def write(self, data: str) -> None:
        """Queue serialised XML for the next :meth:`flush` (not a stanza: not counted)."""
        if self.transport is None:
            return
        out = self._out
        if out is None:
            self._out = [data]
            self.services.router.mark_dirty(self)
        else:
            out.append(data)

    def flush(self, *, request_ack: bool = True) -> None:
        """Write everything queued in one call (TCP) or one frame per element (WebSocket).

        With stream management on, an ``<r/>`` follows unacknowledged stanzas, unless
        ``request_ack`` is false: when the batch ends with the closing tag, nothing may follow
        it (RFC 6120 §4.4, RFC 7395 §3.6)."""
        out = self._out
        if out is None:
            return
        self._out = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if request_ack:
            ack_request = self.sm.take_ack_request()
            if ack_request is not None:
                out.append(ack_request)
        if self.ws:
            n = 0
            for item in out:
                raw = item.encode()
                n += len(raw)
                transport.write(raw)
        else:
            raw = "".join(out).encode()
            n = len(raw)
            transport.write(raw)
        counters = self.counters
        if counters is not None:
            counters.bytes_out += n
        if transport.get_write_buffer_size() > self.services.settings.max_write_buffer_bytes:
            self.sm.resumable = False
            self.fail(StreamError(StreamErrorCondition.POLICY_VIOLATION, "client is not reading"))

    def throttle(self, seconds: float) -> None:
        """Shape a fast sender: stop reading for a while (ejabberd-style shaper)."""
        if self._throttled or self.transport is None or self.ws:
            return
        self._throttled = True
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(min(seconds, 5.0), self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttled = False
        if self.transport is not None and not self._busy and self._held is None:
            self.transport.resume_reading()

    # ======================================================================================
    # closing
    # ======================================================================================

    def fail(self, error: StreamError) -> None:
        """Send a stream error (RFC 6120 §4.9), close the stream and the connection."""
        if self.state is State.CLOSED:
            return
        if self.state is State.HIBERNATING:
            self._teardown(connected=False)
            return
        if not self._header_sent:
            self._write_header()
        if self.ws:
            self.write(
                f"<stream:error xmlns:stream='{NS_STREAMS}'>"
                + error.to_xml("")[len("<error>") : -len("</error>")]
                + "</stream:error>"
            )
        else:
            self.write(error.to_xml())
        self.sm.resumable = False
        self._close_stream()

    def _close_stream(self) -> None:
        if self.ws:
            self.write(f"<close xmlns='{NS_FRAMING}'/>")
        else:
            if not self._header_sent:
                self._write_header()
            self.write("</stream:stream>")
        self.flush(request_ack=False)
        self._shutdown_transport()

    def _shutdown_transport(self) -> None:
        transport = self.transport
        self._teardown()
        if transport is not None:
            transport.close()

    def _negotiation_timeout(self) -> None:
        self._deadline = None
        if self.state in (State.WAIT_HEADER, State.NEGOTIATING):
            self.fail(
                StreamError(StreamErrorCondition.CONNECTION_TIMEOUT, "negotiation took too long")
            )

    def _teardown(self, connected: bool = True) -> None:
        """Forget this stream everywhere; unacknowledged messages go back to the router."""
        previous = self.state
        if previous is State.CLOSED:
            return
        self.state = State.CLOSED
        services = self.services
        services.streams.discard(self)
        self._uncount_unauth()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.sm.forget()
        if self.parser is not None:
            self.parser.close()
            self.parser = None
        self._queue.clear()
        self.transport = None
        self._out = None
        host = self.host_state
        if (
            previous in (State.BOUND, State.HIBERNATING)
            and host is not None
            and self.jid is not None
        ):
            mine = host.sessions.get(self.localpart)
            if mine is not None and mine.get(self.resource) is self:
                del mine[self.resource]
                if not mine:
                    del host.sessions[self.localpart]
            if previous is State.BOUND and self.counters is not None:
                host.connections -= 1
                self.counters.connection_closed()
            fired = services.router.fire_session(Hook.SESSION_CLOSED, self)
            if not isinstance(fired, bool):
                spawn(fired)
            self.sm.requeue_unacked(host)

    # -- WebSocket framing (RFC 7395 §3.3) -------------------------------------------------

    def _ws_framing(self, el: Element) -> None:
        if el.name == "open":
            if self.state not in (State.WAIT_HEADER,):
                raise StreamError(StreamErrorCondition.BAD_FORMAT, "unexpected <open/>")
            self._header_sent = False
            self._open_stream(el.attrs)
            return
        if el.name == "close":
            self.sm.resumable = False
            self._close_stream()
            return
        raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, el.name)
