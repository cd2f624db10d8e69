"""Host state, session manager and stanza router (RFC 6120 §10, RFC 6121 §8).

The hot path (a message from an online client to an online client) is synchronous: parse
the ``to`` address (cached), look the session up in a dict, serialise once, append to the
recipient's output buffer. No store is touched; nothing is awaited.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imhost.kit.clock import Clock
from imhost.kit.jid import JID, parse_jid

from ..ports import (
    AccountAuth,
    ArchiveStore,
    BlockListStore,
    MucStore,
    OfflineStore,
    PrivateStore,
    RosterStore,
    StorageFull,
    VCardStore,
    VirtualHost,
)
from .errors import StanzaError, StanzaErrorCondition, make_error_reply
from .hooks import (
    Handler,
    Hook,
    HookChain,
    IqTarget,
    IqType,
    SessionEvent,
    StanzaEvent,
)
from .metering import HostCounters, Meter
from .xml import NS_CLIENT, NS_DELAY, NS_SESSION, Element

if TYPE_CHECKING:
    from ..modules.api import Module
    from .stream import C2SStream

log = logging.getLogger("imhost.xmpp.router")

IqHandler = Callable[[StanzaEvent], "Element | Awaitable[Element | None] | None"]
StreamFeature = Callable[["C2SStream"], "Element | None"]
NonzaHandler = Callable[["C2SStream", Element], "Awaitable[None] | None"]
PreauthIqHandler = Callable[["C2SStream", Element], "Element | Awaitable[Element | None] | None"]
ComponentHandler = Callable[["C2SStream", Element, JID], "Awaitable[None] | None"]
"""Takes every stanza a client of the host sends to a component's domain (``from`` stamped,
``to`` prepared): ``handler(session, stanza, to)``."""


@dataclass(slots=True)
class Stores:
    """The storage ports, as modules see them."""

    auth: AccountAuth
    roster: RosterStore
    offline: OfflineStore
    private: PrivateStore
    vcard: VCardStore
    blocklist: BlockListStore
    muc: MucStore
    archive: ArchiveStore


class TokenBucket:
    """Per-account message shaper (tokens = messages; refill ``rate``/s up to ``burst``)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token; return 0 if available, else the seconds of debt (negative tokens)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        tokens -= 1.0
        self.tokens = tokens
        return 0.0 if tokens >= 0 else -tokens / self.rate


def _session_iq(event: StanzaEvent) -> Element:
    iq = event.stanza
    return Element("iq", NS_CLIENT, {"type": "result", "id": iq.attrs.get("id", "")})


class HostState:
    """A virtual host at runtime: its settings, sessions, hooks, handlers and counters."""

    def __init__(self, vhost: VirtualHost, counters: HostCounters) -> None:
        self.vhost = vhost
        self.domain = vhost.domain
        self.counters = counters
        self.sessions: dict[str, dict[str, C2SStream]] = {}
        """localpart -> resource -> session."""
        self.connections = 0
        self.hooks: dict[Hook, HookChain[Any]] = {h: HookChain() for h in Hook}
        # hot-path aliases (an Enum's hash is Python code; these are plain attributes)
        self.message_out_chain = self.hooks[Hook.MESSAGE_OUT]
        self.message_to_full_chain = self.hooks[Hook.MESSAGE_TO_FULL]
        self.message_to_bare_chain = self.hooks[Hook.MESSAGE_TO_BARE]
        self.deliver_chain = self.hooks[Hook.DELIVER]
        self.iq_handlers: dict[tuple[str, IqType], list[tuple[IqTarget, IqHandler]]] = {}
        self.host_features: set[str] = set()
        self.account_features: set[str] = set()
        self.identities: list[tuple[str, str, str]] = [("server", "im", "imhost")]
        self.stream_features: list[StreamFeature] = []
        self.preauth_features: list[StreamFeature] = []
        self.buckets: dict[str, TokenBucket] = {}
        self.modules: list[Module] = []
        """The host's module instances, in load order (see ``XmppServer(modules=...)``)."""
        self.nonza_handlers: dict[str, NonzaHandler] = {}
        """Top-level elements of a bound stream in another namespace (e.g. XEP-0352)."""
        self.preauth_iq_handlers: dict[str, PreauthIqHandler] = {}
        """iq before authentication, by payload namespace (e.g. XEP-0077 registration)."""
        self.components: dict[str, ComponentHandler] = {}
        """Service domains of this host served by a module (``conference.<domain>``, XEP-0045):
        what the host's clients send there goes to the handler."""
        self.items: list[tuple[str, str]] = []
        """disco#items of the host (XEP-0030 §4): (jid, name) of its services."""
        # RFC 3921 §3 session establishment: a no-op kept for old clients (RFC 6121 App. E).
        self.iq_handlers[(NS_SESSION, IqType.SET)] = [(IqTarget.BOTH, _session_iq)]

    @property
    def active(self) -> bool:
        return self.vhost.active

    def all_sessions(self) -> list[C2SStream]:
        return [s for by_res in self.sessions.values() for s in by_res.values()]

    def iq_handler(self, ns: str, type_: IqType, target: IqTarget) -> IqHandler | None:
        for t, handler in self.iq_handlers.get((ns, type_), ()):
            if t & target:
                return handler
        return None


class Router:
    """Routes stanzas between local sessions of the virtual hosts."""

    def __init__(self, stores: Stores, meter: Meter, clock: Clock) -> None:
        self.stores = stores
        self.meter = meter
        self.clock = clock
        self.hosts: dict[str, HostState] = {}
        self.resumable: dict[str, C2SStream] = {}
        """XEP-0198 stream id -> session that may be resumed."""
        self.pending_iq: dict[str, asyncio.Future[Element]] = {}
        self._dirty: list[C2SStream] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.module_factory: Callable[[HostState], None] | None = None

    # -- hosts ------------------------------------------------------------------------------

    def put_host(self, vhost: VirtualHost) -> HostState:
        state = self.hosts.get(vhost.domain)
        if state is None:
            state = HostState(vhost, self.meter.counters(vhost.domain))
            self.hosts[vhost.domain] = state
            if self.module_factory is not None:
                self.module_factory(state)
        else:
            state.vhost = vhost
            state.buckets.clear()
        return state

    def drop_host(self, domain: str) -> HostState | None:
        return self.hosts.pop(domain, None)

    # -- output batching --------------------------------------------------------------------

    def mark_dirty(self, stream: C2SStream) -> None:
        """Queue a stream's output for one write at the end of this loop iteration."""
        self._dirty.append(stream)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.flush_pending()

    def flush_pending(self) -> None:
        """Write every queued output now (a stream calls this after each read it parsed).

        Waiting for the end of the loop iteration would merge writes to one recipient from
        several senders' reads, but that is rare (one message per read is the usual shape)
        and costs latency: after a busy iteration (or after the process was descheduled on a
        shared core) the first messages parsed would wait for the last. Stanzas produced by
        one read are still written with one call per recipient.
        """
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for stream in dirty:
            stream.flush()

    # -- sessions ---------------------------------------------------------------------------

    def sessions_of(self, domain: str, localpart: str) -> list[C2SStream]:
        host = self.hosts.get(domain)
        if host is None:
            return []
        return list(host.sessions.get(localpart, {}).values())

    def session_of(self, jid: JID) -> C2SStream | None:
        host = self.hosts.get(jid.domain)
        if host is None:
            return None
        return host.sessions.get(jid.local, {}).get(jid.resource)

    # -- entry point from a client ----------------------------------------------------------

    def from_client(self, stream: C2SStream, el: Element) -> Awaitable[None] | None:
        """Process one stanza a bound client sent (RFC 6120 §10). ``from`` is stamped."""
        name = el.name
        host = stream.host_state
        assert host is not None
        attrs = el.attrs
        # RFC 6120 §8.1.2.1: the server stamps the full JID of the sender.
        given = attrs.get("from")
        if given is not None and given != stream.jid_str and given != stream.bare_str:
            try:
                ok = parse_jid(given) in (stream.jid, stream.bare_jid)
            except ValueError:
                ok = False
            if not ok:
                from .errors import StreamError, StreamErrorCondition

                raise StreamError(StreamErrorCondition.INVALID_FROM, "from is not your JID")
        attrs["from"] = stream.jid_str
        to_str = attrs.get("to")
        to: JID | None
        if to_str is None:
            to = None
        else:
            try:
                to = parse_jid(to_str)
            except ValueError as exc:
                self.reply_error(stream, el, StanzaErrorCondition.JID_MALFORMED, str(exc))
                return None
            attrs["to"] = str(to)
        counters = host.counters
        if name == "message":
            counters.stanzas_message += 1
            if el.find("body") is not None:
                counters.messages += 1
            if to is not None and host.components and to.domain in host.components:
                if not self._rate_limit(stream, host, el):
                    return None
                return host.components[to.domain](stream, el, to)
            return self._message_from_client(stream, host, el, to)
        if name == "presence":
            counters.stanzas_presence += 1
            if to is not None and host.components and to.domain in host.components:
                return host.components[to.domain](stream, el, to)
            return self._presence_from_client(stream, host, el, to)
        if name == "iq":
            counters.stanzas_iq += 1
            if to is not None and host.components and to.domain in host.components:
                return self._iq_to_component(stream, host, el, to)
            return self._iq_from_client(stream, host, el, to)
        # RFC 6120 §4.9.3.24: unknown top-level element in the content namespace.
        from .errors import StreamError, StreamErrorCondition

        raise StreamError(StreamErrorCondition.UNSUPPORTED_STANZA_TYPE, name)

    # -- messages ---------------------------------------------------------------------------

    def _rate_limit(self, stream: C2SStream, host: HostState, el: Element) -> bool:
        """Shape then refuse (like ejabberd shapers). Return False if the message is refused."""
        limits = host.vhost.limits
        rate = limits.message_rate
        if rate is None:
            return True
        now = self.clock.monotonic()
        bucket = host.buckets.get(stream.localpart)
        if bucket is None:
            bucket = host.buckets[stream.localpart] = TokenBucket(rate, limits.message_burst, now)
        debt = bucket.take(now)
        if debt <= 0:
            return True
        if debt * rate > limits.message_burst:
            # Far beyond the burst even after shaping: refuse this one (and give it back).
            bucket.tokens += 1.0
            self.reply_error(
                stream,
                el,
                StanzaErrorCondition.POLICY_VIOLATION,
                "you are sending messages too fast; slow down",
                type_="wait",
            )
            return False
        stream.throttle(debt)
        return True

    def _message_from_client(
        self, stream: C2SStream, host: HostState, el: Element, to: JID | None
    ) -> Awaitable[None] | None:
        if not self._rate_limit(stream, host, el):
            return None
        chain = host.message_out_chain
        if chain.handlers:
            event = StanzaEvent(el, stream, host.domain, to, stream.jid)
            result = chain.fire(event)
            if result is True:
                return None
            if result is not False:
                return self._after(result, lambda: self.route_message(host, el, to, stream))
        return self.route_message(host, el, to, stream)

    def route_message(
        self, host: HostState, el: Element, to: JID | None, origin: C2SStream | None = None
    ) -> Awaitable[None] | None:
        """Route a message whose ``from`` is set (RFC 6121 §8)."""
        if to is None:
            # RFC 6120 §10.3.1 / RFC 6121 §8.1.1: no 'to' means the sender's bare JID.
            assert origin is not None and origin.bare_jid is not None
            to = origin.bare_jid
        target = self._target_host(host, el, to)
        if target is None:
            return None
        if not to.local:
            chain = target.hooks[Hook.MESSAGE_TO_HOST]
            event = StanzaEvent(el, origin, target.domain, to, None)
            return self._fire_then(
                chain,
                event,
                lambda: self.bounce(el, StanzaErrorCondition.SERVICE_UNAVAILABLE),
            )
        if to.resource:
            chain = target.message_to_full_chain
            if chain.handlers:
                event = StanzaEvent(el, origin, target.domain, to, None)
                return self._fire_then(chain, event, lambda: self._message_to_full(target, el, to))
            return self._message_to_full(target, el, to)
        chain = target.message_to_bare_chain
        if chain.handlers:
            event = StanzaEvent(el, origin, target.domain, to, None)
            return self._fire_then(chain, event, lambda: self._message_to_bare(target, el, to))
        return self._message_to_bare(target, el, to)

    def _message_to_full(self, host: HostState, el: Element, to: JID) -> Awaitable[None] | None:
        """RFC 6121 §8.5.3."""
        session = host.sessions.get(to.local, {}).get(to.resource)
        if session is not None:
            session.deliver(el)
            return None
        mtype = el.attrs.get("type", "normal")
        if mtype in ("normal", "chat"):
            return self._message_to_bare(host, el, to.to_bare())
        if mtype == "groupchat":
            self.bounce(el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
        return None  # headline, error: silently ignored (§8.5.3.2.1)

    def _message_to_bare(self, host: HostState, el: Element, to: JID) -> Awaitable[None] | None:
        """RFC 6121 §8.5.2: highest non-negative priority for chat/normal, all for headline."""
        resources = host.sessions.get(to.local)
        mtype = el.attrs.get("type", "normal")
        if mtype == "error":
            # §8.5.2.1.1: an error message to a bare JID is silently dropped.
            return None
        if mtype == "groupchat":
            self.bounce(el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return None
        if resources:
            if mtype == "headline":
                targets = [s for s in resources.values() if s.available and s.priority >= 0]
            else:
                best = -1
                targets = []
                for s in resources.values():
                    if not s.available:
                        continue
                    p = s.priority
                    if p > best:
                        best = p
                        targets = [s]
                    elif p == best and p >= 0:
                        targets.append(s)
            if targets:
                if len(targets) == 1:
                    targets[0].deliver(el)
                else:
                    data = None
                    for s in targets:
                        data = s.deliver(el, data)
                return None
        if mtype == "headline":
            return None
        return self._store_offline(host, el, to)

    async def _store_offline(self, host: HostState, el: Element, to: JID) -> None:
        """XEP-0160: store chat/normal messages for an account with no available resource."""
        stores = self.stores
        if not await stores.auth.account_exists(host.domain, to.local):
            self.bounce(el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return
        if el.find("body") is None:
            # Chat states and receipts without a body are not worth storing.
            return
        chain = host.hooks[Hook.OFFLINE_STORE]
        if chain.handlers:
            handled = chain.fire(StanzaEvent(el, None, host.domain, to, None))
            if not isinstance(handled, bool):
                handled = await handled
            if handled:
                return
        stamp = self.clock.now()
        limits = host.vhost.limits
        try:
            ok = await stores.offline.push(
                host.domain,
                to.local,
                el.serialize(NS_CLIENT),
                stamp,
                limits.max_offline_messages,
                limits.max_storage_bytes,
            )
        except StorageFull as full:
            # XEP-0160 §2 (3): what cannot be stored is refused with service-unavailable.
            self.bounce(
                el, StanzaErrorCondition.SERVICE_UNAVAILABLE, f"{full}; the message was not stored"
            )
            return
        if not ok:
            self.bounce(
                el,
                StanzaErrorCondition.SERVICE_UNAVAILABLE,
                "the recipient's offline storage is full",
            )

    async def deliver_offline(self, stream: C2SStream) -> None:
        """Send stored messages with a XEP-0203 delay stamp (on first available presence)."""
        host = stream.host_state
        if host is None:
            return
        messages = await self.stores.offline.pop_all(host.domain, stream.localpart)
        from .parser import parse_fragment

        for msg in messages:
            try:
                el = parse_fragment(msg.stanza)
            except ValueError:
                log.warning("dropping unparsable offline message for %s", stream.bare_str)
                continue
            delay = el.sub(
                "delay",
                NS_DELAY,
                {
                    "from": host.domain,
                    "stamp": msg.stored_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            )
            delay.children.append("Offline Storage")
            if stream.closed:
                # put the rest back
                await self.stores.offline.push(
                    host.domain,
                    stream.localpart,
                    msg.stanza,
                    msg.stored_at,
                    host.vhost.limits.max_offline_messages,
                )
                continue
            stream.deliver(el)

    # -- presence ---------------------------------------------------------------------------

    def _presence_from_client(
        self, stream: C2SStream, host: HostState, el: Element, to: JID | None
    ) -> Awaitable[None] | None:
        ptype = el.attrs.get("type")
        first_available = False
        if to is None:
            if ptype is None:
                first_available = not stream.available
                stream.set_available(el)
            elif ptype == "unavailable":
                stream.set_unavailable(el)
        chain = host.hooks[Hook.PRESENCE_OUT]
        result: bool | Awaitable[bool] = False
        if chain.handlers:
            result = chain.fire(StanzaEvent(el, stream, host.domain, to, stream.jid))

        def then() -> Awaitable[None] | None:
            follow = self.route_presence(host, el, to, stream) if to is not None else None
            if first_available:
                return self._chain_awaitables(follow, self._session_available(stream))
            return follow

        if result is True:
            return self._session_available(stream) if first_available else None
        if result is False:
            return then()
        return self._after(result, then)

    async def _session_available(self, stream: C2SStream) -> None:
        host = stream.host_state
        if host is None:
            return
        chain = host.hooks[Hook.SESSION_AVAILABLE]
        if chain.handlers:
            r = chain.fire(SessionEvent(stream, host.domain))
            if not isinstance(r, bool):
                await r
        await self.deliver_offline(stream)

    def route_presence(
        self, host: HostState, el: Element, to: JID, origin: C2SStream | None = None
    ) -> Awaitable[None] | None:
        """Route a presence with ``from`` set to a local address (RFC 6121 §8.5)."""
        target = self._target_host(host, el, to)
        if target is None:
            return None
        if not to.local:
            chain = target.hooks[Hook.PRESENCE_TO_HOST]
            return self._fire_then(
                chain, StanzaEvent(el, origin, target.domain, to, None), lambda: None
            )
        if to.resource:
            chain = target.hooks[Hook.PRESENCE_TO_FULL]
            return self._fire_then(
                chain,
                StanzaEvent(el, origin, target.domain, to, None),
                lambda: self._presence_to_full(target, el, to),
            )
        chain = target.hooks[Hook.PRESENCE_TO_BARE]
        return self._fire_then(
            chain,
            StanzaEvent(el, origin, target.domain, to, None),
            lambda: self._presence_to_bare(target, el, to),
        )

    def _presence_to_full(self, host: HostState, el: Element, to: JID) -> None:
        ptype = el.attrs.get("type")
        if ptype in ("subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe"):
            self._presence_to_bare(host, el, to.to_bare())
            return
        session = host.sessions.get(to.local, {}).get(to.resource)
        if session is not None:
            session.deliver(el)

    def _presence_to_bare(self, host: HostState, el: Element, to: JID) -> None:
        ptype = el.attrs.get("type")
        if ptype in (None, "unavailable", "error"):
            data = None
            for s in host.sessions.get(to.local, {}).values():
                if s.available:
                    data = s.deliver(el, data)
        # Subscription types and probes are the presence module's (RFC 6121 §3, §4.3);
        # without it they are dropped.

    # -- iq ---------------------------------------------------------------------------------

    def _iq_from_client(
        self, stream: C2SStream, host: HostState, el: Element, to: JID | None
    ) -> Awaitable[None] | None:
        iq_type = el.attrs.get("type")
        if iq_type not in ("get", "set", "result", "error") or (el.attrs.get("id") is None):
            self.reply_error(stream, el, StanzaErrorCondition.BAD_REQUEST, "bad iq type or id")
            return None
        if to is not None:
            target = self._target_host(host, el, to)
            if target is None:
                return None
        else:
            target = host
        if iq_type in ("result", "error"):
            if to is None or not to.local:
                fut = self.pending_iq.pop(el.attrs.get("id", ""), None)
                if fut is not None and not fut.done():
                    fut.set_result(el)
                return None
            if to.resource:
                session = target.sessions.get(to.local, {}).get(to.resource)
                if session is not None:
                    session.deliver(el)
            return None
        # get / set (RFC 6120 §8.2.3: exactly one payload element)
        payload = None
        count = 0
        for child in el.children:
            if isinstance(child, Element):
                payload = child
                count += 1
        if payload is None or count != 1:
            self.reply_error(
                stream, el, StanzaErrorCondition.BAD_REQUEST, "an iq needs one payload"
            )
            return None
        if to is not None and to.resource:
            session = target.sessions.get(to.local, {}).get(to.resource)
            if session is None:
                self.reply_error(stream, el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            else:
                session.deliver(el)
            return None
        kind = IqTarget.HOST if (to is not None and not to.local) else IqTarget.ACCOUNT
        handler = target.iq_handler(payload.ns, IqType(iq_type), kind)
        if handler is None:
            self.reply_error(stream, el, StanzaErrorCondition.SERVICE_UNAVAILABLE)
            return None
        event = StanzaEvent(el, stream, target.domain, to or stream.bare_jid, stream.jid)
        try:
            result = handler(event)
        except StanzaError as exc:
            self.reply_error(stream, el, exc.condition, exc.text, exc.type)
            return None
        if isinstance(result, Element) or result is None:
            if result is not None:
                stream.deliver(result)
            return None
        return self._iq_async(stream, el, result)

    def _iq_to_component(
        self, stream: C2SStream, host: HostState, el: Element, to: JID
    ) -> Awaitable[None] | None:
        """An iq to a component: the RFC 6120 §8.2.3 checks, then its handler."""
        iq_type = el.attrs.get("type")
        if iq_type not in ("get", "set", "result", "error") or (el.attrs.get("id") is None):
            self.reply_error(stream, el, StanzaErrorCondition.BAD_REQUEST, "bad iq type or id")
            return None
        if iq_type in ("get", "set") and sum(isinstance(c, Element) for c in el.children) != 1:
            self.reply_error(
                stream, el, StanzaErrorCondition.BAD_REQUEST, "an iq needs one payload"
            )
            return None
        return host.components[to.domain](stream, el, to)

    async def _iq_async(
        self, stream: C2SStream, el: Element, pending: Awaitable[Element | None]
    ) -> None:
        try:
            result = await pending
        except StanzaError as exc:
            self.reply_error(stream, el, exc.condition, exc.text, exc.type)
            return
        except Exception:
            log.exception("iq handler failed")
            self.reply_error(stream, el, StanzaErrorCondition.INTERNAL_SERVER_ERROR)
            return
        if result is not None:
            stream.deliver(result)

    async def request_iq(self, stream: C2SStream, iq: Element, timeout: float = 30.0) -> Element:
        """Send an iq get/set from the server to a client and await its answer."""
        iq_id = iq.attrs.get("id") or secrets.token_hex(8)
        iq.attrs["id"] = iq_id
        fut: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self.pending_iq[iq_id] = fut
        stream.deliver(iq)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending_iq.pop(iq_id, None)

    # -- helpers ----------------------------------------------------------------------------

    def _target_host(self, host: HostState, el: Element, to: JID) -> HostState | None:
        """The host a stanza goes to, or None after answering remote-server-not-found.

        Tenants are isolated (no federation yet): a domain that is not this host is remote,
        even if another tenant hosts it here, unless both hosts allow federation.
        """
        if to.domain == host.domain:
            return host
        other = self.hosts.get(to.domain)
        if (
            other is not None
            and other.active
            and host.vhost.limits.federation_allowed
            and other.vhost.limits.federation_allowed
        ):
            return other
        ptype = el.attrs.get("type")
        if el.name == "presence" and ptype in (None, "unavailable", "error"):
            return None
        if ptype in ("error", "result"):
            return None
        self.bounce(el, StanzaErrorCondition.REMOTE_SERVER_NOT_FOUND)
        return None

    def bounce(self, el: Element, condition: StanzaErrorCondition, text: str = "") -> None:
        """Answer ``el`` with an error to its sender (never bounce an error: RFC 6120 §8.3.1)."""
        if el.attrs.get("type") == "error":
            return
        sender = el.attrs.get("from")
        if not sender:
            return
        try:
            jid = parse_jid(sender)
        except ValueError:
            return
        reply = make_error_reply(el, condition, text)
        if jid.resource:
            session = self.session_of(jid)
            if session is not None:
                session.deliver(reply)

    def reply_error(
        self,
        stream: C2SStream,
        el: Element,
        condition: StanzaErrorCondition,
        text: str = "",
        type_: str | None = None,
    ) -> None:
        if el.attrs.get("type") == "error":
            return
        reply = make_error_reply(el, condition, text, type_)
        if "from" not in el.attrs or el.attrs.get("to") is None:
            reply.attrs.pop("from", None)
        reply.attrs["to"] = stream.jid_str or ""
        if not reply.attrs["to"]:
            del reply.attrs["to"]
        stream.deliver(reply)

    def _fire_then(
        self,
        chain: HookChain[Any],
        event: StanzaEvent,
        default: Callable[[], Awaitable[None] | None],
    ) -> Awaitable[None] | None:
        if not chain.handlers:
            return default()
        result = chain.fire(event)
        if result is True:
            return None
        if result is False:
            return default()
        return self._after(result, default)

    async def _after(
        self, pending: Awaitable[bool], then: Callable[[], Awaitable[None] | None]
    ) -> None:
        if await pending:
            return
        follow = then()
        if follow is not None:
            await follow

    @staticmethod
    async def _chain_awaitables(*items: Awaitable[None] | None) -> None:
        for item in items:
            if item is not None:
                await item

    def fire_session(self, hook: Hook, stream: C2SStream) -> Awaitable[bool] | bool:
        host = stream.host_state
        if host is None:
            return False
        chain = host.hooks[hook]
        if not chain.handlers:
            return False
        return chain.fire(SessionEvent(stream, host.domain))

    def add_hook(self, host: HostState, hook: Hook, handler: Handler[Any], priority: int) -> None:
        host.hooks[hook].add(handler, priority)

    def broadcast_domains(self) -> Sequence[str]:
        return list(self.hosts)
