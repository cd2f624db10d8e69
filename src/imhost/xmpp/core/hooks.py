"""Typed hooks with priorities, in the spirit of Prosody's events but without string names.

A handler receives a :class:`StanzaEvent` (or :class:`SessionEvent`) and returns:

- ``None`` or ``False``: not handled, the next handler (then the core default) runs;
- ``True``: handled, stop here (the core does nothing more with the stanza);
- an awaitable of one of those: the chain continues when it completes. The stream keeps
  processing the client's stanzas in order (RFC 6120 §10.1) while it waits, so keep hot-path
  handlers synchronous.

Handlers with a higher priority run first; equal priorities run in registration order.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from .xml import Element

if TYPE_CHECKING:
    from imhost.kit.jid import JID

    from .stream import C2SStream


class Hook(enum.Enum):
    """Where a handler can be attached. The docstring of each says when it fires."""

    MESSAGE_OUT = "message-out"
    """A client sent a message (``from`` already stamped), before routing. Carbons "sent"."""
    PRESENCE_OUT = "presence-out"
    """A client sent a presence. Undirected presence already updated the session's
    availability and priority; the presence module broadcasts it (RFC 6121 §4.2, §4.4)."""
    MESSAGE_TO_BARE = "message-to-bare"
    """A message to a local account's bare JID, before the RFC 6121 §8.5.2 default delivery."""
    MESSAGE_TO_FULL = "message-to-full"
    """A message to a local full JID, before the RFC 6121 §8.5.3 default delivery."""
    MESSAGE_TO_HOST = "message-to-host"
    """A message addressed to the virtual host itself (default: service-unavailable)."""
    PRESENCE_TO_BARE = "presence-to-bare"
    """A presence to a local bare JID (subscriptions, probes: RFC 6121 §3, §4.3).
    Default for available/unavailable: deliver to every available resource."""
    PRESENCE_TO_FULL = "presence-to-full"
    """A presence to a local full JID. Default: deliver if that resource is online."""
    PRESENCE_TO_HOST = "presence-to-host"
    """A presence addressed to the host (e.g. a probe of the server). Default: ignore."""
    DELIVER = "deliver"
    """A stanza is about to be written to ``event.session`` (the recipient). Return True to
    drop it (blocking) or to take it over (CSI queueing). Must be synchronous."""
    SESSION_BOUND = "session-bound"
    """A resource was bound (SessionEvent)."""
    SESSION_AVAILABLE = "session-available"
    """First available presence of a session (SessionEvent), after PRESENCE_OUT."""
    SESSION_CLOSED = "session-closed"
    """A bound session ended (SessionEvent; ``session.available`` tells whether it had sent
    available presence, so the presence module can broadcast unavailable)."""
    OFFLINE_STORE = "offline-store"
    """A message is about to be stored offline (return True to prevent it)."""


class IqType(enum.StrEnum):
    GET = "get"
    SET = "set"


class IqTarget(enum.Flag):
    """Which addresses an iq handler serves."""

    HOST = enum.auto()
    """``to`` is the virtual host domain."""
    ACCOUNT = enum.auto()
    """``to`` is absent (the sender's own account, RFC 6120 §10.3.3) or a local bare JID."""
    BOTH = HOST | ACCOUNT


@dataclass(slots=True)
class StanzaEvent:
    """A stanza passing through the router."""

    stanza: Element
    """The stanza; handlers may modify it (it is re-serialised on delivery)."""
    session: C2SStream | None
    """The sending client session (MESSAGE_OUT, PRESENCE_OUT, iq) or, for DELIVER, the
    recipient session. None when the server itself originated the stanza."""
    domain: str
    """The virtual host this event runs in."""
    to: JID | None = None
    """Prepared ``to`` address (for iq to the own account: the sender's bare JID)."""
    sender: JID | None = None
    """Prepared ``from`` address."""


@dataclass(slots=True)
class SessionEvent:
    session: C2SStream
    domain: str


E = TypeVar("E", StanzaEvent, SessionEvent)
HookResult = bool | None
Handler = Callable[[E], "HookResult | Awaitable[HookResult]"]


@dataclass(slots=True, order=True)
class _Entry(Generic[E]):
    sort_key: tuple[int, int]
    handler: Handler[E] = field(compare=False)


class HookChain(Generic[E]):
    """The ordered handlers of one hook on one host."""

    __slots__ = ("_entries", "_seq", "handlers")

    def __init__(self) -> None:
        self._entries: list[_Entry[E]] = []
        self._seq = 0
        self.handlers: tuple[Handler[E], ...] = ()

    def add(self, handler: Handler[E], priority: int = 0) -> None:
        self._seq += 1
        self._entries.append(_Entry((-priority, self._seq), handler))
        self._entries.sort()
        self.handlers = tuple(e.handler for e in self._entries)

    def remove(self, handler: Handler[E]) -> None:
        self._entries = [e for e in self._entries if e.handler is not handler]
        self.handlers = tuple(e.handler for e in self._entries)

    def fire(self, event: E) -> bool | Awaitable[bool]:
        """Run handlers in order; return True if one handled the event.

        Returns an awaitable only if a handler was asynchronous.
        """
        handlers = self.handlers
        for index, handler in enumerate(handlers):
            result = handler(event)
            if result is True:
                return True
            if result is None or result is False:
                continue
            if inspect.isawaitable(result):
                return self._continue(result, handlers[index + 1 :], event)
        return False

    async def _continue(
        self, pending: Awaitable[HookResult], rest: tuple[Handler[E], ...], event: E
    ) -> bool:
        if await pending:
            return True
        for handler in rest:
            result = handler(event)
            if inspect.isawaitable(result):
                result = await result
            if result:
                return True
        return False


K = TypeVar("K")


class SessionKey(Generic[K]):
    """A typed key for per-session module state: ``CARBONS = SessionKey[bool]("carbons", False)``
    then ``session.get(CARBONS)`` / ``session.set(CARBONS, True)``."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: K) -> None:
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        return f"SessionKey({self.name!r})"
