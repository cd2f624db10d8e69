"""``AccountAuth`` and ``ClientVersionLog`` (:mod:`imhost.xmpp.ports`) on the database.

- credentials and account state are cached for ``credential_ttl`` seconds (absent accounts
  for ``negative_ttl``) and dropped at once when an account changes (the host directory
  calls :meth:`DbAccountAuth.forget_account`);
- the auth-failure audit trail, ``last_login_at`` and the XEP-0092 client versions are
  queued and written in batches by :meth:`DbAccountAuth.flush_batches` (the backend's
  background task, once a second).

Brute-force protection is the accounts package's :class:`LoginThrottleService` under the
keys ``xmpp:<bare jid>`` and ``address:<ip>``, so an XMPP account and a client address are
locked exactly like a portal login.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

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
from imhost.hosting import repository as repo
from imhost.hosting import service as hosting
from imhost.hosting.dataplane.hosts import HostCache
from imhost.hosting.dataplane.runner import DbRunner
from imhost.hosting.models import HostedService
from imhost.kit.clock import Clock
from imhost.kit.errors import DomainError
from imhost.kit.scram import DEFAULT_ITERATIONS, ScramCredentials, ScramHash
from imhost.xmpp.ports import AuthAdmission, AuthAttempt

log = logging.getLogger(__name__)

BATCH_MAX = 10_000
"""Queued auth events kept for a retry when the database refuses a batch (then dropped)."""


@dataclass(frozen=True, slots=True)
class AccountEntry:
    account_id: str
    credentials: dict[ScramHash, ScramCredentials]
    disabled_reason: str | None


class DbAccountAuth:
    """``AccountAuth`` and ``ClientVersionLog``, and the cached
    :class:`~imhost.hosting.dataplane.runner.AccountLookup` of the store adapters."""

    def __init__(
        self,
        runner: DbRunner,
        hosts: HostCache,
        clock: Clock,
        security: SecuritySettings,
        *,
        credential_ttl: float = 30.0,
        negative_ttl: float = 5.0,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        self.runner = runner
        self.hosts = hosts
        self.clock = clock
        self.security = security
        self.credential_ttl = credential_ttl
        self.negative_ttl = negative_ttl
        self.iterations = iterations
        self._accounts: dict[tuple[str, str], tuple[float, AccountEntry | None]] = {}
        self._failed_logins: list[AuthAttempt] = []
        self._logins: list[tuple[str, str, datetime]] = []
        self._client_versions: dict[tuple[str, str], str] = {}

    # -- the account cache ------------------------------------------------------------------

    def forget_account(self, domain: str, localpart: str) -> None:
        self._accounts.pop((domain, localpart), None)

    def forget_host(self, domain: str) -> None:
        for key in [k for k in self._accounts if k[0] == domain]:
            del self._accounts[key]

    def prune(self) -> None:
        """Forget expired cache entries (many accounts or addresses must not grow memory)."""
        now = time.monotonic()
        for key in [k for k, (expires, _) in self._accounts.items() if expires <= now]:
            del self._accounts[key]

    def _read_account(self, session: Session, domain: str, localpart: str) -> AccountEntry | None:
        entry = self.hosts.get(domain)
        if entry is None:
            return None
        account = repo.find_account(session, entry.host.service_id, localpart)
        if account is None:
            return None
        return AccountEntry(
            account_id=account.id,
            credentials={h: hosting.credentials_of(account, h) for h in ScramHash},
            disabled_reason=(account.disabled_reason or "this account is disabled")
            if account.disabled
            else None,
        )

    async def _account(self, domain: str, localpart: str) -> AccountEntry | None:
        key = (domain, localpart)
        now = time.monotonic()
        cached = self._accounts.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        if domain not in self.hosts.hosts:
            return None
        seen = self.hosts.generation
        entry = await self.runner.run(lambda s: self._read_account(s, domain, localpart))
        if seen == self.hosts.generation:  # else a change (a password reset?) may postdate it
            ttl = self.credential_ttl if entry is not None else self.negative_ttl
            self._accounts[key] = (time.monotonic() + ttl, entry)
        return entry

    async def account_id(self, domain: str, localpart: str) -> str | None:
        """:class:`~imhost.hosting.dataplane.runner.AccountLookup` for the adapters (cached)."""
        entry = await self._account(domain, localpart)
        return entry.account_id if entry else None

    # -- AccountAuth ------------------------------------------------------------------------

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
        admission = await self.runner.run(lambda s: self._throttle(s).admit(keys), write=True)
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
            await self.runner.run(
                lambda s: self._throttle(s).settle_success(keys, None), write=True
            )
            self._logins.append((attempt.domain, attempt.localpart, self.clock.now()))
            return
        self._failed_logins.append(attempt)
        if attempt.localpart and attempt.address:
            # The pair and the person were counted at admission; the address now.
            keys = self._auth_keys(attempt.domain, attempt.localpart, attempt.address)
            await self.runner.run(lambda s: self._throttle(s).address_failure(keys), write=True)
        if not attempt.localpart and attempt.address:
            # No valid username, so no admission: count the address alone.
            key = address_key(attempt.address)
            await self.runner.run(lambda s: self._throttle(s).fail(key), write=True)

    async def flush_batches(self) -> None:
        """Write the queued auth-failure audit events, logins and client versions."""
        failed, self._failed_logins = self._failed_logins, []
        logins, self._logins = self._logins, []
        versions, self._client_versions = self._client_versions, {}
        if not (failed or logins or versions):
            return
        services = {d: e.host.service_id for d, e in self.hosts.hosts.items()}
        orgs = {d: e.organization_id for d, e in self.hosts.hosts.items()}

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
                account = repo.find_account(session, services.get(domain), localpart)
                if account is not None:
                    account.client_version = version[:300]

        try:
            await self.runner.run(write, write=True)
        except Exception:
            # Keep them for the next flush (bounded): a busy database must not lose them.
            log.exception("writing %d auth events failed", len(failed) + len(logins))
            self._failed_logins[:0] = failed[-BATCH_MAX:]
            self._logins[:0] = logins[-BATCH_MAX:]
            for key, version in versions.items():
                self._client_versions.setdefault(key, version)
            del self._failed_logins[BATCH_MAX:]
            del self._logins[BATCH_MAX:]

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

        await self.runner.run(change, write=True)
        self.forget_account(domain, localpart)

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

        await self.runner.run(register, write=True)
        self.forget_account(domain, localpart)

    async def count_accounts(self, domain: str) -> int:
        entry = self.hosts.get(domain)
        if entry is None:
            return 0
        return await self.runner.run(lambda s: hosting.count_accounts(s, entry.host.service_id))

    # -- ClientVersionLog -------------------------------------------------------------------

    def note_client_version(self, domain: str, localpart: str, version: str) -> None:
        """XEP-0092 answer of a client after login, kept on the account (batched)."""
        self._client_versions[(domain, localpart)] = version[:300]

    async def report_client_version(self, domain: str, localpart: str, version: str) -> None:
        self.note_client_version(domain, localpart, version)
