"""``AccountAuth`` and ``ClientVersionLog`` (:mod:`imhost.xmpp.ports`) on the database.

- credentials and account state are cached for ``credential_ttl`` seconds (absent accounts
  for ``negative_ttl``) and dropped at once when an account changes (the host directory
  calls :meth:`DbAccountAuth.forget_account`, for changes in this process through the change
  hub, for changes by another process at its refresh);
- the accounts of the served hosts are read at start in one query (:meth:`DbAccountAuth.warm`,
  up to ``WARM_MAX_ACCOUNTS``), so a burst of logins after a restart reads no account;
- brute-force states: every row something is held against (a failure or a lock) is read
  every ``throttle_ttl / 2`` seconds in one query, on a partial index
  (:meth:`DbAccountAuth.refresh_throttles`), and the trusted pairs once at start; a key
  that read did not return is clean. States read or written for one key are cached for
  ``throttle_ttl`` seconds. A login with nothing held against it is admitted in memory and
  writes nothing at once (:class:`DbAccountAuth`);
- the auth-failure audit trail, ``last_login_at``, the XEP-0092 client versions and the
  trust of addresses that signed in are queued and written in batches by
  :meth:`DbAccountAuth.flush_batches` (the backend's background task, once a second).

Brute-force protection is the accounts package's :class:`LoginThrottleService` under the
keys ``xmpp:<bare jid>`` and ``address:<ip>``, so an XMPP account and a client address are
locked exactly like a portal login.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.throttle import (
    Admission,
    AttemptKeys,
    LockoutModel,
    LoginThrottleService,
    ThrottleState,
    address_key,
    attempt_keys,
    policies,
    xmpp_key,
)
from imhost.config import SecuritySettings
from imhost.hosting import repository as repo
from imhost.hosting import service as hosting
from imhost.hosting.dataplane.hosts import HostCache
from imhost.hosting.dataplane.runner import DbRunner, ReadBatcher
from imhost.hosting.models import HostedService, XmppAccount
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import DomainError
from imhost.kit.scram import DEFAULT_ITERATIONS, ScramCredentials, ScramHash
from imhost.xmpp.ports import AuthAdmission, AuthAttempt

log = logging.getLogger(__name__)

BATCH_MAX = 10_000
"""Queued auth events kept for a retry when the database refuses a batch (then dropped)."""

CREDENTIAL_TTL = 600.0
"""Seconds an account's credentials and state stay cached. Every change made through the
hosting service reaches the cache at once (the change hub in this process, the directory's
refresh for another process such as the CLI); this is only a safety net."""

THROTTLE_TTL = 5.0
"""Seconds a brute-force state read from the database is trusted for an attempt admitted in
memory: the longest time failures counted on another node can go unseen (docs/security.md)."""

WARM_MAX_ACCOUNTS = 10_000
"""Accounts whose credentials :meth:`DbAccountAuth.warm` reads at start (those who signed in
last first); the others are read at their first login, as before. Bounded because every
cached account is checked for deletion by another process at each directory refresh (one
query per 500 accounts every 10 s)."""

HELD_MAX = 20_000
"""Rows with a failure or a lock the periodic read keeps in memory; with more (an attack on
many keys at once) every login reads its own keys, as it did before."""

TRUST_MAX = 100_000
"""Trusted pairs known in memory (read at start, the latest first, then read or written); a
pair not among them is taken as not trusted (stricter, never laxer) and its trust is written
again at its next success."""

THROTTLE_PREFIXES = ("xmpp:", "pair:xmpp:", "pair:sha256:", "address:")
"""The keys an XMPP login counts under (a long key is hashed: ``pair:sha256:``)."""

PAIR_PREFIXES = ("pair:xmpp:", "pair:sha256:")

ABANDONED_SECONDS = 120.0
"""An attempt admitted in memory and never settled (the client went away mid-exchange) is
stored as a failure after this long, as :meth:`LoginThrottleService.admit` would have."""

TRUST_RENEWAL = timedelta(days=1)
"""A pair's trust ("signed in from this address", 90 days by default) is written again by a
success only once it is this much older than when it was last written."""

T = TypeVar("T")


@dataclass(slots=True)
class _Ticket:
    """An attempt admitted in memory (:meth:`LockoutModel.admit_in_memory`), in flight."""

    keys: AttemptKeys
    counted: tuple[str, ...]
    started: float
    stored: bool = False
    """Counted in the database already (a later attempt went through it and counted this one
    first): it settles like an attempt admitted there."""


_Read = tuple[str, str, bool, tuple[str, ...]]
"""What a login reads: (domain, localpart, whether the account is wanted, the throttle keys)."""


@dataclass(frozen=True, slots=True)
class AccountEntry:
    account_id: str
    credentials: dict[ScramHash, ScramCredentials]
    disabled_reason: str | None


class DbAccountAuth:
    """``AccountAuth`` and ``ClientVersionLog``, and the cached
    :class:`~imhost.hosting.dataplane.runner.AccountLookup` of the store adapters.

    Brute-force protection without a write per login: the states of an attempt's keys are
    read (with the account, in one read transaction when either is not cached) and kept for
    ``throttle_ttl`` seconds. While nothing is held against the keys an attempt counts under,
    it is admitted in memory and counted here as in flight (one event loop: the decision and
    the count are atomic); a success then stores only the pair's trust, in the next batch. A
    failure, or an attempt at keys with failures or a lock, goes through the database at once
    and row-locked, with this node's attempts still in flight counted first, so parallel
    attempts never pass the thresholds (docs/security.md, "Brute-force protection").
    """

    def __init__(
        self,
        runner: DbRunner,
        hosts: HostCache,
        clock: Clock,
        security: SecuritySettings,
        *,
        credential_ttl: float = CREDENTIAL_TTL,
        negative_ttl: float = 5.0,
        throttle_ttl: float = THROTTLE_TTL,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        self.runner = runner
        self.hosts = hosts
        self.clock = clock
        self.security = security
        self.credential_ttl = credential_ttl
        self.negative_ttl = negative_ttl
        self.throttle_ttl = throttle_ttl
        self.iterations = iterations
        self._accounts: dict[tuple[str, str], tuple[float, AccountEntry | None]] = {}
        self._failed_logins: list[AuthAttempt] = []
        self._logins: list[tuple[str, str, datetime]] = []
        self._client_versions: dict[tuple[str, str], str] = {}
        self._model: tuple[SecuritySettings, LockoutModel] | None = None
        self._throttles: dict[str, tuple[float, ThrottleState]] = {}
        """Key -> (monotonic expiry, the state last read or written in the database)."""
        self._tickets: dict[AttemptKeys, list[_Ticket]] = {}
        self._in_flight: dict[str, int] = {}
        """Key -> attempts admitted in memory, in flight, not yet counted in the database."""
        self._writes: dict[str, int] = {}
        """Key -> throttle writes begun and ended (a read that overlaps either is not trusted)."""
        self._writing: dict[str, int] = {}
        """Key -> throttle writes in progress (no attempt at it is admitted in memory)."""
        self._trusted: dict[str, tuple[AttemptKeys, datetime]] = {}
        """Pair -> successes admitted in memory whose trust is not stored yet (batched)."""
        self._held: dict[str, ThrottleState] | None = None
        """Every key with a failure or a lock, as read at ``_held_read_at`` (None: not read,
        or too many): a key not in it was clean then, but for its trust."""
        self._held_read_at = -math.inf
        """Monotonic time the read of ``_held`` began."""
        self._trust: dict[str, datetime] = {}
        """Pair -> trusted until, as known here (read at start, then read or written)."""
        self._trust_loaded = False
        self._written_at: dict[str, float] = {}
        """Key -> monotonic time this node's last write on it ended (``_held`` read before
        that does not tell its state)."""
        self._refreshing = False
        self._reads: ReadBatcher[_Read, tuple[AccountEntry | None, dict[str, ThrottleState]]]
        self._reads = ReadBatcher(runner, self._read_many)
        """Account and throttle reads of logins in flight together share one transaction."""
        self._write_lock = asyncio.Lock()
        """Throttle writes of this node go one at a time, in the order they were asked for:
        a write that counts attempts admitted in memory is stored before any write asked for
        after it, whichever database connection would have got the rows first."""

    # -- the account cache ------------------------------------------------------------------

    def forget_account(self, domain: str, localpart: str) -> None:
        self._accounts.pop((domain, localpart), None)

    def forget_host(self, domain: str) -> None:
        for key in [k for k in self._accounts if k[0] == domain]:
            del self._accounts[key]

    def cached_accounts(self) -> dict[str, tuple[str, str]]:
        """Account id -> (domain, localpart) of the accounts cached now (for the directory's
        check that they still exist)."""
        return {
            entry.account_id: key for key, (_, entry) in self._accounts.items() if entry is not None
        }

    def prune(self) -> None:
        """Forget expired cache entries (many accounts or addresses must not grow memory)."""
        now = time.monotonic()
        for account in [k for k, (expires, _) in self._accounts.items() if expires <= now]:
            del self._accounts[account]
        for key in [k for k, (expires, _) in self._throttles.items() if expires <= now]:
            del self._throttles[key]
        for key in [k for k in self._writes if not self._writing.get(k)]:
            del self._writes[key]
        wall = self.clock.now()
        for pair in [p for p, until in self._trust.items() if ensure_utc(until) <= wall]:
            del self._trust[pair]

    def _read_accounts(
        self, session: Session, wanted: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], AccountEntry | None]:
        """The accounts (None: no such account) of ``wanted`` (domain, localpart) pairs: one
        query per service."""
        localparts: dict[str, set[str]] = {}
        for domain, localpart in wanted:
            localparts.setdefault(domain, set()).add(localpart)
        found: dict[tuple[str, str], AccountEntry | None] = {}
        for domain, names in localparts.items():
            found.update({(domain, name): None for name in names})
            entry = self.hosts.get(domain)
            if entry is None:
                continue
            for account in repo.find_accounts(session, entry.host.service_id, sorted(names)):
                found[(domain, account.localpart)] = _entry_of(account)
        return found

    def _cached_account(self, domain: str, localpart: str) -> tuple[bool, AccountEntry | None]:
        cached = self._accounts.get((domain, localpart))
        if cached is not None and cached[0] > time.monotonic():
            return True, cached[1]
        return False, None

    def _keep_account(self, domain: str, localpart: str, entry: AccountEntry | None) -> None:
        ttl = self.credential_ttl if entry is not None else self.negative_ttl
        self._accounts[(domain, localpart)] = (time.monotonic() + ttl, entry)

    async def _account(self, domain: str, localpart: str) -> AccountEntry | None:
        found, cached = self._cached_account(domain, localpart)
        if found:
            return cached
        if domain not in self.hosts.hosts:
            return None
        seen = self.hosts.generation
        entry, _ = await self._reads.get((domain, localpart, True, ()))
        if seen == self.hosts.generation:  # else a change (a password reset?) may postdate it
            self._keep_account(domain, localpart, entry)
        return entry

    async def account_id(self, domain: str, localpart: str) -> str | None:
        """:class:`~imhost.hosting.dataplane.runner.AccountLookup` for the adapters (cached)."""
        entry = await self._account(domain, localpart)
        return entry.account_id if entry else None

    async def warm(self, limit: int = WARM_MAX_ACCOUNTS) -> int:
        """Read the credentials of the served hosts' accounts (up to ``limit``, those who
        signed in last first) in one read transaction, so that the logins after a restart
        read none. Returns how many were cached. A change committed meanwhile (the change
        hub) makes it give up: entries read before it could be older than it."""
        services = {e.host.service_id: d for d, e in self.hosts.hosts.items()}
        if not services or limit <= 0:
            return 0
        seen = self.hosts.generation

        def read(session: Session) -> list[tuple[str, str, AccountEntry]]:
            accounts = repo.accounts_of_services(session, sorted(services), limit)
            return [(services[a.service_id], a.localpart, _entry_of(a)) for a in accounts]

        found = await self.runner.run(read)
        if seen != self.hosts.generation:
            return 0
        for domain, localpart, entry in found:
            if self._cached_account(domain, localpart)[0]:
                continue  # read since, by a login: as new as this
            self._keep_account(domain, localpart, entry)
        return len(found)

    @property
    def throttles_read_at(self) -> float:
        """Monotonic time the last read of the held brute-force states began."""
        return self._held_read_at

    async def refresh_throttles(self) -> None:
        """Read every brute-force state with a failure or a lock on the keys XMPP logins use
        (one query on a partial index), and the first time the trusted pairs: logins whose
        keys are not among the held ones are then admitted without a read of their own for
        ``throttle_ttl`` seconds from the start of this read."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            started = time.monotonic()
            load_trust = not self._trust_loaded

            def read(
                session: Session,
            ) -> tuple[dict[str, ThrottleState] | None, dict[str, datetime]]:
                throttle = self._throttle(session)
                held = throttle.held_states(THROTTLE_PREFIXES, HELD_MAX)
                trust = throttle.trusted_pairs(PAIR_PREFIXES, TRUST_MAX) if load_trust else {}
                return held, trust

            held, trust = await self.runner.run(read)
            for pair, until in trust.items():
                self._know_trust(pair, until)
            self._trust_loaded = True
            self._held = held
            self._held_read_at = started if held is not None else -math.inf
            for key in [k for k, at in self._written_at.items() if at < started]:
                del self._written_at[key]
        finally:
            self._refreshing = False

    def _know_trust(self, pair: str, until: datetime) -> None:
        known = self._trust.get(pair)
        if known is None:
            if len(self._trust) < TRUST_MAX:
                self._trust[pair] = until
        elif ensure_utc(known) < ensure_utc(until):
            self._trust[pair] = until

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

    def model(self) -> LockoutModel:
        """The lockout model of the current settings."""
        if self._model is None or self._model[0] is not self.security:
            self._model = (self.security, policies(self.security))
        return self._model[1]

    # -- brute-force states: cached reads, writes that update the cache ----------------------

    def _cached_states(self, keys: AttemptKeys) -> dict[str, ThrottleState] | None:
        """The states of ``keys`` known without a read: each key's cached state, else what
        the periodic read of the held states says (clean when it did not return the key,
        with the trust known here), if that read began less than ``throttle_ttl`` seconds
        ago and after this node's last write on the key. None: read them."""
        now = time.monotonic()
        held = self._held
        held_ok = held is not None and now - self._held_read_at < self.throttle_ttl
        states: dict[str, ThrottleState] = {}
        for key in keys.all():
            cached = self._throttles.get(key)
            if cached is not None and cached[0] > now:
                states[key] = cached[1]
                continue
            if held is None or not held_ok or self._written_at.get(key, -1.0) >= self._held_read_at:
                return None
            state = held.get(key, _CLEAN)
            trusted = self._trust.get(key)
            if trusted is not None and (
                state.trusted_until is None or ensure_utc(state.trusted_until) < ensure_utc(trusted)
            ):
                state = dataclasses.replace(state, trusted_until=trusted)
            states[key] = state
        return states

    def _keep_states(self, states: dict[str, ThrottleState]) -> None:
        expires = time.monotonic() + self.throttle_ttl
        for key, state in states.items():
            if state.trusted_until is not None:
                self._know_trust(key, state.trusted_until)
            if self._writing.get(key):
                self._throttles.pop(key, None)  # another write will tell
                continue
            pending = self._trusted.get(key)
            if pending is not None and not state.is_trusted(pending[1]):
                # A success's trust not stored yet: the pair is trusted all the same.
                state = ThrottleState(
                    failures=state.failures,
                    last_failure_at=state.last_failure_at,
                    locked_until=state.locked_until,
                    trusted_until=pending[1] + _trust_delta(self.model()),
                )
            self._throttles[key] = (expires, state)

    def _read_many(
        self, session: Session, reads: list[_Read]
    ) -> dict[_Read, tuple[AccountEntry | None, dict[str, ThrottleState]]]:
        """The accounts and throttle states of several logins, in one read transaction (the
        states of all their keys in one query)."""
        wanted = {key for read in reads for key in read[3]}
        states = self._throttle(session).states(wanted) if wanted else {}
        accounts = self._read_accounts(session, {(r[0], r[1]) for r in reads if r[2]})
        return {
            (domain, localpart, want, keys): (
                accounts[(domain, localpart)] if want else None,
                {key: states[key] for key in keys},
            )
            for domain, localpart, want, keys in reads
        }

    async def _read_states(
        self, domain: str, localpart: str, keys: AttemptKeys
    ) -> dict[str, ThrottleState] | None:
        """The states of ``keys`` (and the account, if not cached) in one read transaction;
        None when a write on these keys began meanwhile (then the read may predate it)."""
        want_account = domain in self.hosts.hosts and not self._cached_account(domain, localpart)[0]
        seen_hosts = self.hosts.generation
        seen = [self._writes.get(k, 0) for k in keys.all()]

        entry, states = await self._reads.get((domain, localpart, want_account, tuple(keys.all())))
        if want_account and seen_hosts == self.hosts.generation:
            self._keep_account(domain, localpart, entry)
        if seen != [self._writes.get(k, 0) for k in keys.all()]:
            return None
        self._keep_states(states)
        return states

    async def _write_states(
        self, keys: Iterable[str], work: Callable[[LoginThrottleService], T]
    ) -> T:
        """Run ``work`` in a write transaction; the cache takes the states it returns (the
        last element of a tuple, or the result itself)."""
        touched = sorted(set(keys))
        for key in touched:
            self._writes[key] = self._writes.get(key, 0) + 1
            self._writing[key] = self._writing.get(key, 0) + 1
        try:
            async with self._write_lock:
                result = await self.runner.run(lambda s: work(self._throttle(s)), write=True)
        finally:
            ended = time.monotonic()
            for key in touched:
                # Counted again once committed: a read begun before this could predate it.
                self._writes[key] = self._writes.get(key, 0) + 1
                self._written_at[key] = ended
                left = self._writing[key] - 1
                if left:
                    self._writing[key] = left
                else:
                    del self._writing[key]
        states = result[-1] if isinstance(result, tuple) else result
        if isinstance(states, dict):
            self._keep_states(states)
        return result

    def _admit_in_memory(self, keys: AttemptKeys, states: dict[str, ThrottleState]) -> bool:
        if any(self._writing.get(k) for k in keys.all()):
            return False
        admission = self.model().admit_in_memory(keys, states, self._in_flight, self.clock.now())
        if admission is None:
            return False
        ticket = _Ticket(keys, admission.counted, time.monotonic())
        self._tickets.setdefault(keys, []).append(ticket)
        for key in ticket.counted:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return True

    def _trusted_lately(self, pair: str) -> bool:
        """Whether the pair's stored trust was renewed less than ``TRUST_RENEWAL`` ago (then a
        success need not write it again: a login from a known address writes nothing)."""
        if pair in self._trusted:
            return False
        cached = self._throttles.get(pair)
        if cached is not None:
            state = cached[1]
        else:
            # Not read or written lately: the periodic read says whether it holds a failure.
            until = self._trust.get(pair)
            if until is None or self._held is None or pair in self._held:
                return False
            state = ThrottleState(trusted_until=until)
        if state.trusted_until is None or state.failures or state.locked_until is not None:
            return False
        left = ensure_utc(state.trusted_until) - self.clock.now()
        return left >= _trust_delta(self.model()) - TRUST_RENEWAL

    def _release(self, ticket: _Ticket) -> None:
        """The ticket is settled or stored: it no longer counts in memory."""
        if ticket.stored:
            return
        ticket.stored = True
        for key in ticket.counted:
            left = self._in_flight.get(key, 0) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)

    def _in_flight_on(self, keys: Iterable[str]) -> dict[str, int]:
        """Count the attempts admitted in memory that share a key with ``keys`` as stored
        (the caller stores them now), and return how many per key."""
        wanted = set(keys)
        earlier: dict[str, int] = {}
        for tickets in self._tickets.values():
            for ticket in tickets:
                if ticket.stored or not wanted.intersection(ticket.counted):
                    continue
                self._release(ticket)
                for key in ticket.counted:
                    earlier[key] = earlier.get(key, 0) + 1
        return earlier

    def _take_ticket(self, keys: AttemptKeys) -> _Ticket | None:
        tickets = self._tickets.get(keys)
        if not tickets:
            return None
        ticket = tickets.pop(0)
        if not tickets:
            del self._tickets[keys]
        return ticket

    async def admit_auth(self, domain: str, localpart: str, address: str) -> AuthAdmission:
        """The web sign-in's model (accounts.throttle). In memory when nothing is held against
        the attempt's keys (see the class docstring), else decided and counted in one short
        write transaction, so parallel attempts on several connections or nodes are counted
        one after the other."""
        keys = self._auth_keys(domain, localpart, address)
        states = self._cached_states(keys)
        if states is None:
            states = await self._read_states(domain, localpart, keys)
        if states is not None and self._admit_in_memory(keys, states):
            return AuthAdmission(allowed=True)
        pairs = [k for k in keys.all() if k in self._trusted]
        earlier = self._in_flight_on(keys.all())
        trusted = [(pair, self._trusted.pop(pair)[1]) for pair in pairs]

        def admit(throttle: LoginThrottleService) -> tuple[Admission, dict[str, ThrottleState]]:
            for pair, at in trusted:
                throttle.mark_trusted(pair, at)
            return throttle.admit_after(keys, earlier)

        try:
            admission, _ = await self._write_states([*keys.all(), *earlier], admit)
        except Exception:
            for pair, at in trusted:
                self._trusted.setdefault(pair, (keys, at))
            raise
        decision = admission.decision
        if decision.allowed:
            ticket = _Ticket(keys, admission.counted, time.monotonic(), stored=True)
            self._tickets.setdefault(keys, []).append(ticket)
        return AuthAdmission(
            allowed=decision.allowed,
            delay_seconds=decision.delay_seconds,
            retry_after_seconds=decision.retry_after_seconds,
        )

    async def report_auth(self, attempt: AuthAttempt) -> None:
        if not attempt.localpart:
            self._failed_logins.append(attempt)
            if attempt.address:
                # No valid username, so no admission: count the address alone.
                key = address_key(attempt.address)
                await self._write_states([key], lambda t: {key: t.fail(key)})
            return
        keys = self._auth_keys(attempt.domain, attempt.localpart, attempt.address)
        ticket = self._take_ticket(keys)
        if attempt.success:
            self._logins.append((attempt.domain, attempt.localpart, self.clock.now()))
            if ticket is not None and not ticket.stored:
                # Admitted in memory: nothing was stored to give back. The pair's trust is
                # written with the next batch; this node knows it at once.
                self._release(ticket)
                if keys.pair is not None and not self._trusted_lately(keys.pair):
                    now = self.clock.now()
                    self._trusted[keys.pair] = (keys, now)
                    trusted_until = now + _trust_delta(self.model())
                    self._keep_states({keys.pair: ThrottleState(trusted_until=trusted_until)})
                return
            # Counted in the database: given back at once, not batched (several devices
            # behind one address that sign in within a second must not add up to a lock).
            if ticket is None:
                await self._write_states(keys.all(), lambda t: _settle_inferred(t, keys))
            else:
                settled = ticket.counted
                await self._write_states(keys.all(), lambda t: t.settle_after(keys, settled))
            return
        self._failed_logins.append(attempt)
        if ticket is not None and not ticket.stored:
            self._release(ticket)
            counted = ticket.counted
            await self._write_states(keys.all(), lambda t: t.fail_after(keys, counted))
        elif attempt.address:
            # The pair and the person were counted at admission; the address now.
            await self._write_states(keys.all(), lambda t: t.address_failure_after(keys))

    def _abandoned(self) -> list[_Ticket]:
        """Tickets admitted in memory long ago and never settled: stored as failures."""
        horizon = time.monotonic() - ABANDONED_SECONDS
        out: list[_Ticket] = []
        for keys in list(self._tickets):
            tickets = self._tickets[keys]
            old = [t for t in tickets if t.started <= horizon]
            if not old:
                continue
            tickets[:] = [t for t in tickets if t.started > horizon]
            if not tickets:
                del self._tickets[keys]
            for ticket in old:
                if not ticket.stored:
                    self._release(ticket)
                    out.append(ticket)
        return out

    async def flush_batches(self) -> None:
        """Write the queued auth-failure audit events, logins, client versions, the trust of
        pairs that signed in, and the attempts abandoned mid-exchange."""
        failed, self._failed_logins = self._failed_logins, []
        logins, self._logins = self._logins, []
        versions, self._client_versions = self._client_versions, {}
        trusted, self._trusted = self._trusted, {}
        abandoned = self._abandoned()
        if not (failed or logins or versions or trusted or abandoned):
            return
        services = {d: e.host.service_id for d, e in self.hosts.hosts.items()}
        orgs = {d: e.organization_id for d, e in self.hosts.hosts.items()}

        def write(session: Session) -> dict[str, ThrottleState]:
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
            if versions:
                hosting.record_client_versions(session, services, versions)
            throttle = self._throttle(session)
            states = throttle.mark_trusted_many({pair: at for pair, (_, at) in trusted.items()})
            for ticket in abandoned:
                for key in ticket.counted:
                    states[key] = throttle.fail(key)
            return states

        # Only the abandoned attempts' keys hold back in-memory admissions while this writes:
        # a trust mark adds no failure, so a login on a pair whose trust is being stored is
        # decided on its cached state as before (else every flush sent the next logins from
        # the same addresses through the database, one write each).
        touched = [k for t in abandoned for k in t.counted]
        try:
            await self._write_states(touched, lambda t: write(t.session))
        except Exception:
            # Keep them for the next flush (bounded): a busy database must not lose them.
            log.exception("writing %d auth events failed", len(failed) + len(logins))
            self._failed_logins[:0] = failed[-BATCH_MAX:]
            self._logins[:0] = logins[-BATCH_MAX:]
            for account, version in versions.items():
                self._client_versions.setdefault(account, version)
            for pair, mark in trusted.items():
                self._trusted.setdefault(pair, mark)
            for ticket in abandoned:
                ticket.stored = False
                ticket.started = time.monotonic() - ABANDONED_SECONDS
                self._tickets.setdefault(ticket.keys, []).append(ticket)
                for key in ticket.counted:
                    self._in_flight[key] = self._in_flight.get(key, 0) + 1
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


_CLEAN = ThrottleState()


def _entry_of(account: XmppAccount) -> AccountEntry:
    return AccountEntry(
        account_id=account.id,
        credentials={h: hosting.credentials_of(account, h) for h in ScramHash},
        disabled_reason=(account.disabled_reason or "this account is disabled")
        if account.disabled
        else None,
    )


def _trust_delta(model: LockoutModel) -> timedelta:
    return timedelta(seconds=model.trust_seconds)


def _settle_inferred(throttle: LoginThrottleService, keys: AttemptKeys) -> dict[str, ThrottleState]:
    """A success reported without an admission here: the keys counted are inferred."""
    throttle.settle_success(keys, None)
    return throttle.states(keys.all())
