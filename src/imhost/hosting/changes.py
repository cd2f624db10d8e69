"""Changes the running engine must learn at once, delivered only after the transaction commits.

Services never commit, so they cannot tell the engine themselves: a change told before the
commit could be rolled back (the engine would close sessions for nothing), and one told by
the caller is easily forgotten. Instead a service *stages* each change on its session
(:func:`stage`); an SQLAlchemy ``after_commit`` listener hands the staged changes to the
:class:`ChangeHub` of the session factory, and a rollback discards them.

The hub lives in the session factory's ``info`` (:func:`install_hub`), so every session made
by that factory (web requests, the worker, event handlers) reaches the same hub, and the
engine's :class:`~imhost.hosting.dataplane.directory.DbHostDirectory` subscribes to it.
Several nodes would carry these changes over Redis pub/sub instead (not built yet); a
process without the engine (the CLI) has no subscriber and the running server picks the
change up on its next directory refresh (``HOST_REFRESH_SECONDS`` in ``hosting/ports.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from imhost.xmpp.ports import VirtualHost

log = logging.getLogger(__name__)

HUB_KEY = "imhost.hosting.hub"
PENDING_KEY = "imhost.hosting.pending"


@dataclass(frozen=True, slots=True)
class HostChanged:
    """A service was created or changed (status, limits): its new view for the engine."""

    host: VirtualHost
    organization_id: str


@dataclass(frozen=True, slots=True)
class HostRemoved:
    domain: str


@dataclass(frozen=True, slots=True)
class AccountChanged:
    """An account's credentials or state changed.

    ``close_reason`` set: its sessions are closed with that text (disabled, deleted, password
    reset by an administrator); None: only cached credentials are dropped (e.g. enabled).
    """

    domain: str
    localpart: str
    close_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RoomDestroyed:
    """Staff destroyed a group chat room of a service (its stored row is gone)."""

    domain: str
    room: str
    reason: str


Change = HostChanged | HostRemoved | AccountChanged | RoomDestroyed
Subscriber = Callable[[Sequence[Change]], None]


class ChangeHub:
    """Fans committed changes out to subscribers (called from the committing thread)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def deliver(self, changes: Sequence[Change]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(changes)
            except Exception:  # one broken subscriber must not fail the others
                log.exception("delivering hosting changes failed")


def install_hub(factory: sessionmaker[Session]) -> ChangeHub:
    """The hub of ``factory``'s sessions (created on first call). Sessions made afterwards
    carry it in ``session.info``."""
    info: dict[str, Any] = factory.kw.setdefault("info", {})
    hub = info.get(HUB_KEY)
    if not isinstance(hub, ChangeHub):
        hub = ChangeHub()
        info[HUB_KEY] = hub
    return hub


def stage(session: Session, change: Change) -> None:
    """Deliver ``change`` to the engine once ``session``'s transaction commits."""
    pending: list[Change] = session.info.setdefault(PENDING_KEY, [])
    pending.append(change)


def staged(session: Session) -> list[Change]:
    """The changes staged so far (for tests and for callers without a hub)."""
    return list(session.info.get(PENDING_KEY, ()))


@event.listens_for(Session, "after_commit")
def _deliver_after_commit(session: Session) -> None:
    changes: list[Change] | None = session.info.pop(PENDING_KEY, None)
    hub = session.info.get(HUB_KEY)
    if changes and isinstance(hub, ChangeHub):
        hub.deliver(changes)


@event.listens_for(Session, "after_soft_rollback")
def _discard_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # Only the outermost transaction's rollback discards: a SAVEPOINT rolled back (one bad
    # row of a CSV import) leaves what the other rows staged.
    if previous_transaction.parent is None and not previous_transaction.nested:
        session.info.pop(PENDING_KEY, None)
