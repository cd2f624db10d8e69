"""The data plane's ports (:mod:`imhost.xmpp.ports`) backed by the database.

:class:`DbBackend` holds the host directory, authentication and the stores under the storage
limit (offline messages; private XML through :class:`DbPrivateStore`, whose ``bytes_used``
name clashes with the offline store's). The roster, vCard, block-list and usage ports are
adapters of their own in :mod:`imhost.hosting.dataplane` (queries in
:mod:`imhost.hosting.repository`), sharing its :class:`DbRunner` and account cache;
``DbBackend`` delegates to them so it still answers every port. The database is used
through the synchronous session factory, always inside ``asyncio.to_thread``, and the hot
path never waits on it:

- hosts live in memory (loaded at start, then changed by committed service changes through
  :mod:`imhost.hosting.changes`, and re-read every ``host_refresh_seconds`` to pick up
  changes made by other processes such as the CLI);
- credentials and account state are cached for ``credential_ttl`` seconds (absent accounts
  for ``negative_ttl``) and dropped at once when an account changes;
- routing to an online user touches no store; the auth-failure audit trail and
  ``last_login_at`` are written in batches by a background task, once a second;
- the storage limit (``HostLimits.max_storage_bytes``) is checked against a byte counter per
  service (:class:`_StoredBytes`), not a SUM per write: counted from the database on the first
  limited write, moved by every write and deletion this process makes, counted again when
  older than ``STORAGE_RECOUNT_SECONDS``, and at the next limited write after an account is
  deleted, disabled or reset in this process (its data may have gone with it).
  Exact for one process; with several nodes, each misses the others' writes and deletions
  for at most that long (a host may go over by what the other nodes store meanwhile, or be
  refused for up to 30 s after another node freed space).

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
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError
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
from imhost.db.engine import transaction
from imhost.hosting import changes
from imhost.hosting import service as hosting
from imhost.hosting.dataplane.runner import DB_ATTEMPTS, DbRunner
from imhost.hosting.dataplane.stores import DbBlockListStore, DbRosterStore, DbVCardStore
from imhost.hosting.dataplane.usage import DbUsageSink
from imhost.hosting.models import (
    HostedService,
    XmppAccount,
    XmppOfflineMessage,
    XmppPrivateXml,
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
    StorageFull,
    UsageRecord,
    VirtualHost,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

HOST_REFRESH_SECONDS = 10.0
BATCH_SECONDS = 1.0
GAUGE_TTL_SECONDS = 30.0
BATCH_MAX = 10_000
"""Queued auth events kept for a retry when the database refuses a batch (then dropped)."""
STORAGE_RECOUNT_SECONDS = 30.0
"""A service's stored-bytes counter is counted again from the database after this long."""
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


@dataclass(slots=True)
class _StoredBytes:
    """Offline and private bytes of one service, as this process knows them.

    ``total`` is what the database held when counted, plus this process's writes since
    (reserved before their commit, so two writes in flight cannot both take the last bytes),
    minus its deletions (after their commit, so a failed deletion frees nothing).
    """

    total: int
    counted_at: float
    """``time.monotonic()`` of the count; older than STORAGE_RECOUNT_SECONDS: count again."""


@dataclass(slots=True)
class _StorageLedger:
    """What one transaction does to the counters: growth reserved before the commit (given
    back if it rolls back), bytes freed applied after it."""

    reserved: list[tuple[str, int, _StoredBytes | None]] = field(default_factory=list)
    freed: list[tuple[str, int]] = field(default_factory=list)


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
        self._gauges: tuple[float, dict[str, int], dict[str, int]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._offline_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._stored: dict[str, _StoredBytes] = {}
        """Service id -> stored bytes (see the module docstring); guarded by _stored_lock."""
        self._in_flight: dict[str, int] = {}
        """Service id -> bytes reserved by transactions not yet committed (for a recount)."""
        self._stored_lock = threading.Lock()
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

    async def _db_storage(self, work: Callable[[Session, _StorageLedger], T]) -> T:
        """:meth:`_db` for a write that changes stored bytes: ``work`` notes in the ledger
        what it reserves (:meth:`_reserve_storage`) and frees; both are settled once the
        transaction has committed or rolled back."""

        def run() -> T:
            for attempt in range(DB_ATTEMPTS):
                ledger = _StorageLedger()
                try:
                    with transaction(self.factory, write=True) as session:
                        result = work(session, ledger)
                except BaseException as exc:
                    self._settle_storage(ledger, committed=False)
                    if isinstance(exc, OperationalError) and attempt < DB_ATTEMPTS - 1:
                        time.sleep(0.02 * (attempt + 1))
                        continue
                    raise
                self._settle_storage(ledger, committed=True)
                return result
            raise AssertionError("unreachable")

        return await asyncio.to_thread(run)

    # -- stored bytes per service (the storage limit) ---------------------------------------

    def _stored_counter(self, session: Session, service_id: str) -> _StoredBytes:
        """The service's counter, counted from the database if missing or too old."""
        with self._stored_lock:
            counter = self._stored.get(service_id)
            if counter is not None and time.monotonic() - counter.counted_at < (
                STORAGE_RECOUNT_SECONDS
            ):
                return counter
        stored = hosting.stored_bytes(session, service_id)
        with self._stored_lock:
            # Another write may have counted (and reserved on its counter) meanwhile: use
            # that counter, or both writes would reserve on counters of their own.
            counter = self._stored.get(service_id)
            if counter is not None and time.monotonic() - counter.counted_at < (
                STORAGE_RECOUNT_SECONDS
            ):
                return counter
            # Writes reserved but not committed are not in the sums yet: add them.
            counted = stored + self._in_flight.get(service_id, 0)
            counter = self._stored[service_id] = _StoredBytes(counted, time.monotonic())
            return counter

    def _reserve_storage(
        self,
        session: Session,
        ledger: _StorageLedger,
        domain: str,
        service_id: str,
        growth: int,
        max_host_bytes: int | None,
    ) -> None:
        """Take ``growth`` bytes for this transaction, or raise :class:`StorageFull`.

        Called before the rows are added or changed (a count must not see them). Shrinking
        (negative growth) is never refused and frees its bytes only after the commit.
        """
        if growth < 0:
            ledger.freed.append((service_id, -growth))
            return
        if growth == 0:
            return
        counter = self._stored_counter(session, service_id) if max_host_bytes is not None else None
        with self._stored_lock:
            if counter is None:
                counter = self._stored.get(service_id)  # unlimited: keep a counter right
            if counter is not None:
                if max_host_bytes is not None and counter.total + growth > max_host_bytes:
                    raise StorageFull(domain, max_host_bytes)
                counter.total += growth
            self._in_flight[service_id] = self._in_flight.get(service_id, 0) + growth
        ledger.reserved.append((service_id, growth, counter))

    def _settle_storage(self, ledger: _StorageLedger, *, committed: bool) -> None:
        with self._stored_lock:
            for service_id, growth, counter in ledger.reserved:
                left = self._in_flight.get(service_id, 0) - growth
                if left:
                    self._in_flight[service_id] = left
                else:
                    self._in_flight.pop(service_id, None)
                if not committed and counter is not None:
                    counter.total -= growth
            if committed:
                for service_id, freed in ledger.freed:
                    current = self._stored.get(service_id)
                    if current is not None:
                        current.total = max(0, current.total - freed)

    def _forget_stored(self, service_id: str) -> None:
        """Count this service again at its next limited write (its data changed elsewhere)."""
        with self._stored_lock:
            self._stored.pop(service_id, None)

    def stored_bytes(self, domain: str) -> int | None:
        """Offline and private bytes of a host as this process counts them (None: not counted
        yet, i.e. no write under a storage limit since the last recount)."""
        entry = self.hosts.get(domain)
        if entry is None:
            return None
        with self._stored_lock:
            counter = self._stored.get(entry.host.service_id)
            return counter.total if counter is not None else None

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
                    self._forget_stored(entry.host.service_id)
                for key in [k for k in self._accounts if k[0] == change.domain]:
                    del self._accounts[key]
                if notify:
                    self._notify_removed(change.domain)
            else:
                self._accounts.pop((change.domain, change.localpart), None)
                account_host = self.hosts.get(change.domain)
                if account_host is not None and change.close_reason is not None:
                    # Deleted? Its stored data went with it: count the service again.
                    self._forget_stored(account_host.host.service_id)
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

    # OfflineStore: one operation at a time per account, in the order they were asked for,
    # so a message stored just before its recipient comes online is never left behind by
    # a pop_all that ran first on another thread.

    def _offline_lock(self, domain: str, localpart: str) -> asyncio.Lock:
        key = (domain, localpart)
        lock = self._offline_locks.get(key)
        if lock is None:
            lock = self._offline_locks[key] = asyncio.Lock()
        return lock

    async def push(
        self,
        domain: str,
        localpart: str,
        stanza: str,
        stored_at: datetime,
        limit: int,
        max_host_bytes: int | None = None,
    ) -> bool:
        account_id = await self._account_id(domain, localpart)
        entry = self.hosts.get(domain)
        if account_id is None or entry is None:
            return False
        service_id = entry.host.service_id
        size = len(stanza.encode("utf-8"))

        def write(session: Session, ledger: _StorageLedger) -> bool:
            session.get(XmppAccount, account_id, with_for_update=True)  # serialise per account
            held = session.scalar(
                select(func.count())
                .select_from(XmppOfflineMessage)
                .where(XmppOfflineMessage.account_id == account_id)
            )
            if (held or 0) >= limit:
                return False
            self._reserve_storage(session, ledger, domain, service_id, size, max_host_bytes)
            session.add(
                XmppOfflineMessage(
                    account_id=account_id,
                    service_id=service_id,
                    stanza=stanza,
                    size=size,
                    stored_at=stored_at,
                )
            )
            return True

        async with self._offline_lock(domain, localpart):
            return await self._db_storage(write)

    async def pop_all(self, domain: str, localpart: str) -> list[OfflineMessage]:
        account_id = await self._account_id(domain, localpart)
        if account_id is None:
            return []

        def take(session: Session, ledger: _StorageLedger) -> list[OfflineMessage]:
            rows = list(
                session.scalars(
                    select(XmppOfflineMessage)
                    .where(XmppOfflineMessage.account_id == account_id)
                    .order_by(XmppOfflineMessage.id)
                    .with_for_update()
                )
            )
            if rows:
                session.execute(
                    delete(XmppOfflineMessage).where(
                        XmppOfflineMessage.id.in_([r.id for r in rows])
                    )
                )
                ledger.freed.append((rows[0].service_id, sum(r.size for r in rows)))
            return [OfflineMessage(r.stanza, r.stored_at) for r in rows]

        async with self._offline_lock(domain, localpart):
            return await self._db_storage(take)

    async def count(self, domain: str, localpart: str) -> int:
        account_id = await self._account_id(domain, localpart)
        if account_id is None:
            return 0
        return await self._db(
            lambda s: int(
                s.scalar(
                    select(func.count())
                    .select_from(XmppOfflineMessage)
                    .where(XmppOfflineMessage.account_id == account_id)
                )
                or 0
            )
        )

    async def _storage(self) -> tuple[dict[str, int], dict[str, int]]:
        """Stored bytes per service id (offline, private); one query each per 30 s."""
        now = time.monotonic()
        if self._gauges is not None and self._gauges[0] > now:
            return self._gauges[1], self._gauges[2]

        def read(session: Session) -> tuple[dict[str, int], dict[str, int]]:
            offline = session.execute(
                select(XmppOfflineMessage.service_id, func.sum(XmppOfflineMessage.size)).group_by(
                    XmppOfflineMessage.service_id
                )
            )
            private = session.execute(
                select(XmppPrivateXml.service_id, func.sum(XmppPrivateXml.size)).group_by(
                    XmppPrivateXml.service_id
                )
            )
            return (
                {sid: int(total or 0) for sid, total in offline},
                {sid: int(total or 0) for sid, total in private},
            )

        offline, private = await self._db(read)
        self._gauges = (now + GAUGE_TTL_SECONDS, offline, private)
        return offline, private

    async def bytes_used(self, domain: str) -> int:
        """Offline storage bytes of a host (a metering gauge)."""
        entry = self.hosts.get(domain)
        if entry is None:
            return 0
        offline, _ = await self._storage()
        return offline.get(entry.host.service_id, 0)

    async def private_bytes_used(self, domain: str) -> int:
        entry = self.hosts.get(domain)
        if entry is None:
            return 0
        _, private = await self._storage()
        return private.get(entry.host.service_id, 0)

    # PrivateStore (through DbPrivateStore)

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None:
        account_id = await self._account_id(domain, localpart)
        if account_id is None:
            return None
        return await self._db(
            lambda s: s.scalar(
                select(XmppPrivateXml.xml).where(
                    XmppPrivateXml.account_id == account_id, XmppPrivateXml.key == key
                )
            )
        )

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None:
        account_id = await self._account_id(domain, localpart)
        entry = self.hosts.get(domain)
        if account_id is None or entry is None or not items:
            return
        service_id = entry.host.service_id
        new = {key: (xml, len(xml.encode("utf-8"))) for key, xml in items}

        def write(session: Session, ledger: _StorageLedger) -> None:
            session.get(XmppAccount, account_id, with_for_update=True)  # serialise per account
            rows = {
                row.key: row
                for row in session.scalars(
                    select(XmppPrivateXml).where(
                        XmppPrivateXml.account_id == account_id,
                        XmppPrivateXml.key.in_(list(new)),
                    )
                )
            }
            growth = sum(size - (rows[k].size if k in rows else 0) for k, (_, size) in new.items())
            self._reserve_storage(session, ledger, domain, service_id, growth, max_host_bytes)
            for key, (xml, size) in new.items():
                row = rows.get(key)
                if row is None:
                    row = XmppPrivateXml(account_id=account_id, service_id=service_id, key=key)
                    session.add(row)
                row.xml = xml
                row.size = size

        await self._db_storage(write)


class DbPrivateStore(PrivateStoreView):
    """``PrivateStore`` view of a :class:`DbBackend` (XEP-0049)."""
