"""``HostDirectory`` (:mod:`imhost.xmpp.ports`): the hosted domains and their limits, from
memory.

Hosts are loaded at start, then changed by committed service and account changes through
:mod:`imhost.hosting.changes` (at once, after commit, from any thread), and re-read by
:meth:`DbHostDirectory.refresh` to pick up changes made by other processes such as the CLI.
A change also drops what other adapters cache about its host or account (the account cache
of :class:`~imhost.hosting.dataplane.auth.DbAccountAuth`, the byte counters of
:class:`~imhost.hosting.dataplane.storage.DbStorage`), and reaches the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from imhost.hosting import changes
from imhost.hosting import repository as repo
from imhost.hosting import service as hosting
from imhost.hosting.dataplane.hosts import HostCache, HostEntry
from imhost.hosting.dataplane.runner import DbRunner
from imhost.kit.clock import Clock
from imhost.xmpp.ports import HostListener, VirtualHost

log = logging.getLogger(__name__)

ACCOUNT_POLL_OVERLAP = timedelta(seconds=2)
"""Accounts changed this long before the last refresh are looked at again (commits in flight)."""


class AccountCache(Protocol):
    def forget_account(self, domain: str, localpart: str) -> None: ...

    def cached_accounts(self) -> dict[str, tuple[str, str]]:
        """Account id -> (domain, localpart) of every account cached."""
        ...

    def forget_host(self, domain: str) -> None: ...


class StoredBytes(Protocol):
    def forget(self, service_id: str) -> None: ...


class DbHostDirectory:
    """``HostDirectory`` on the database; fills ``cache`` (see the module docstring)."""

    def __init__(
        self,
        runner: DbRunner,
        factory: sessionmaker[Session],
        clock: Clock,
        cache: HostCache,
        accounts: AccountCache,
        stored: StoredBytes,
    ) -> None:
        self.runner = runner
        self.clock = clock
        self.cache = cache
        self.accounts = accounts
        self.stored = stored
        self._listeners: list[HostListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._accounts_polled_at: datetime | None = None
        self._hub = changes.install_hub(factory)
        self._hub.subscribe(self._on_committed)

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    async def start(self) -> None:
        """Bind to the running loop and load the hosts. Idempotent."""
        self._bind_loop()
        if not self.cache.loaded:
            await self._reload_hosts(notify=False)
        if self._accounts_polled_at is None:
            self._accounts_polled_at = self.clock.now()

    def close(self) -> None:
        """Leave the change hub."""
        self._hub.unsubscribe(self._on_committed)

    # -- change delivery (after commit, from any thread) ------------------------------------

    def _on_committed(self, committed: Sequence[changes.Change]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            # No running engine yet: just keep the caches right.
            self._apply(committed, notify=False)
            return
        if threading.get_ident() == self._loop_thread:
            self._apply(committed, notify=True)
        else:
            loop.call_soon_threadsafe(self._apply, committed, True)

    def _apply(self, committed: Sequence[changes.Change], notify: bool = True) -> None:
        cache = self.cache
        cache.generation += 1
        for change in committed:
            if isinstance(change, changes.HostChanged):
                cache.hosts[change.host.domain] = HostEntry(change.host, change.organization_id)
                cache.removed.pop(change.host.domain, None)
                if notify:
                    self._notify_changed(change.host)
            elif isinstance(change, changes.HostRemoved):
                entry = cache.hosts.pop(change.domain, None)
                if entry is not None:
                    cache.removed[change.domain] = entry
                    self.stored.forget(entry.host.service_id)
                self.accounts.forget_host(change.domain)
                if notify:
                    self._notify_removed(change.domain)
            elif isinstance(change, changes.RoomDestroyed):
                if notify:
                    self._notify_room(change)
            else:
                self.accounts.forget_account(change.domain, change.localpart)
                account_host = cache.hosts.get(change.domain)
                if account_host is not None and change.close_reason is not None:
                    # Deleted? Its stored data went with it: count the service again.
                    self.stored.forget(account_host.host.service_id)
                if notify and change.close_reason is not None:
                    self._notify_account(change.domain, change.localpart, change.close_reason)

    def _notify_changed(self, host: VirtualHost) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_host_changed(host)
            except Exception:
                log.exception("host listener failed")

    def _notify_removed(self, domain: str) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_host_removed(domain)
            except Exception:
                log.exception("host listener failed")

    def _notify_account(self, domain: str, localpart: str, reason: str) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_account_disabled(domain, localpart, reason)
            except Exception:
                log.exception("host listener failed")

    def _notify_room(self, change: changes.RoomDestroyed) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_room_destroyed(change.domain, change.room, change.reason)
            except Exception:
                log.exception("host listener failed")

    # -- reading ----------------------------------------------------------------------------

    def _read_hosts(self, session: Session) -> dict[str, HostEntry]:
        return {
            s.domain: HostEntry(hosting.virtual_host(s), s.organization_id)
            for s in repo.hosted_services(session)
        }

    async def _reload_hosts(self, *, notify: bool) -> None:
        cache = self.cache
        for _ in range(3):
            seen = cache.generation
            fresh = await self.runner.run(self._read_hosts)
            if seen == cache.generation:
                break
            # A committed change arrived while reading: this snapshot may predate it.
        else:
            if cache.loaded:
                return  # try again at the next refresh rather than undo a newer change
        old = cache.hosts
        cache.hosts = fresh
        cache.loaded = True
        for domain in set(old) - set(fresh):
            cache.removed[domain] = old[domain]
            self.accounts.forget_host(domain)
        if not notify:
            return
        for domain, entry in fresh.items():
            if domain not in old or old[domain].host != entry.host:
                self._notify_changed(entry.host)
        for domain in set(old) - set(fresh):
            self._notify_removed(domain)

    async def refresh(self) -> None:
        """Pick up changes committed by other processes (the CLI, another node): hosts that
        appeared, changed or went, accounts changed since the last refresh (disabled ones
        are closed) and cached accounts deleted. (Changes
        made in this process arrive at once, without waiting for this.)"""
        await self._reload_hosts(notify=True)
        since = self._accounts_polled_at
        now = self.clock.now()
        self._accounts_polled_at = now
        if since is None:
            return
        since -= ACCOUNT_POLL_OVERLAP
        cached = self.accounts.cached_accounts()
        ids = sorted(cached)

        def read(
            session: Session,
        ) -> tuple[list[tuple[str, str, bool, str]], set[str]]:
            return (
                repo.accounts_changed_since(session, since),
                repo.existing_account_ids(session, ids),
            )

        changed, existing = await self.runner.run(read)
        for domain, localpart, disabled, reason in changed:
            self.accounts.forget_account(domain, localpart)
            if disabled:
                self._notify_account(domain, localpart, reason or "this account is disabled")
        for account_id in set(ids) - existing:
            # Deleted by another process: no row left to poll, so the cache is checked.
            domain, localpart = cached[account_id]
            self.accounts.forget_account(domain, localpart)
            self._notify_account(domain, localpart, "this account was deleted")

    # -- HostDirectory ----------------------------------------------------------------------

    async def list_hosts(self) -> Sequence[VirtualHost]:
        self._bind_loop()
        if not self.cache.loaded:
            await self._reload_hosts(notify=False)
        return [e.host for e in self.cache.hosts.values()]

    async def get_host(self, domain: str) -> VirtualHost | None:
        if not self.cache.loaded:
            await self.list_hosts()
        entry = self.cache.hosts.get(domain)
        return entry.host if entry else None

    def add_listener(self, listener: HostListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)
        with contextlib.suppress(RuntimeError):  # outside a loop: bound on first async call
            self._bind_loop()

    def remove_listener(self, listener: HostListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def organization_of(self, domain: str) -> str | None:
        return self.cache.organization_of(domain)
