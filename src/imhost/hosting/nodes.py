"""The node registry: one live process per ``node_id``, and a new incarnation at every start.

The built-in engine's usage keys begin with ``<node_id>:<incarnation>`` (docs/xmpp.md,
"Metering"). Two processes with one ``node_id`` (two nodes left at the default ``xmpp1``)
would both write under that name, so a process takes a lease on its ``node_id`` in the
database when it starts (:func:`claim_node`) and refuses to start while another process holds
it (:class:`NodeIdInUse`, a message that says what to do). The lease is renewed every third
of its length (:func:`renew_node`) and given back at a clean stop (:func:`release_node`); a
node that crashed can start again once its lease has expired, or at once when the lease was
held by a process of this machine that no longer exists.

The claim is one compare-and-set ``UPDATE ... WHERE the lease has expired`` (the pattern of
:mod:`imhost.worker.scheduler`): of two processes racing, exactly one sees a row updated, on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import insert_if_absent, transaction
from imhost.hosting.models import EngineNode
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict


class NodeIdInUse(Conflict):
    """Another live process runs the engine under this ``node_id``."""


@dataclass(frozen=True, slots=True)
class NodeLease:
    node_id: str
    incarnation: str
    holder: str
    lease_seconds: int

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 3


def this_process() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_incarnation() -> str:
    """A random name for one run of a node (48 bits: two runs never share it)."""
    return secrets.token_hex(6)


_held: set[str] = set()
"""The node names this process holds now (a second engine in one process is refused too)."""
_held_lock = threading.Lock()


def _gone(node_id: str, holder: str, me: str) -> bool:
    """Whether ``holder`` was a process of this machine that no longer runs.

    The same ``host:pid`` as this process, for a name this process does not hold, is an
    earlier run: a container restarted keeps its host name and pid.
    """
    if holder == me:
        with _held_lock:
            return node_id not in _held
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's, say)
        return False
    return False


def claim_node(
    factory: sessionmaker[Session],
    clock: Clock,
    node_id: str,
    lease_seconds: int,
    *,
    holder: str | None = None,
) -> NodeLease:
    """Take ``node_id`` for this process with a new incarnation, or raise :class:`NodeIdInUse`."""
    me = holder or this_process()
    lease = NodeLease(node_id, new_incarnation(), me, lease_seconds)
    now = clock.now()
    values = {
        "incarnation": lease.incarnation,
        "holder": me,
        "started_at": now,
        "heartbeat_at": now,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
    }
    if _take(factory, node_id, values, now, me):
        with _held_lock:
            _held.add(node_id)
        return lease
    with factory() as session:
        current = session.get(EngineNode, node_id)
        holder = current.holder if current else "?"
        expires = current.lease_expires_at if current else now
    raise NodeIdInUse(_refusal(node_id, holder, expires, now))


def _take(
    factory: sessionmaker[Session], node_id: str, values: dict[str, object], now: datetime, me: str
) -> bool:
    """Insert the node, or take it over if its lease is free; whether this process has it."""
    with transaction(factory) as session:
        if insert_if_absent(session, EngineNode(node_id=node_id, **values)):
            return True
        # a known node: take it over if its lease is free
        current = session.scalars(select(EngineNode).where(EngineNode.node_id == node_id)).one()
        if not (current.lease_expires_at <= now or _gone(node_id, current.holder, me)):
            return False
        taken = session.execute(
            update(EngineNode)
            .where(EngineNode.node_id == node_id, EngineNode.incarnation == current.incarnation)
            .values(**values)
        )
        return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


def _refusal(node_id: str, holder: str, expires: datetime, now: datetime) -> str:
    wait = max(int((expires - now).total_seconds()) + 1, 1)
    return (
        f"another process ({holder}) is running the XMPP engine as node {node_id!r}. "
        "Every XMPP node needs its own name: set IMHOST_XMPP__NODE_ID (for example xmpp2) "
        f"on this one. If that process has stopped, start again in {wait} s, when its "
        "claim on the name expires."
    )


def renew_node(factory: sessionmaker[Session], clock: Clock, lease: NodeLease) -> bool:
    """Extend the lease; False when this process no longer holds it (it was taken over after
    it expired: this process was stopped or cut off from the database for too long)."""
    now = clock.now()
    with transaction(factory) as session:
        result = session.execute(
            update(EngineNode)
            .where(EngineNode.node_id == lease.node_id, EngineNode.incarnation == lease.incarnation)
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease.lease_seconds))
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release_node(factory: sessionmaker[Session], clock: Clock, lease: NodeLease) -> None:
    """Give the name back at a clean stop (the row stays, its lease ends now)."""
    with _held_lock:
        _held.discard(lease.node_id)
    now = clock.now()
    with transaction(factory) as session:
        session.execute(
            update(EngineNode)
            .where(EngineNode.node_id == lease.node_id, EngineNode.incarnation == lease.incarnation)
            .values(heartbeat_at=now, lease_expires_at=now)
        )
