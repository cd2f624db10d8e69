"""The data plane's ports (:mod:`imhost.xmpp.ports`) backed by the database.

:class:`DbBackend` is the host directory and account authentication, and composes one
adapter per other port in :mod:`imhost.hosting.dataplane` (roster, vCard, block list and
usage; offline messages and private XML in one, as both count against the storage limit),
queries in :mod:`imhost.hosting.repository`, all sharing its ``DbRunner`` and account cache.
``DbBackend`` delegates to them so it still answers every port (private XML through
:class:`DbPrivateStore`, whose ``bytes_used`` name clashes with the offline store's). The
database is used through the synchronous session factory, always inside
``asyncio.to_thread``, and the hot path never waits on it:

- hosts live in memory (loaded at start, then changed by committed service changes through
  :mod:`imhost.hosting.changes`, and re-read every ``host_refresh_seconds`` to pick up
  changes made by other processes such as the CLI);
- credentials and account state are cached for ``credential_ttl`` seconds (absent accounts
  for ``negative_ttl``) and dropped at once when an account changes;
- routing to an online user touches no store; the auth-failure audit trail and
  ``last_login_at`` are written in batches by a background task, once a second;
- the storage limit is checked against a byte counter per service, not a SUM per write
  (:mod:`imhost.hosting.dataplane.storage`); a changed account makes it count again.

Brute-force protection is the accounts package's :class:`LoginThrottleService` under the
keys ``xmpp:<bare jid>`` and ``address:<ip>``, so an XMPP account and a client address are
locked exactly like a portal login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import audit
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.throttle import (
    AttemptKeys,
    LoginThrottleService,
    address_key,
    attempt_keys,
    xmpp_key,
)
from imhost.config import SecuritySettings
from imhost.hosting import changes
from imhost.hosting import service as hosting
from imhost.hosting.dataplane.runner import DB_ATTEMPTS as DB_ATTEMPTS
from imhost.hosting.dataplane.runner import DbRunner
from imhost.hosting.dataplane.storage import DbStorage
from imhost.hosting.dataplane.stores import DbBlockListStore, DbRosterStore, DbVCardStore
from imhost.hosting.dataplane.usage import DbUsageSink
from imhost.hosting.models import (
    HostedService,
    XmppAccount,
)
from imhost.kit.clock import Clock
from imhost.kit.errors import DomainError
from imhost.kit.scram import DEFAULT_ITERATIONS, ScramCredentials, ScramHash
from imhost.xmpp.ports import (
    AuthAdmission,
    AuthAttempt,
    HostListener,
    OfflineMessage,
    PrivateStoreView,
    RosterItem,
    UsageRecord,
    VirtualHost,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

HOST_REFRESH_SECONDS = 10.0
BATCH_SECONDS = 1.0
BATCH_MAX = 10_000
"""Queued auth events kept for a retry when the database refuses a batch (then dropped)."""
ACCOUNT_POLL_OVERLAP = timedelta(seconds=2)
"""Accounts changed this long before the last refresh are looked at again (commits in flight)."""


@dataclass(frozen=True, slots=True)
class _AccountEntry:
    account_id: str
    credentials: dict[ScramHash, ScramCredentials]
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class _HostEntry:
    host: VirtualHost
    organization_id: str


class DbBackend:
    """Every port but ``PrivateStore`` on the database; see the module docstring."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Clock,
        security: SecuritySettings,
        *,
        credential_ttl: float = 30.0,
        negative_ttl: float = 5.0,
        host_refresh_seconds: float = HOST_REFRESH_SECONDS,
        iterations: int = DEFAULT_ITERATIONS,
        usage_factory: sessionmaker[Session] | None = None,
    ) -> None:
        self.factory = factory
        self.usage_factory = usage_factory or factory
        """Sessions for usage writes: their own connection (``engines/builtin.py``)."""
        self.clock = clock
        self.security = security
        self.credential_ttl = credential_ttl
        self.negative_ttl = negative_ttl
        self.host_refresh_seconds = host_refresh_seconds
        self.iterations = iterations
        self.hosts: dict[str, _HostEntry] = {}
        self.removed: dict[str, _HostEntry] = {}
        """Hosts removed while running: their last usage still needs an organization."""
        self._loaded = False
        self._accounts: dict[tuple[str, str], tuple[float, _AccountEntry | None]] = {}
        self._listeners: list[HostListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._failed_logins: list[AuthAttempt] = []
        self._logins: list[tuple[str, str, datetime]] = []
        self._client_versions: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task[None] | None = None
        self._hub = changes.install_hub(factory)
        self._hub.subscribe(self._on_committed)
        self._closed = False
        self._accounts_polled_at: datetime | None = None
        self._generation = 0
        """Counts applied changes, so a host snapshot read meanwhile is not trusted."""
        self.runner = DbRunner(factory)
        self.roster = DbRosterStore(self.runner, self)
        self.vcards = DbVCardStore(self.runner, self)
        self.blocklist = DbBlockListStore(self.runner, self)
        self.usage = DbUsageSink(self.runner, self, clock, self.usage_factory)
        self.storage = DbStorage(self.runner, self, self)

    # -- plumbing ---------------------------------------------------------------------------

    async def _db(
        self,
        work: Callable[[Session], T],
        *,
        write: bool = False,
        factory: sessionmaker[Session] | None = None,
    ) -> T:
        """Run ``work`` in one transaction on a worker thread (:class:`DbRunner`: ``write``
        begins it as a writer; one refused for concurrency is run again, a few times)."""
        return await self.runner.run(work, write=write, factory=factory)

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()

    async def start(self) -> None:
        """Load hosts and start the background task (batches, refresh). Idempotent."""
        self._bind_loop()
        if not self._loaded:
            await self._reload_hosts(notify=False)
        if self._accounts_polled_at is None:
            self._accounts_polled_at = self.clock.now()
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._background())

    async def close(self) -> None:
        """Flush the batches, stop the background task and leave the change hub."""
        self._closed = True
        self._hub.unsubscribe(self._on_committed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush_batches()

    async def _background(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(BATCH_SECONDS)
            try:
                await self.flush_batches()
                if time.monotonic() - last_refresh >= self.host_refresh_seconds:
                    last_refresh = time.monotonic()
                    await self.refresh()
                    self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hosting background work failed; retrying")

    def prune(self) -> None:
        """Forget expired cache entries (many accounts or addresses must not grow memory)."""
        now = time.monotonic()
        for key in [k for k, (expires, _) in self._accounts.items() if expires <= now]:
            del self._accounts[key]

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
        self._generation += 1
        for change in committed:
            if isinstance(change, changes.HostChanged):
                self.hosts[change.host.domain] = _HostEntry(change.host, change.organization_id)
                self.removed.pop(change.host.domain, None)
                if notify:
                    self._notify_changed(change.host)
            elif isinstance(change, changes.HostRemoved):
                entry = self.hosts.pop(change.domain, None)
                if entry is not None:
                    self.removed[change.domain] = entry
                    self.storage.forget(entry.host.service_id)
                for key in [k for k in self._accounts if k[0] == change.domain]:
                    del self._accounts[key]
                if notify:
                    self._notify_removed(change.domain)
            else:
                self._accounts.pop((change.domain, change.localpart), None)
                account_host = self.hosts.get(change.domain)
                if account_host is not None and change.close_reason is not None:
                    # Deleted? Its stored data went with it: count the service again.
                    self.storage.forget(account_host.host.service_id)
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

    # -- HostDirectory ----------------------------------------------------------------------

    def _read_hosts(self, session: Session) -> dict[str, _HostEntry]:
        return {
            s.domain: _HostEntry(hosting.virtual_host(s), s.organization_id)
            for s in session.scalars(select(HostedService))
        }

    async def _reload_hosts(self, *, notify: bool) -> None:
        for _ in range(3):
            seen = self._generation
            fresh = await self._db(self._read_hosts)
            if seen == self._generation:
                break
            # A committed change arrived while reading: this snapshot may predate it.
        else:
            if self._loaded:
                return  # try again at the next refresh rather than undo a newer change
        old = self.hosts
        self.hosts = fresh
        self._loaded = True
        for domain in set(old) - set(fresh):
            self.removed[domain] = old[domain]
            for key in [k for k in self._accounts if k[0] == domain]:
                del self._accounts[key]
        if not notify:
            return
        for domain, entry in fresh.items():
            if domain not in old or old[domain].host != entry.host:
                self._notify_changed(entry.host)
        for domain in set(old) - set(fresh):
            self._notify_removed(domain)

    async def refresh(self) -> None:
        """Pick up changes committed by other processes (the CLI, another node): hosts that
        appeared, changed or went, and accounts disabled since the last refresh. (Changes
        made in this process arrive at once, without waiting for this.)"""
        await self._reload_hosts(notify=True)
        since = self._accounts_polled_at
        now = self.clock.now()
        self._accounts_polled_at = now
        if since is None:
            return
        since -= ACCOUNT_POLL_OVERLAP

        def read(session: Session) -> list[tuple[str, str, bool, str]]:
            rows = session.execute(
                select(
                    HostedService.domain,
                    XmppAccount.localpart,
                    XmppAccount.disabled,
                    XmppAccount.disabled_reason,
                )
                .join(HostedService, HostedService.id == XmppAccount.service_id)
                .where(XmppAccount.updated_at >= since)
            )
            return [(d, lp, bool(dis), reason or "") for d, lp, dis, reason in rows]

        for domain, localpart, disabled, reason in await self._db(read):
            self._accounts.pop((domain, localpart), None)
            if disabled:
                self._notify_account(domain, localpart, reason or "this account is disabled")

    async def list_hosts(self) -> Sequence[VirtualHost]:
        self._bind_loop()
        if not self._loaded:
            await self._reload_hosts(notify=False)
        return [e.host for e in self.hosts.values()]

    async def get_host(self, domain: str) -> VirtualHost | None:
        if not self._loaded:
            await self.list_hosts()
        entry = self.hosts.get(domain)
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
        entry = self.hosts.get(domain) or self.removed.get(domain)
        return entry.organization_id if entry else None

    # -- AccountAuth ------------------------------------------------------------------------

    def _read_account(self, session: Session, domain: str, localpart: str) -> _AccountEntry | None:
        entry = self.hosts.get(domain)
        if entry is None:
            return None
        account = session.scalar(
            select(XmppAccount).where(
                XmppAccount.service_id == entry.host.service_id,
                XmppAccount.localpart == localpart,
            )
        )
        if account is None:
            return None
        return _AccountEntry(
            account_id=account.id,
            credentials={h: hosting.credentials_of(account, h) for h in ScramHash},
            disabled_reason=(account.disabled_reason or "this account is disabled")
            if account.disabled
            else None,
        )

    async def _account(self, domain: str, localpart: str) -> _AccountEntry | None:
        key = (domain, localpart)
        now = time.monotonic()
        cached = self._accounts.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        if domain not in self.hosts:
            return None
        seen = self._generation
        entry = await self._db(lambda s: self._read_account(s, domain, localpart))
        if seen == self._generation:  # else a change (a password reset?) may postdate the read
            ttl = self.credential_ttl if entry is not None else self.negative_ttl
            self._accounts[key] = (time.monotonic() + ttl, entry)
        return entry

    async def get_credentials(
        self, domain: str, localpart: str, h: ScramHash
    ) -> ScramCredentials | None:
        entry = await self._account(domain, localpart)
        return entry.credentials.get(h) if entry else None

    async def account_disabled(self, domain: str, localpart: str) -> str | None:
        host = self.hosts.get(domain)
        if host is not None and not host.host.active:
            return host.host.status_reason or "this service is suspended"
        entry = await self._account(domain, localpart)
        return entry.disabled_reason if entry else None

    async def account_exists(self, domain: str, localpart: str) -> bool:
        return await self._account(domain, localpart) is not None

    def _auth_keys(self, domain: str, localpart: str, address: str) -> AttemptKeys:
        return attempt_keys(xmpp_key(f"{localpart}@{domain}"), address)

    def _throttle(self, session: Session) -> LoginThrottleService:
        return LoginThrottleService(session, self.clock, self.security)

    async def admit_auth(self, domain: str, localpart: str, address: str) -> AuthAdmission:
        """The web sign-in's model (accounts.throttle), decided and counted in one short
        write transaction, so parallel attempts on several connections or nodes are counted
        one after the other."""
        keys = self._auth_keys(domain, localpart, address)
        admission = await self._db(lambda s: self._throttle(s).admit(keys), write=True)
        decision = admission.decision
        return AuthAdmission(
            allowed=decision.allowed,
            delay_seconds=decision.delay_seconds,
            retry_after_seconds=decision.retry_after_seconds,
        )

    async def report_auth(self, attempt: AuthAttempt) -> None:
        if attempt.success:
            keys = self._auth_keys(attempt.domain, attempt.localpart, attempt.address)
            # At once, not batched: several devices behind one address that sign in within
            # a second must not add up to a lock.
            await self._db(lambda s: self._throttle(s).settle_success(keys, None), write=True)
            self._logins.append((attempt.domain, attempt.localpart, self.clock.now()))
            return
        self._failed_logins.append(attempt)
        if not attempt.localpart and attempt.address:
            # No valid username, so no admission: count the address alone.
            key = address_key(attempt.address)
            await self._db(lambda s: self._throttle(s).fail(key), write=True)

    async def flush_batches(self) -> None:
        """Write the queued auth-failure audit events, logins and client versions."""
        failed, self._failed_logins = self._failed_logins, []
        logins, self._logins = self._logins, []
        versions, self._client_versions = self._client_versions, {}
        if not (failed or logins or versions):
            return
        services = {d: e.host.service_id for d, e in self.hosts.items()}
        orgs = {d: e.organization_id for d, e in self.hosts.items()}

        def write(session: Session) -> None:
            for attempt in failed:
                jid = (
                    f"{attempt.localpart}@{attempt.domain}" if attempt.localpart else attempt.domain
                )
                audit.record(
                    session,
                    self.clock,
                    AuditAction.XMPP_LOGIN_FAILED,
                    actor=Actor(label=jid, address=attempt.address or None),
                    organization_id=orgs.get(attempt.domain),
                    target_type="xmpp_account",
                    target_label=jid,
                    mechanism=attempt.mechanism,
                )
            if logins:
                hosting.record_logins(session, services, logins)
            for (domain, localpart), version in versions.items():
                service_id = services.get(domain)
                account = session.scalar(
                    select(XmppAccount).where(
                        XmppAccount.service_id == service_id, XmppAccount.localpart == localpart
                    )
                )
                if account is not None:
                    account.client_version = version[:300]

        try:
            await self._db(write, write=True)
        except Exception:
            # Keep them for the next flush (bounded): a busy database must not lose them.
            log.exception("writing %d auth events failed", len(failed) + len(logins))
            self._failed_logins[:0] = failed[-BATCH_MAX:]
            self._logins[:0] = logins[-BATCH_MAX:]
            for key, version in versions.items():
                self._client_versions.setdefault(key, version)
            del self._failed_logins[BATCH_MAX:]
            del self._logins[BATCH_MAX:]

    def note_client_version(self, domain: str, localpart: str, version: str) -> None:
        """XEP-0092 answer of a client after login, kept on the account (batched)."""
        self._client_versions[(domain, localpart)] = version[:300]

    async def report_client_version(self, domain: str, localpart: str, version: str) -> None:
        self.note_client_version(domain, localpart, version)

    def _refuse(self, exc: DomainError) -> ValueError:
        return ValueError(exc.detail)

    async def set_password(self, domain: str, localpart: str, password: str) -> None:
        """XEP-0077 password change by the account itself; the policy applies."""
        entry = self.hosts.get(domain)
        if entry is None:
            raise ValueError("no such account")

        def change(session: Session) -> None:
            service = session.get(HostedService, entry.host.service_id)
            if service is None:
                raise ValueError("no such account")
            try:
                account = hosting.get_account(session, service, localpart)
                hosting.check_xmpp_password(
                    session, self.security, service, localpart, password, name=account.name
                )
            except DomainError as exc:
                raise self._refuse(exc) from None
            hosting.change_own_password(
                session, self.clock, service, account, password, iterations=self.iterations
            )

        await self._db(change, write=True)
        self._accounts.pop((domain, localpart), None)

    async def register_account(self, domain: str, localpart: str, password: str) -> None:
        """XEP-0077 registration, only where the service allows it; the policy applies."""
        entry = self.hosts.get(domain)
        if entry is None or not entry.host.active:
            raise ValueError("registration is not available on this service")
        if not entry.host.limits.registration_allowed:
            raise ValueError("this service does not allow in-band registration")

        def register(session: Session) -> None:
            service = session.get(HostedService, entry.host.service_id)
            if service is None:
                raise ValueError("registration is not available on this service")
            try:
                hosting.create_account(
                    session,
                    self.clock,
                    service,
                    username=localpart,
                    password=password,
                    security=self.security,
                    actor=Actor(label=f"in-band registration of {localpart}@{domain}"),
                    iterations=self.iterations,
                )
            except DomainError as exc:
                raise self._refuse(exc) from None

        await self._db(register, write=True)
        self._accounts.pop((domain, localpart), None)

    async def count_accounts(self, domain: str) -> int:
        entry = self.hosts.get(domain)
        if entry is None:
            return 0
        return await self._db(lambda s: hosting.count_accounts(s, entry.host.service_id))

    # -- per-account storage ------------------------------------------------------------------

    async def account_id(self, domain: str, localpart: str) -> str | None:
        """:class:`~imhost.hosting.dataplane.runner.AccountLookup` for the adapters (cached)."""
        entry = await self._account(domain, localpart)
        return entry.account_id if entry else None

    _account_id = account_id

    def service_id_of(self, domain: str) -> str | None:
        """The service id of a hosted domain (for the storage adapter)."""
        entry = self.hosts.get(domain)
        return None if entry is None else entry.host.service_id

    def usage_owner(self, domain: str) -> tuple[str, str] | None:
        """(organization id, service id) of a host, also of one removed while running."""
        entry = self.hosts.get(domain) or self.removed.get(domain)
        return None if entry is None else (entry.organization_id, entry.host.service_id)

    # RosterStore, VCardStore, BlockListStore, UsageSink: adapters of their own
    # (:mod:`imhost.hosting.dataplane`); these delegate, for callers holding the backend.

    async def get_roster(self, domain: str, localpart: str) -> tuple[str, list[RosterItem]]:
        return await self.roster.get_roster(domain, localpart)

    async def set_item(self, domain: str, localpart: str, item: RosterItem) -> str:
        return await self.roster.set_item(domain, localpart, item)

    async def remove_item(self, domain: str, localpart: str, jid: str) -> str:
        return await self.roster.remove_item(domain, localpart, jid)

    async def get_pending_in(self, domain: str, localpart: str) -> dict[str, str]:
        return await self.roster.get_pending_in(domain, localpart)

    async def set_pending_in(self, domain: str, localpart: str, jid: str, stanza: str) -> None:
        await self.roster.set_pending_in(domain, localpart, jid, stanza)

    async def remove_pending_in(self, domain: str, localpart: str, jid: str) -> None:
        await self.roster.remove_pending_in(domain, localpart, jid)

    async def get_vcard(self, domain: str, localpart: str) -> str | None:
        return await self.vcards.get_vcard(domain, localpart)

    async def set_vcard(self, domain: str, localpart: str, xml: str) -> None:
        await self.vcards.set_vcard(domain, localpart, xml)

    async def get_blocklist(self, domain: str, localpart: str) -> set[str]:
        return await self.blocklist.get_blocklist(domain, localpart)

    async def block(self, domain: str, localpart: str, jids: Sequence[str]) -> None:
        await self.blocklist.block(domain, localpart, jids)

    async def unblock(self, domain: str, localpart: str, jids: Sequence[str] | None) -> None:
        await self.blocklist.unblock(domain, localpart, jids)

    async def record(self, records: list[UsageRecord]) -> None:
        await self.usage.record(records)

    # OfflineStore and private XML: under the storage limit, in their own adapter
    # (:class:`~imhost.hosting.dataplane.storage.DbStorage`); these delegate.

    async def push(
        self,
        domain: str,
        localpart: str,
        stanza: str,
        stored_at: datetime,
        limit: int,
        max_host_bytes: int | None = None,
    ) -> bool:
        return await self.storage.push(domain, localpart, stanza, stored_at, limit, max_host_bytes)

    async def pop_all(self, domain: str, localpart: str) -> list[OfflineMessage]:
        return await self.storage.pop_all(domain, localpart)

    async def count(self, domain: str, localpart: str) -> int:
        return await self.storage.count(domain, localpart)

    async def bytes_used(self, domain: str) -> int:
        """Offline storage bytes of a host (a metering gauge)."""
        return await self.storage.bytes_used(domain)

    async def private_bytes_used(self, domain: str) -> int:
        return await self.storage.private_bytes_used(domain)

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None:
        return await self.storage.get_private(domain, localpart, key)

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None:
        await self.storage.set_private(domain, localpart, items, max_host_bytes)

    def stored_bytes(self, domain: str) -> int | None:
        """Offline and private bytes of a host as this process counts them (None: not counted
        yet)."""
        return self.storage.stored_bytes(domain)


class DbPrivateStore(PrivateStoreView):
    """``PrivateStore`` view of a :class:`DbBackend` (XEP-0049)."""
