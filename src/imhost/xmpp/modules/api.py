"""The module API: how a feature (one XEP, usually) plugs into a virtual host.

A module is a class; one instance is created per virtual host when the host is loaded::

    class PingModule(Module):
        \"\"\"XEP-0199: answer pings to the server.\"\"\"

        name = "ping"

        def load(self) -> None:
            self.ctx.add_feature("urn:xmpp:ping")
            self.ctx.iq_handler("urn:xmpp:ping", IqType.GET, self.on_ping, IqTarget.BOTH)

        def on_ping(self, event: StanzaEvent) -> Element:
            return result_of(event.stanza)

See ``README.md`` in this folder for the whole contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from imhost.kit.clock import Clock
from imhost.kit.jid import JID

from ..core.errors import StanzaError, StanzaErrorCondition, make_error_reply
from ..core.hooks import (
    Handler,
    Hook,
    IqTarget,
    IqType,
    SessionEvent,
    SessionKey,
    StanzaEvent,
)
from ..core.router import (
    ComponentHandler,
    IqHandler,
    NonzaHandler,
    PreauthIqHandler,
    Stores,
    StreamFeature,
)
from ..core.xml import NS_CLIENT, Element
from ..ports import ClientVersionLog, VirtualHost

if TYPE_CHECKING:
    from ..core.router import HostState, Router
    from ..core.stream import C2SStream

__all__ = [
    "NS_CLIENT",
    "C2SStream",
    "Element",
    "Hook",
    "IqTarget",
    "IqType",
    "Module",
    "ModuleContext",
    "SessionEvent",
    "SessionKey",
    "StanzaError",
    "StanzaErrorCondition",
    "StanzaEvent",
    "error_reply",
    "result_of",
]


def result_of(iq: Element) -> Element:
    """An empty ``type='result'`` reply to an iq get/set (RFC 6120 §8.2.3); append payload."""
    attrs = {"type": "result", "id": iq.attrs.get("id", "")}
    if "from" in iq.attrs:
        attrs["to"] = iq.attrs["from"]
    if "to" in iq.attrs:
        attrs["from"] = iq.attrs["to"]
    return Element("iq", NS_CLIENT, attrs)


def error_reply(stanza: Element, condition: StanzaErrorCondition, text: str = "") -> Element:
    """The error reply to a stanza (RFC 6120 §8.3)."""
    return make_error_reply(stanza, condition, text)


M = TypeVar("M", bound="Module")


class ModuleContext:
    """What a module may touch: one host's hooks, handlers, features, sessions, stores and
    sibling modules. Everything a module can do is a method here (no optional capabilities
    to probe for)."""

    def __init__(
        self,
        router: Router,
        host: HostState,
        clock: Clock,
        client_versions: ClientVersionLog | None = None,
    ) -> None:
        self._router = router
        self._host = host
        self.clock = clock
        self.stores: Stores = router.stores
        self._client_versions = client_versions
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- identity ---------------------------------------------------------------------------

    @property
    def domain(self) -> str:
        return self._host.domain

    @property
    def host(self) -> VirtualHost:
        """The host's current settings and limits (changes at runtime)."""
        return self._host.vhost

    # -- registration -----------------------------------------------------------------------

    def hook(self, hook: Hook, handler: Handler[Any], priority: int = 0) -> None:
        """Attach ``handler`` to ``hook`` (higher priority runs first)."""
        self._host.hooks[hook].add(handler, priority)

    def unhook(self, hook: Hook, handler: Handler[Any]) -> None:
        self._host.hooks[hook].remove(handler)

    def iq_handler(
        self, ns: str, type_: IqType, handler: IqHandler, target: IqTarget = IqTarget.HOST
    ) -> None:
        """Handle iq ``type_`` whose payload is in namespace ``ns`` (RFC 6120 §8.2.3).

        The handler returns the reply Element (usually ``result_of(event.stanza)`` plus
        payload), or None if it sent the reply itself, or raises :class:`StanzaError`. It may
        be ``async``. ``event.to`` is the addressed JID (the sender's bare JID when the iq had
        no ``to``); ``event.session`` is the sender.
        """
        self._host.iq_handlers.setdefault((ns, type_), []).append((target, handler))

    def nonza_handler(self, ns: str, handler: NonzaHandler) -> None:
        """Handle top-level elements in namespace ``ns`` that a bound client sends and that are
        not stanzas (e.g. XEP-0352 ``<active/>``/``<inactive/>``): ``handler(session, el)``.
        Without a handler such an element is an ``unsupported-stanza-type`` stream error."""
        self._host.nonza_handlers[ns] = handler

    def preauth_iq_handler(self, ns: str, handler: PreauthIqHandler) -> None:
        """Handle an iq get/set with a payload in ``ns`` sent before authentication (XEP-0077
        §3.1 registration). ``handler(session, iq)`` returns the reply (or raises
        :class:`StanzaError`); it may be async. Only offered where SASL is (i.e. after
        STARTTLS when encryption is required); any other iq before authentication closes
        the stream with ``not-authorized``."""
        self._host.preauth_iq_handlers[ns] = handler

    def add_feature(self, var: str, target: IqTarget = IqTarget.HOST) -> None:
        """Advertise a disco#info feature on the host and/or on accounts (XEP-0030)."""
        if target & IqTarget.HOST:
            self._host.host_features.add(var)
        if target & IqTarget.ACCOUNT:
            self._host.account_features.add(var)

    def add_identity(self, category: str, type_: str, name: str = "") -> None:
        self._host.identities.append((category, type_, name))

    def add_stream_feature(self, factory: StreamFeature, *, before_auth: bool = False) -> None:
        """Add an element to ``<stream:features/>`` (after auth by default, e.g. CSI, rosterver;
        ``before_auth=True`` for e.g. XEP-0077 ``<register/>``). Return None to omit it."""
        (self._host.preauth_features if before_auth else self._host.stream_features).append(factory)

    def add_component(self, domain: str, handler: ComponentHandler) -> None:
        """Serve a service domain of this host (e.g. ``conference.<domain>``, XEP-0045): every
        stanza the host's clients send to ``domain`` or to an address in it goes to
        ``handler(session, stanza, to)`` (``from`` stamped, ``to`` prepared; messages are
        rate limited and counted as usual; an iq get/set has exactly one payload)."""
        self._host.components[domain] = handler

    def remove_component(self, domain: str) -> None:
        self._host.components.pop(domain, None)

    def add_item(self, jid: str, name: str = "") -> None:
        """List a service in the host's disco#items (XEP-0030 §4)."""
        if (jid, name) not in self._host.items:
            self._host.items.append((jid, name))

    def remove_item(self, jid: str) -> None:
        self._host.items[:] = [i for i in self._host.items if i[0] != jid]

    @property
    def items(self) -> list[tuple[str, str]]:
        """The host's disco#items: (jid, name)."""
        return list(self._host.items)

    def count_room_message(self, deliveries: int) -> None:
        """Meter one groupchat message a room accepted and the copies it sent to occupants
        (``room_messages`` and ``room_deliveries``)."""
        counters = self._host.counters
        counters.room_messages += 1
        counters.room_deliveries += deliveries

    # -- sibling modules --------------------------------------------------------------------

    def module(self, cls: type[M]) -> M | None:
        """The instance of module class ``cls`` loaded on this host, if it is (e.g. presence
        reads the roster module's cache). A module that needs another declares it in
        :attr:`Module.depends`, and the server refuses a module list without it."""
        for module in self._host.modules:
            if isinstance(module, cls):
                return module
        return None

    # -- what the host advertises (for the disco module) ------------------------------------

    @property
    def host_features(self) -> frozenset[str]:
        return frozenset(self._host.host_features)

    @property
    def account_features(self) -> frozenset[str]:
        return frozenset(self._host.account_features)

    @property
    def identities(self) -> list[tuple[str, str, str]]:
        return list(self._host.identities)

    @property
    def disco_generation(self) -> tuple[int, int]:
        """Changes when a host feature or an identity is added (they are only ever added):
        what the host advertises is the same while this is."""
        return (len(self._host.host_features), len(self._host.identities))

    # -- sessions ---------------------------------------------------------------------------

    def sessions(self, localpart: str) -> list[C2SStream]:
        """Bound sessions of an account on this host (including hibernating ones)."""
        return list(self._host.sessions.get(localpart, {}).values())

    def session(self, jid: JID) -> C2SStream | None:
        """The session of a full JID on this host, if bound."""
        if jid.domain != self._host.domain:
            return None
        return self._host.sessions.get(jid.local, {}).get(jid.resource)

    def online_accounts(self) -> list[str]:
        return list(self._host.sessions)

    # -- sending ----------------------------------------------------------------------------

    def route(self, stanza: Element) -> Awaitable[None] | None:
        """Route a stanza (``from`` and ``to`` set) as if it came from ``from``, through the
        usual hooks and rules (RFC 6121 §8). Returns an awaitable if routing went async."""
        from imhost.kit.jid import parse_jid

        to_attr = stanza.attrs.get("to")
        if not to_attr:
            raise ValueError("route() needs a 'to' address")
        to = parse_jid(to_attr)
        if stanza.name == "message":
            return self._router.route_message(self._host, stanza, to)
        if stanza.name == "presence":
            return self._router.route_presence(self._host, stanza, to)
        session = self.session(to) if to.resource else None
        if session is not None:
            session.deliver(stanza)
        return None

    def deliver(self, session: C2SStream, stanza: Element) -> None:
        """Write a stanza to one session (through the DELIVER hook)."""
        session.deliver(stanza)

    async def request(self, session: C2SStream, iq: Element, timeout: float = 30.0) -> Element:
        """Send an iq get/set from the server to a client and await the result or error."""
        iq.attrs.setdefault("from", self._host.domain)
        iq.attrs["to"] = session.jid_str
        return await self._router.request_iq(session, iq, timeout)

    # -- reporting to the control plane ------------------------------------------------------

    def report_client_version(self, session: C2SStream, software: str) -> None:
        """Note which client software ``session``'s account uses (XEP-0092, e.g.
        ``"Conversations 2.16 (Android 14)"``), kept on the account for support. Goes to the
        server's :class:`~imhost.xmpp.ports.ClientVersionLog`; nowhere if it has none."""
        sink = self._client_versions
        if sink is not None and session.localpart:
            sink.note_client_version(self._host.domain, session.localpart, software)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task owned by this module (cancelled when the host unloads)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class Module:
    """Base class of a host-scoped module. Subclasses set ``name`` and override :meth:`load`.

    ``depends`` lists the module classes this one uses through :meth:`ModuleContext.module`;
    they must come before it in the server's module list (checked when the server is made).
    """

    name: ClassVar[str] = "module"
    depends: ClassVar[tuple[type[Module], ...]] = ()

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx

    def load(self) -> None:
        """Register hooks, iq handlers and features. Called once per host."""

    def unload(self) -> None:
        """Called when the host is removed (hooks go with the host)."""

    async def stop(self) -> None:
        """Called once when the server stops gracefully, after the sessions were closed:
        write what is kept in memory for later (e.g. the archive's queue)."""
