"""Brute-force protection: progressive delays, then a temporary lockout that grows.

Modelled on Keycloak's brute-force detector, whose defaults are a failure factor of 30, a
wait increment of 60 s, a maximum wait of 15 minutes, a "quick login check" (a minimum wait
after two failures within a second) and a failure reset time ("max delta") of 12 hours.
Ours, from :class:`imhost.config.SecuritySettings`:

- the first failures cost nothing or a small delay the caller sleeps before answering
  (0, 0, 0.5, 1, 2 s by default): scripts slow down, people do not notice;
- ``lockout_threshold`` (5) failures lock the key for ``lockout_wait_seconds`` (60 s); each
  further failure after the lock ends locks it again for wait x (failures - threshold + 1),
  up to ``lockout_max_wait_seconds`` (15 min);
- ``lockout_reset_seconds`` (12 h) without a failure forget everything;
- a client address has its own, larger threshold (``address_failure_threshold``, 20) so one
  address cannot try many accounts; a success does not clear it.

The rules are pure functions of a :class:`ThrottleState` (a ``LoginThrottle`` row's values),
the time and a :class:`ThrottlePolicy`. :class:`LoginThrottleService` keeps states in the
database under keys such as ``account:<user id>``, ``address:<ip>``, ``totp:<user id>``,
``xmpp:<jid>`` and, for names that match no account, ``login:<sha-256 of the name>``: an
unknown name is throttled exactly like a real account, and the same :data:`LOCKED_MESSAGE`
answers both, so neither the answer nor its timing says whether an account exists.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from imhost.accounts.models import LoginThrottle
from imhost.config import SecuritySettings
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import TooManyRequests
from imhost.kit.ids import new_id

DEFAULT_DELAYS: tuple[float, ...] = (0.0, 0.0, 0.5, 1.0, 2.0)
"""Seconds to wait before answering, indexed by the failures so far (the last one repeats)."""

LOCKED_MESSAGE = "Too many failed attempts. Try again in {minutes} minutes."
"""The one answer to a locked key, whether or not the account exists."""

_KEY_MAX = 200  # LoginThrottle.key is String(200)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How many failures a key may have, and what they cost."""

    threshold: int = 5
    wait_seconds: int = 60
    max_wait_seconds: int = 900
    reset_seconds: int = 12 * 3600
    delays: tuple[float, ...] = DEFAULT_DELAYS

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError("threshold must be at least 1")
        if self.wait_seconds < 1 or self.max_wait_seconds < self.wait_seconds:
            raise ValueError("wait_seconds must be >= 1 and max_wait_seconds >= wait_seconds")
        if self.reset_seconds < 1:
            raise ValueError("reset_seconds must be at least 1")
        if not self.delays or any(d < 0 or d > 30 for d in self.delays):
            raise ValueError("delays must be a non-empty list of 0..30 seconds")

    @classmethod
    def for_accounts(cls, security: SecuritySettings) -> ThrottlePolicy:
        """Per account (and per TOTP factor, per XMPP account, per unknown login name)."""
        return cls(
            threshold=security.lockout_threshold,
            wait_seconds=security.lockout_wait_seconds,
            max_wait_seconds=max(security.lockout_max_wait_seconds, security.lockout_wait_seconds),
            reset_seconds=security.lockout_reset_seconds,
        )

    @classmethod
    def for_addresses(cls, security: SecuritySettings) -> ThrottlePolicy:
        """Per client address: a larger threshold (offices share an address), no delays."""
        return cls(
            threshold=security.address_failure_threshold,
            wait_seconds=security.lockout_wait_seconds,
            max_wait_seconds=max(security.lockout_max_wait_seconds, security.lockout_wait_seconds),
            reset_seconds=security.lockout_reset_seconds,
            delays=(0.0,),
        )

    def wait_after(self, failures: int) -> int:
        """Seconds of lockout after the ``failures``-th failure (0 below the threshold)."""
        if failures < self.threshold:
            return 0
        return min(self.wait_seconds * (failures - self.threshold + 1), self.max_wait_seconds)

    def delay_for(self, failures: int) -> float:
        """Seconds to sleep before answering the next attempt, given the failures so far."""
        return self.delays[min(failures, len(self.delays) - 1)]


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """The values of one ``LoginThrottle`` row."""

    failures: int = 0
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and ensure_utc(now) < ensure_utc(self.locked_until)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to try the credential now.

    ``allowed`` False: answer at once with :func:`locked_message` (HTTP 429, ``Retry-After:
    retry_after_seconds``) without checking the credential. ``allowed`` True: sleep
    ``delay_seconds`` (``asyncio.sleep`` / ``time.sleep``), then check it.
    """

    allowed: bool
    retry_after_seconds: int = 0
    delay_seconds: float = 0.0

    @staticmethod
    def combine(decisions: Iterable[Decision]) -> Decision:
        """One decision for several keys: refused if any refuses, the longest wait wins."""
        allowed = True
        retry_after = 0
        delay = 0.0
        for d in decisions:
            allowed = allowed and d.allowed
            retry_after = max(retry_after, d.retry_after_seconds)
            delay = max(delay, d.delay_seconds)
        if not allowed:
            return Decision(allowed=False, retry_after_seconds=retry_after)
        return Decision(allowed=True, delay_seconds=delay)


# --------------------------------------------------------------------------- pure rules


def _current(state: ThrottleState, now: datetime, policy: ThrottlePolicy) -> ThrottleState:
    """``state`` as it stands at ``now``: forgotten after a quiet period with no lock left."""
    if state.last_failure_at is None:
        return state
    quiet = ensure_utc(now) - ensure_utc(state.last_failure_at)
    if quiet >= timedelta(seconds=policy.reset_seconds) and not state.is_locked(now):
        return ThrottleState()
    return state


def check(state: ThrottleState, now: datetime, policy: ThrottlePolicy) -> Decision:
    """May an attempt be made at ``now``, and after what delay?"""
    state = _current(state, now, policy)
    if state.locked_until is not None and state.is_locked(now):
        remaining = (ensure_utc(state.locked_until) - ensure_utc(now)).total_seconds()
        return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(remaining)))
    return Decision(allowed=True, delay_seconds=policy.delay_for(state.failures))


def record_failure(state: ThrottleState, now: datetime, policy: ThrottlePolicy) -> ThrottleState:
    """The state after one more failed attempt at ``now``."""
    now = ensure_utc(now)
    state = _current(state, now, policy)
    failures = state.failures + 1
    locked_until = state.locked_until
    wait = policy.wait_after(failures)
    if wait:
        until = now + timedelta(seconds=wait)
        locked_until = until if locked_until is None else max(ensure_utc(locked_until), until)
    return ThrottleState(failures=failures, last_failure_at=now, locked_until=locked_until)


def record_success(state: ThrottleState) -> ThrottleState:
    """The state after a successful attempt: nothing held against the key any more."""
    return ThrottleState()


def locked_message(retry_after_seconds: int) -> str:
    """:data:`LOCKED_MESSAGE` for a wait, in whole minutes rounded up ("1 minute")."""
    minutes = max(1, math.ceil(retry_after_seconds / 60))
    if minutes == 1:
        return "Too many failed attempts. Try again in 1 minute."
    return LOCKED_MESSAGE.format(minutes=minutes)


def too_many_attempts(decision: Decision) -> TooManyRequests:
    """The error to raise for a refused :class:`Decision` (HTTP 429 with Retry-After)."""
    return TooManyRequests(
        locked_message(decision.retry_after_seconds),
        retry_after=decision.retry_after_seconds,
    )


# --------------------------------------------------------------------------- keys


def _bounded(prefix: str, value: str) -> str:
    key = f"{prefix}:{value}"
    if len(key) <= _KEY_MAX:
        return key
    return f"{prefix}:sha256:{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


def account_key(user_id: str) -> str:
    return _bounded("account", user_id)


def totp_key(user_id: str) -> str:
    """Failed TOTP and recovery codes of a user (the password was right: a separate count)."""
    return _bounded("totp", user_id)


def xmpp_key(jid: str) -> str:
    """Failed SASL authentications of an XMPP account (bare JID, case-insensitive)."""
    return _bounded("xmpp", jid.strip().lower())


def address_key(address: str) -> str:
    """A client address; IPv6 is counted per /64 (one subscriber's usual allocation), an
    IPv4-mapped IPv6 address as its IPv4 address."""
    raw = address.strip()
    try:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return _bounded("address", raw.lower())
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _bounded("address", str(ip.ipv4_mapped))
        return _bounded("address", str(ipaddress.IPv6Network((ip, 64), strict=False)))
    return _bounded("address", str(ip))


def login_name_key(login_name: str) -> str:
    """A login name that matches no account, hashed (people type passwords into it)."""
    canonical = login_name.strip().casefold()
    return f"login:{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def login_keys(*, address: str, user_id: str | None, login_name: str) -> list[str]:
    """The keys one password attempt counts against: the address and the account, or the
    hashed name when no account has that name (so both cases behave the same)."""
    person = account_key(user_id) if user_id is not None else login_name_key(login_name)
    return [address_key(address), person]


# --------------------------------------------------------------------------- storage


class LoginThrottleService:
    """The rules above kept in ``login_throttles``. Never commits: the caller owns the
    transaction (a failed login's count must be committed even though the login fails).

    ``policy`` is a :class:`ThrottlePolicy` or the :class:`SecuritySettings` to build both
    policies from. Keys starting with ``address:`` use ``address_policy`` (by default the
    account policy with a threshold of 20 and no delays); every other key uses ``policy``.
    """

    def __init__(
        self,
        session: Session,
        clock: Clock,
        policy: ThrottlePolicy | SecuritySettings | None = None,
        *,
        address_policy: ThrottlePolicy | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        if isinstance(policy, SecuritySettings):
            self.policy = ThrottlePolicy.for_accounts(policy)
            default_address = ThrottlePolicy.for_addresses(policy)
        else:
            self.policy = policy or ThrottlePolicy()
            default_address = replace(self.policy, threshold=20, delays=(0.0,))
        self.address_policy = address_policy or default_address

    @classmethod
    def from_settings(
        cls, session: Session, clock: Clock, security: SecuritySettings
    ) -> LoginThrottleService:
        return cls(session, clock, security)

    def policy_for(self, key: str) -> ThrottlePolicy:
        return self.address_policy if key.startswith("address:") else self.policy

    def state(self, key: str) -> ThrottleState:
        row = self.session.scalars(select(LoginThrottle).where(LoginThrottle.key == key)).first()
        return ThrottleState() if row is None else _state_of(row)

    def check(self, key: str) -> Decision:
        return check(self.state(key), self.clock.now(), self.policy_for(key))

    def check_all(self, keys: Sequence[str]) -> Decision:
        return Decision.combine(self.check(key) for key in keys)

    def fail(self, key: str) -> ThrottleState:
        """Count one failure against ``key`` (row-locked, so concurrent failures all count)."""
        row = self._row_for_update(key)
        new = record_failure(_state_of(row), self.clock.now(), self.policy_for(key))
        row.failures = new.failures
        row.last_failure_at = new.last_failure_at
        row.locked_until = new.locked_until
        self.session.flush()
        return new

    def fail_all(self, keys: Sequence[str]) -> list[ThrottleState]:
        return [self.fail(key) for key in sorted(keys)]

    def succeed(self, key: str) -> None:
        """Forget the failures of ``key`` (call it for the account key, not the address)."""
        self.session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))

    def purge_stale(self) -> int:
        """Delete rows nothing is held against any more (for a periodic job)."""
        now = self.clock.now()
        horizon = now - timedelta(
            seconds=max(self.policy.reset_seconds, self.address_policy.reset_seconds)
        )
        result = self.session.execute(
            delete(LoginThrottle)
            .where(
                or_(
                    LoginThrottle.last_failure_at.is_(None), LoginThrottle.last_failure_at < horizon
                )
            )
            .where(or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now))
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def _row_for_update(self, key: str) -> LoginThrottle:
        dialect = self.session.get_bind().dialect.name
        values = {"id": new_id(), "key": key, "failures": 0}
        if dialect == "postgresql":
            self.session.execute(
                pg_insert(LoginThrottle)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["key"])
            )
        elif dialect == "sqlite":
            self.session.execute(
                sqlite_insert(LoginThrottle)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["key"])
            )
        query = (
            select(LoginThrottle)
            .where(LoginThrottle.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        row = self.session.scalars(query).first()
        if row is None:  # another backend: plain get-or-create
            row = LoginThrottle(id=new_id(), key=key, failures=0)
            self.session.add(row)
        return row


def _state_of(row: LoginThrottle) -> ThrottleState:
    return ThrottleState(
        failures=row.failures or 0,
        last_failure_at=row.last_failure_at,
        locked_until=row.locked_until,
    )
