"""Stream negotiation (RFC 6120 §4.3): the stream's states and the steps it drives.

The stream (:class:`~.stream.C2SStream`) owns the transport, the parser, the stream header,
STARTTLS and the output. Each later step of negotiation is its own object, as Prosody keeps
them in modules (mod_saslauth, mod_bind, mod_smacks):

- :class:`~.saslauth.SaslAuth`: SASL authentication (RFC 6120 §6);
- :class:`~.binding.ResourceBinding`: resource binding (RFC 6120 §7) and the RFC 3921
  session no-op;
- :class:`~.stream_management.StreamManagement`: XEP-0198 acks, resumption and hibernation.

The stream asks each step, in that order, what it offers in ``<stream:features/>`` for the
stream's current state (:meth:`NegotiationStep.offer`), and hands each element that arrives
before a resource is bound to the first step that takes it
(:meth:`NegotiationStep.negotiate`). What nobody takes is a stream error (``not-authorized``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable
from typing import Any, Protocol

from .xml import Element


class State(enum.IntEnum):
    """Where a stream is: waiting for the header, negotiating, bound (a session), kept for
    XEP-0198 resumption after its connection was lost, or closed."""

    WAIT_HEADER = 0
    NEGOTIATING = 1
    BOUND = 2
    HIBERNATING = 3
    CLOSED = 4


class NegotiationStep(Protocol):
    """One negotiation step of a stream (SASL, resource binding, stream management)."""

    def offer(self) -> str:
        """The children of ``<stream:features/>`` this step offers now, serialised in the
        ``jabber:client`` stream (``""`` when it offers nothing in the current state)."""
        ...

    def negotiate(self, el: Element) -> bool:
        """Handle ``el``, received after the stream header and before a resource is bound,
        if it belongs to this step: return True. Return False to let the next step look.
        May raise :class:`~.errors.StreamError`."""
        ...


_TASKS: set[asyncio.Future[Any]] = set()


def spawn(aw: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run an awaitable in the background, keeping a reference until it is done."""
    fut = asyncio.ensure_future(aw)
    _TASKS.add(fut)
    fut.add_done_callback(_TASKS.discard)
    return fut
