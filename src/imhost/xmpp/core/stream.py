"""One client-to-server stream (RFC 6120): negotiation, the bound session, XEP-0198.

A :class:`C2SStream` is an ``asyncio.Protocol`` for TCP (STARTTLS on 5222, Direct TLS on
5223, XEP-0368) and is also driven by the WebSocket entry point (RFC 7395), where each text
message is one element and ``<open/>``/``<close/>`` replace the stream header and footer.

Once bound, the stream is the *session* modules see: ``jid``, ``available``, ``priority``,
``presence``, ``deliver()``, and typed per-module state through :meth:`get`/:meth:`set`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import logging
import secrets
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from imhost.config import XmppSettings
from imhost.kit.clock import Clock
from imhost.kit.jid import JID, parse_jid, prepare_domain, prepare_resource

from .errors import StanzaError, StreamError, StreamErrorCondition, make_error_reply
from .hooks import Hook, SessionKey, StanzaEvent
from .parser import StreamParser, parse_fragment
from .sasl import MECHANISMS, Outcome, SaslExchange, Step
from .xml import (
    NS_BIND,
    NS_CLIENT,
    NS_FRAMING,
    NS_SASL,
    NS_SESSION,
    NS_SM,
    NS_STANZA_ERRORS,
    NS_STREAMS,
    NS_TLS,
    Element,
    escape_attr,
    escape_text,
)

if TYPE_CHECKING:
    from .metering import HostCounters
    from .router import HostState, Router

log = logging.getLogger("imhost.xmpp.stream")

T = TypeVar("T")

_WS_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)
_NS_CB = "urn:xmpp:sasl-cb:0"
_SM_UNEXPECTED = (
    f"<failed xmlns='{NS_SM}'><unexpected-request xmlns='{NS_STANZA_ERRORS}'/></failed>"
)
_SM_NOT_FOUND = f"<failed xmlns='{NS_SM}'><item-not-found xmlns='{NS_STANZA_ERRORS}'/></failed>"


class State(enum.IntEnum):
    WAIT_HEADER = 0
    NEGOTIATING = 1
    BOUND = 2
    HIBERNATING = 3
    CLOSED = 4


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
        "_hibernate_handle",
        "_out",
        "_queue",
        "_restart_pending",
        "_sasl",
        "_sasl_failures",
        "_throttled",
        "address",
        "authenticated",
        "available",
        "bare_jid",
        "bare_str",
        "counters",
        "host_state",
        "jid",
        "jid_str",
        "localpart",
        "parser",
        "presence",
        "priority",
        "rx_seen",
        "services",
        "sm_enabled",
        "sm_id",
        "sm_in",
        "sm_out",
        "sm_r_pending",
        "sm_resumable",
        "sm_unacked",
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
        self._sasl: SaslExchange | None = None
        self._sasl_failures = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._hibernate_handle: asyncio.TimerHandle | None = None
        self._counted_unauth = False
        self._throttled = False
        self._data: dict[SessionKey[Any], Any] | None = None
        self.sm_enabled = False
        self.sm_resumable = False
        self.sm_id = ""
        self.sm_in = 0
        self.sm_out = 0
        self.sm_r_pending = False
        self.sm_unacked: deque[tuple[int, str]] | None = None

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
        if self.state is State.BOUND and self.sm_resumable:
            self._hibernate()
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

    def _barrier(self) -> None:
        """Stop parsing after this element; bytes that follow wait for :meth:`_release`."""
        assert self.parser is not None
        self.parser.pause()
        self._held = b""

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
        self._write(self._features())

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
            self._write(
                f"<open xmlns='{NS_FRAMING}'{frm}{to} id='{sid}' version='1.0' xml:lang='en'/>"
            )
        else:
            self._write(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                f"xmlns:stream='{NS_STREAMS}'{frm}{to} id='{sid}' version='1.0' xml:lang='en'>"
            )

    def _on_end(self) -> None:
        """The client closed the stream (RFC 6120 §4.4): close ours and the connection."""
        self.sm_resumable = False
        self._close_stream()

    def _features(self) -> str:
        """RFC 6120 §4.3.2 stream features for the current state."""
        settings = self.services.settings
        host = self.host_state
        assert host is not None
        parts: list[str] = []
        tls_possible = self.services.ssl_context is not None and not self.ws
        if not self.authenticated:
            if not self.tls and tls_possible:
                required = "<required/>" if settings.require_encryption else ""
                parts.append(f"<starttls xmlns='{NS_TLS}'>{required}</starttls>")
            if self.tls or self.ws or not settings.require_encryption or not tls_possible:
                mechs = "".join(f"<mechanism>{m}</mechanism>" for m in self._mechanisms())
                parts.append(f"<mechanisms xmlns='{NS_SASL}'>{mechs}</mechanisms>")
                cbs = self._channel_bindings()
                if cbs:
                    types = "".join(f"<channel-binding type='{t}'/>" for t in cbs)
                    parts.append(
                        f"<sasl-channel-binding xmlns='{_NS_CB}'>{types}</sasl-channel-binding>"
                    )
                for feature in host.preauth_features:
                    el = feature(self)
                    if el is not None:
                        parts.append(el.serialize(""))
        else:
            parts.append(f"<bind xmlns='{NS_BIND}'/>")
            parts.append(f"<session xmlns='{NS_SESSION}'><optional/></session>")
            parts.append(f"<sm xmlns='{NS_SM}'/>")
            for feature in host.stream_features:
                el = feature(self)
                if el is not None:
                    parts.append(el.serialize(""))
        body = "".join(parts)
        if self.ws:
            return f"<stream:features xmlns:stream='{NS_STREAMS}'>{body}</stream:features>"
        return f"<stream:features>{body}</stream:features>"

    def _mechanisms(self) -> list[str]:
        settings = self.services.settings
        secure = self.tls or (self.ws and self._ws_secure())
        out = []
        cbs = self._channel_bindings()
        for name, (h, plus) in MECHANISMS.items():
            if plus and not cbs:
                continue
            if h is None and not (secure or settings.allow_plain_without_tls):
                continue
            out.append(name)
        return out

    def _ws_secure(self) -> bool:
        return bool(self.transport and self.transport.get_extra_info("secure", False))

    def _channel_bindings(self) -> dict[str, bytes]:
        """RFC 5929 / RFC 9266 data computable on this connection."""
        if not self.tls or self.transport is None:
            return {}
        out: dict[str, bytes] = {}
        obj = self.transport.get_extra_info("ssl_object")
        if obj is not None:
            version = obj.version() or ""
            if version in ("TLSv1.2",):
                try:
                    unique = obj.get_channel_binding("tls-unique")
                except (ValueError, ssl.SSLError):
                    unique = None
                if unique:
                    out["tls-unique"] = unique
        if self.services.tls_server_end_point:
            out["tls-server-end-point"] = self.services.tls_server_end_point
        return out

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
        if self.sm_enabled:
            self.sm_in += 1
        del self.services.router.pending_iq[el.attrs.get("id", "")]
        if not pending.done():
            pending.set_result(el)
        return True

    def _process(self, el: Element) -> None:
        ns = el.ns
        if ns == NS_CLIENT:
            if self.sm_enabled:
                self.sm_in += 1
            try:
                pending = self.services.router.from_client(self, el)
            except StanzaError as exc:
                self.services.router.reply_error(self, el, exc.condition, exc.text, exc.type)
                return
            if pending is not None:
                self._run(pending)
            return
        if ns == NS_SM:
            self._sm(el)
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
            self._run(pending)

    def _run(self, pending: Awaitable[Any]) -> None:
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
        ns, name = el.ns, el.name
        if self.state is State.WAIT_HEADER:
            raise StreamError(StreamErrorCondition.BAD_FORMAT, "stream header expected")
        if ns == NS_TLS and name == "starttls" and not self.authenticated:
            self._starttls()
            return
        if ns == NS_SASL:
            if self.authenticated:
                raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "already authenticated")
            self._sasl_element(el)
            return
        if not self.authenticated:
            if ns == NS_CLIENT and name == "iq" and self._preauth_iq(el):
                return
            raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "authenticate first")
        if ns == NS_CLIENT and name == "iq":
            if el.find("bind", NS_BIND) is not None:
                self._bind(el)
                return
            if el.find("session", NS_SESSION) is not None:
                self._write_stanza(Element("iq", attrs={"type": "result", "id": el.get("id", "")}))
                return
            raise StreamError(StreamErrorCondition.NOT_AUTHORIZED, "bind a resource first")
        if ns == NS_SM:
            if name == "resume":
                self._sm_resume(el)
                return
            if name in ("enable", "r", "a"):
                self._write(_SM_UNEXPECTED)
                return
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
        if handler is None:
            return False
        settings = self.services.settings
        secure_enough = (
            self.tls
            or self.ws
            or not settings.require_encryption
            or self.services.ssl_context is None
        )
        if not secure_enough:
            return False
        try:
            result = handler(self, iq)
        except StanzaError as exc:
            self._write_stanza(make_error_reply(iq, exc.condition, exc.text, exc.type))
            return True
        if isinstance(result, Element) or result is None:
            if result is not None:
                self._write_stanza(result)
            return True
        self._barrier()
        self._run(self._preauth_reply(iq, result))
        return True

    async def _preauth_reply(self, iq: Element, pending: Awaitable[Element | None]) -> None:
        try:
            result = await pending
        except StanzaError as exc:
            self._write_stanza(make_error_reply(iq, exc.condition, exc.text, exc.type))
            return
        except Exception:
            log.exception("pre-auth iq handler failed")
            self._write_stanza(make_error_reply(iq, _cond("internal-server-error")))
            return
        if result is not None:
            self._write_stanza(result)

    def _starttls(self) -> None:
        """RFC 6120 §5.4.2."""
        ctx = self.services.ssl_context
        if self.tls or ctx is None or self.ws:
            self._write(f"<failure xmlns='{NS_TLS}'/></stream:stream>")
            self.flush()
            self._shutdown_transport()
            return
        self._write(f"<proceed xmlns='{NS_TLS}'/>")
        self.flush()
        self._barrier()
        self._run(self._upgrade(ctx))

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
        self._restart_pending = True

    def _sasl_element(self, el: Element) -> None:
        name = el.name
        if name == "abort":
            self._sasl = None
            self._sasl_failure("aborted")
            return
        if name == "auth":
            host = self.host_state
            assert host is not None
            settings = self.services.settings
            if (
                not self.tls
                and not self.ws
                and settings.require_encryption
                and self.services.ssl_context is not None
            ):
                self._sasl_failure("encryption-required", "use STARTTLS first")
                return
            mechanism = el.get("mechanism", "")
            if mechanism not in self._mechanisms():
                self._sasl_failure("invalid-mechanism")
                return
            initial = self._decode_sasl(el)
            if initial is False or initial is True:
                return
            self._sasl = SaslExchange(
                mechanism,
                auth=self.services.router.stores.auth,
                domain=host.domain,
                address=self.address,
                secret=self.services.secret,
                channel_bindings=self._channel_bindings(),
            )
            if not host.active:
                # Told only after a right password: a stranger learns nothing of the reason.
                self._sasl.suspended_reason = host.vhost.status_reason or "service suspended"
            self._barrier()
            self._run(self._sasl_step(self._sasl.start(initial)))
            return
        if name == "response":
            if self._sasl is None:
                self._sasl_failure("malformed-request", "no exchange in progress")
                return
            data = self._decode_sasl(el)
            if data is False or data is True:
                return
            self._barrier()
            self._run(self._sasl_step(self._sasl.step(data or b"")))
            return
        raise StreamError(StreamErrorCondition.BAD_FORMAT, f"unexpected SASL element {name}")

    def _decode_sasl(self, el: Element) -> bytes | bool | None:
        text = el.text.strip()
        if not text:
            return None
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._sasl = None
            self._sasl_failure("incorrect-encoding")
            return False

    async def _sasl_step(self, pending: Awaitable[Outcome]) -> None:
        outcome = await pending
        if self.state is State.CLOSED:
            return
        if outcome.step is Step.CHALLENGE:
            data = base64.b64encode(outcome.data).decode() if outcome.data else ""
            self._write(f"<challenge xmlns='{NS_SASL}'>{data}</challenge>")
            return
        if outcome.delay_seconds > 0:
            # The brute-force model's delay, before any final answer (right or wrong alike,
            # so that waiting tells nothing).
            await asyncio.sleep(outcome.delay_seconds)
            if self.closed:
                return
        if outcome.step is Step.SUCCESS:
            self._sasl = None
            data = base64.b64encode(outcome.data).decode() if outcome.data else ""
            self._write(f"<success xmlns='{NS_SASL}'>{data}</success>")
            self.authenticated = True
            self.localpart = outcome.localpart
            host = self.host_state
            assert host is not None
            host.counters.auth_successes += 1
            self._uncount_unauth()
            self.bare_jid = JID(self.localpart, host.domain)
            self.bare_str = self.bare_jid.bare
            self._restart_pending = True
            return
        self._sasl = None
        host = self.host_state
        if host is not None:
            host.counters.auth_failures += 1
        self.services.auth_failures_total += 1
        self._sasl_failure(outcome.condition, outcome.text)

    def _sasl_failure(self, condition: str, text: str = "") -> None:
        """RFC 6120 §6.4.5; too many failures on one connection close it."""
        extra = f"<text xml:lang='en'>{escape_text(text)}</text>" if text else ""
        self._write(f"<failure xmlns='{NS_SASL}'><{condition}/>{extra}</failure>")
        if condition not in ("aborted", "invalid-mechanism"):
            self._sasl_failures += 1
        if self._sasl_failures >= self.services.settings.max_auth_failures_per_connection:
            self.fail(
                StreamError(
                    StreamErrorCondition.POLICY_VIOLATION, "too many authentication failures"
                )
            )

    def _uncount_unauth(self) -> None:
        if self._counted_unauth:
            self._counted_unauth = False
            unauth = self.services.unauthenticated
            n = unauth.get(self.address, 1) - 1
            if n <= 0:
                unauth.pop(self.address, None)
            else:
                unauth[self.address] = n

    def _bind(self, iq: Element) -> None:
        """RFC 6120 §7: bind a resource (server-generated when none is asked)."""
        host = self.host_state
        assert host is not None and self.bare_jid is not None
        router = self.services.router
        if iq.get("type") != "set":
            self._write_stanza(make_error_reply(iq, _cond("bad-request")))
            return
        bind = iq.find("bind", NS_BIND)
        assert bind is not None
        wanted = (bind.find_text("resource", NS_BIND) or "").strip()
        try:
            resource = prepare_resource(wanted) if wanted else ""
        except ValueError as exc:
            self._write_stanza(make_error_reply(iq, _cond("bad-request"), str(exc)))
            return
        limits = host.vhost.limits
        mine = host.sessions.get(self.localpart, {})
        others = [s for r, s in mine.items() if r != resource]
        if (
            limits.max_connections_per_account is not None
            and len(others) >= limits.max_connections_per_account
        ):
            self._write_stanza(
                make_error_reply(
                    iq,
                    _cond("resource-constraint"),
                    f"this account already has {len(others)} connections (the limit)",
                )
            )
            return
        if limits.max_connections is not None and host.connections >= limits.max_connections:
            self._write_stanza(
                make_error_reply(
                    iq,
                    _cond("resource-constraint"),
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
            old.sm_resumable = False
            old.fail(StreamError(StreamErrorCondition.CONFLICT, "replaced by a new connection"))
        self.jid = JID(self.localpart, host.domain, resource)
        self.jid_str = str(self.jid)
        host.sessions.setdefault(self.localpart, {})[resource] = self
        self._became_bound(host)
        reply = Element("iq", attrs={"type": "result", "id": iq.get("id", "")})
        reply.sub("bind", NS_BIND).sub("jid", NS_BIND, text=self.jid_str)
        self._write_stanza(reply)
        fired = router.fire_session(Hook.SESSION_BOUND, self)
        if not isinstance(fired, bool):
            self._run(fired)

    def _became_bound(self, host: HostState) -> None:
        self.state = State.BOUND
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        host.connections += 1
        self.counters = host.counters
        host.counters.connection_opened()
        host.counters.mark_active(self.bare_str)

    # -- XEP-0198 -------------------------------------------------------------------------

    def _sm(self, el: Element) -> None:
        name = el.name
        if name == "r":
            self._write(f"<a xmlns='{NS_SM}' h='{self.sm_in & 0xFFFFFFFF}'/>")
            return
        if name == "a":
            try:
                h = int(el.get("h", ""))
            except ValueError:
                raise StreamError(StreamErrorCondition.UNDEFINED_CONDITION, "bad h") from None
            self._sm_ack(h)
            return
        if name == "enable":
            if self.sm_enabled:
                self._write(_SM_UNEXPECTED)
                return
            self.sm_enabled = True
            self.sm_unacked = deque()
            resume = el.get("resume") in ("true", "1")
            attrs = ""
            if resume:
                self.sm_resumable = True
                self.sm_id = secrets.token_urlsafe(18)
                self.services.router.resumable[self.sm_id] = self
                maximum = self.services.settings.sm_resume_timeout_seconds
                attrs = f" id='{self.sm_id}' resume='true' max='{maximum}'"
            self._write(f"<enabled xmlns='{NS_SM}'{attrs}/>")
            return
        if name == "resume":
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "already bound")
        raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, name)

    def _sm_ack(self, h: int) -> None:
        queue = self.sm_unacked
        self.sm_r_pending = False
        if queue is None:
            return
        if h > self.sm_out:
            raise StreamError(
                StreamErrorCondition.UNDEFINED_CONDITION, "acknowledged more than was sent"
            )
        while queue and queue[0][0] <= h:
            queue.popleft()

    def _sm_resume(self, el: Element) -> None:
        """XEP-0198 §5: take over a hibernating (or half-dead) session of the same account."""
        router = self.services.router
        previd = el.get("previd", "")
        old = router.resumable.get(previd)
        try:
            h = int(el.get("h", ""))
        except ValueError:
            h = -1
        if (
            old is None
            or old.bare_str != self.bare_str
            or old.host_state is not self.host_state
            or h < 0
        ):
            self._write(_SM_NOT_FOUND)
            return
        if h > old.sm_out:
            self._write(_SM_UNEXPECTED)
            return
        host = self.host_state
        assert host is not None and old.jid is not None
        # detach the old stream (silently) and move its session state here
        if old._hibernate_handle is not None:
            old._hibernate_handle.cancel()
            old._hibernate_handle = None
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
        for attr in (
            "jid",
            "jid_str",
            "available",
            "priority",
            "presence",
            "_data",
            "sm_in",
            "sm_out",
            "sm_unacked",
            "sm_id",
        ):
            setattr(self, attr, getattr(old, attr))
        self.sm_enabled = True
        self.sm_resumable = True
        router.resumable[self.sm_id] = self
        host.sessions.setdefault(self.localpart, {})[self.resource] = self
        self._became_bound(host)
        self._sm_ack(h)
        self._write(
            f"<resumed xmlns='{NS_SM}' previd='{escape_attr(previd)}' "
            f"h='{self.sm_in & 0xFFFFFFFF}'/>"
        )
        for _, data in list(self.sm_unacked or ()):
            self._write(data if not self.ws else parse_fragment(data).serialize(""))

    def _hibernate(self) -> None:
        """Connection lost with resumption enabled: keep the session for a while."""
        self.state = State.HIBERNATING
        self.transport = None
        self._out = None
        host = self.host_state
        if host is not None and self.counters is not None:
            host.connections -= 1
            self.counters.connection_closed()
        loop = asyncio.get_running_loop()
        self._hibernate_handle = loop.call_later(
            self.services.settings.sm_resume_timeout_seconds, self._hibernation_expired
        )

    def _hibernation_expired(self) -> None:
        self._hibernate_handle = None
        if self.state is State.HIBERNATING:
            self._teardown(connected=False)

    # ======================================================================================
    # output
    # ======================================================================================

    def _write_stanza(self, el: Element) -> None:
        self._send_stanza(el.serialize("" if self.ws else NS_CLIENT))

    def _send_stanza(self, data: str) -> None:
        if self.sm_enabled:
            self.sm_out += 1
            queue = self.sm_unacked
            assert queue is not None
            queue.append((self.sm_out, data))
            if len(queue) > self.services.settings.sm_max_unacked:
                self.sm_resumable = False
                self.fail(
                    StreamError(
                        StreamErrorCondition.POLICY_VIOLATION, "too many unacknowledged stanzas"
                    )
                )
                return
            if self.state is State.HIBERNATING:
                return
        elif self.state is State.HIBERNATING:
            return
        self._write(data)

    def _write(self, data: str) -> None:
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
        if request_ack and self.sm_enabled and not self.sm_r_pending and self.sm_unacked:
            self.sm_r_pending = True
            out.append(f"<r xmlns='{NS_SM}'/>")
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
            self.sm_resumable = False
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
            self._write(
                f"<stream:error xmlns:stream='{NS_STREAMS}'>"
                + error.to_xml("")[len("<error>") : -len("</error>")]
                + "</stream:error>"
            )
        else:
            self._write(error.to_xml())
        self.sm_resumable = False
        self._close_stream()

    def _close_stream(self) -> None:
        if self.ws:
            self._write(f"<close xmlns='{NS_FRAMING}'/>")
        else:
            if not self._header_sent:
                self._write_header()
            self._write("</stream:stream>")
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
        if self._hibernate_handle is not None:
            self._hibernate_handle.cancel()
            self._hibernate_handle = None
        if self.parser is not None:
            self.parser.close()
            self.parser = None
        self._queue.clear()
        self.transport = None
        self._out = None
        if self.sm_id:
            services.router.resumable.pop(self.sm_id, None)
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
            self._requeue_unacked(host)

    def _requeue_unacked(self, host: HostState) -> None:
        """XEP-0198 §4: unacknowledged messages are re-routed (other resource or offline)."""
        queue = self.sm_unacked
        self.sm_unacked = None
        if not queue:
            return
        router = self.services.router
        for _, data in queue:
            try:
                el = parse_fragment(data)
            except ValueError:
                continue
            if el.name != "message" or el.get("type") in ("error", "groupchat", "headline"):
                continue
            if el.find("body") is None:
                continue
            pending = router.route_message(host, el, self.bare_jid)
            if pending is not None:
                spawn(pending)

    # -- WebSocket framing (RFC 7395 §3.3) -------------------------------------------------

    def _ws_framing(self, el: Element) -> None:
        if el.name == "open":
            if self.state not in (State.WAIT_HEADER,):
                raise StreamError(StreamErrorCondition.BAD_FORMAT, "unexpected <open/>")
            self._header_sent = False
            self._open_stream(el.attrs)
            return
        if el.name == "close":
            self.sm_resumable = False
            self._close_stream()
            return
        raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, el.name)


_TASKS: set[asyncio.Future[Any]] = set()


def spawn(aw: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run an awaitable in the background, keeping a reference until it is done."""
    fut = asyncio.ensure_future(aw)
    _TASKS.add(fut)
    fut.add_done_callback(_TASKS.discard)
    return fut


def _cond(name: str) -> Any:
    from .errors import StanzaErrorCondition

    return StanzaErrorCondition(name)


def jid_or_none(value: str | None) -> JID | None:
    if not value:
        return None
    try:
        return parse_jid(value)
    except ValueError:
        return None


Callback = Callable[[], None]
