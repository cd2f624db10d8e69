"""Brute-force protection, stored: the model of :mod:`imhost.kit.lockout` in the database.

Modelled on Keycloak's brute-force detector (a wait increment of 60 s, a maximum wait of 15
minutes, failures forgotten after 12 quiet hours) with OWASP's answer to "lockout as denial of
service": the hard lock is per account *and* client address, and the per-account cap holds
back only addresses the account has not signed in from. Ours, from
:class:`imhost.config.SecuritySettings`:

- the first failures cost nothing or a small delay the caller sleeps before answering
  (0, 0, 0.5, 1, 2 s by default): scripts slow down, people do not notice;
- ``lockout_threshold`` (5) failures of one account from one address lock that pair for
  ``lockout_wait_seconds`` (60 s); each further failure after the lock ends locks it again
  for wait x (failures - threshold + 1), up to ``lockout_max_wait_seconds`` (15 min);
- ``account_failure_threshold`` (10) failures of one account from addresses it has not
  signed in from (in ``trusted_address_days``, 90) hold back every such address the same
  way; an address the account signed in from is not held back, and a password reset clears
  the count;
- a client address has its own, larger threshold (``address_failure_threshold``, 20) so one
  address cannot try many accounts; a success does not clear it;
- ``lockout_reset_seconds`` (12 h) without a failure forget everything.

:class:`LoginThrottleService` keeps the states in ``login_throttles`` under keys such as
``account:<user id>``, ``pair:account:<user id>@<ip>``, ``address:<ip>``, ``totp:<user id>``,
``xmpp:<jid>`` and, for names that match no account, ``login:<sha-256 of the name>``: an
unknown name is throttled exactly like a real account seen from a new address, and the same
:data:`LOCKED_MESSAGE` answers both, so neither the answer nor its timing says whether an
account exists.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Table, bindparam, case, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from imhost.accounts.models import LoginThrottle
from imhost.config import SecuritySettings
from imhost.kit.clock import Clock, ensure_utc
from imhost.kit.errors import TooManyRequests
from imhost.kit.ids import new_id
from imhost.kit.lockout import (
    DEFAULT_DELAYS,
    Admission,
    AttemptKeys,
    Decision,
    LockoutModel,
    ThrottlePolicy,
    ThrottleState,
    check,
    record_failure,
    record_success,
)

__all__ = [
    "DEFAULT_DELAYS",
    "LOCKED_MESSAGE",
    "Admission",
    "AttemptKeys",
    "Decision",
    "LockoutModel",
    "LoginThrottleService",
    "ThrottlePolicy",
    "ThrottleState",
    "account_key",
    "address_key",
    "attempt_keys",
    "check",
    "locked_message",
    "login_name_key",
    "login_person",
    "pair_key",
    "policies",
    "record_failure",
    "record_success",
    "too_many_attempts",
    "totp_key",
    "xmpp_key",
]

LOCKED_MESSAGE = "Too many failed attempts. Try again in {minutes} minutes."
"""The one answer to a locked key, whether or not the account exists."""

_KEY_MAX = 200  # LoginThrottle.key is String(200)


def policies(security: SecuritySettings) -> LockoutModel:
    """The lockout model with the provider's settings (docs/security.md)."""
    wait = security.lockout_wait_seconds
    max_wait = max(security.lockout_max_wait_seconds, wait)
    reset = security.lockout_reset_seconds
    return LockoutModel(
        pair=ThrottlePolicy(
            threshold=security.lockout_threshold,
            wait_seconds=wait,
            max_wait_seconds=max_wait,
            reset_seconds=reset,
        ),
        person=ThrottlePolicy(
            threshold=security.account_failure_threshold,
            wait_seconds=wait,
            max_wait_seconds=max_wait,
            reset_seconds=reset,
        ),
        address=ThrottlePolicy(
            threshold=security.address_failure_threshold,
            wait_seconds=wait,
            max_wait_seconds=max_wait,
            reset_seconds=reset,
            delays=(0.0,),
        ),
        trust_seconds=security.trusted_address_days * 86400,
    )


def account_policy(security: SecuritySettings) -> ThrottlePolicy:
    """Per account and address (and per TOTP factor, XMPP account, unknown login name)."""
    return policies(security).pair


def address_policy(security: SecuritySettings) -> ThrottlePolicy:
    """Per client address: a larger threshold (offices share an address), no delays."""
    return policies(security).address


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


@functools.lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """A client address; IPv6 is counted per /64 (one subscriber's usual allocation), an
    IPv4-mapped IPv6 address as its IPv4 address. (Kept for the latest 4,096 addresses: every
    XMPP login asks twice, and parsing an address costs more than the rest of the keys.)"""
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


def pair_key(person: str, address: str) -> str:
    """One account (``person`` is its key) from one client address (IPv6 per /64)."""
    return _bounded("pair", f"{person}@{address_key(address).removeprefix('address:')}")


def attempt_keys(person: str, address: str | None) -> AttemptKeys:
    """The keys an attempt at ``person`` from ``address`` counts under ("" or None: the
    address is not known, so only the account counts)."""
    if not address or address == "unknown":
        return AttemptKeys(person=person)
    return AttemptKeys(person=person, pair=pair_key(person, address), address=address_key(address))


def login_person(*, user_id: str | None, login_name: str) -> str:
    """The account key of a sign-in: the account, or the hashed name when none has it."""
    return account_key(user_id) if user_id is not None else login_name_key(login_name)


# --------------------------------------------------------------------------- storage


class LoginThrottleService:
    """The model kept in ``login_throttles``. Never commits: the caller owns the transaction.

    :meth:`admit` decides an attempt and counts it in advance under row locks (so parallel
    attempts are counted one after the other); :meth:`settle_success` gives the count back
    when the credential was right. A wrong credential needs nothing more: it was counted.

    ``policy`` is the :class:`SecuritySettings` to build the model from, or a
    :class:`ThrottlePolicy` used for the pair and the account alike (tests).
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
            model = policies(policy)
        else:
            base = policy or ThrottlePolicy()
            model = LockoutModel(
                pair=base,
                person=base,
                address=ThrottlePolicy(
                    threshold=20,
                    wait_seconds=base.wait_seconds,
                    max_wait_seconds=base.max_wait_seconds,
                    reset_seconds=base.reset_seconds,
                    delays=(0.0,),
                ),
            )
        if address_policy is not None:
            model = LockoutModel(
                pair=model.pair,
                person=model.person,
                address=address_policy,
                trust_seconds=model.trust_seconds,
            )
        self.model = model
        self.policy = model.pair
        self.address_policy = model.address

    @classmethod
    def from_settings(
        cls, session: Session, clock: Clock, security: SecuritySettings
    ) -> LoginThrottleService:
        return cls(session, clock, security)

    def policy_for(self, key: str) -> ThrottlePolicy:
        if key.startswith("address:"):
            return self.model.address
        if key.startswith("pair:"):
            return self.model.pair
        return self.model.person

    def state(self, key: str) -> ThrottleState:
        row = self.session.scalars(select(LoginThrottle).where(LoginThrottle.key == key)).first()
        return ThrottleState() if row is None else _state_of(row)

    def check(self, key: str) -> Decision:
        """A look at one key, for reports; attempts go through :meth:`admit`."""
        return check(self.state(key), self.clock.now(), self.policy_for(key))

    def admit(self, keys: AttemptKeys) -> Admission:
        """Decide an attempt and count it as a failure in advance (row-locked, in key order,
        so parallel attempts are decided one at a time and never more than a threshold pass).
        """
        rows = {key: self._row_for_update(key) for key in keys.all()}
        states = {key: _state_of(row) for key, row in rows.items()}
        admission, new = self.model.admit(keys, states, self.clock.now())
        for key, state in new.items():
            _store(rows[key], state)
        self.session.flush()
        return admission

    def settle_success(self, keys: AttemptKeys, admission: Admission | None) -> None:
        """The credential was right: clear and trust the pair, give the other counts back."""
        rows = {key: self._row_for_update(key) for key in keys.all()}
        states = {key: _state_of(row) for key, row in rows.items()}
        for key, state in self.model.settle_success(
            keys, admission, states, self.clock.now()
        ).items():
            _store(rows[key], state)
        self.session.flush()

    # -- the data plane's fast path (hosting/dataplane/auth.py) -----------------------------

    def states(self, keys: Iterable[str]) -> dict[str, ThrottleState]:
        """The stored states of ``keys`` (one plain read, no lock; a missing key is clean)."""
        wanted = sorted(set(keys))
        rows = self.session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(wanted)))
        found = {row.key: _state_of(row) for row in rows}
        return {key: found.get(key, ThrottleState()) for key in wanted}

    def held_states(self, prefixes: Sequence[str], limit: int) -> dict[str, ThrottleState] | None:
        """The states of every key starting with one of ``prefixes`` that has something held
        against it (a failure or a lock): one read, on the partial index of such rows. A key
        not returned is clean but for its trust. None when there are more than ``limit``."""
        held = or_(LoginThrottle.failures > 0, LoginThrottle.locked_until.is_not(None))
        rows = self.session.execute(
            select(
                LoginThrottle.key,
                LoginThrottle.failures,
                LoginThrottle.last_failure_at,
                LoginThrottle.locked_until,
                LoginThrottle.trusted_until,
            )
            .where(held, _starts_with_any(prefixes))
            .limit(limit + 1)
        ).all()
        if len(rows) > limit:
            return None
        return {
            key: ThrottleState(
                failures=failures or 0,
                last_failure_at=last_failure_at,
                locked_until=locked_until,
                trusted_until=trusted_until,
            )
            for key, failures, last_failure_at, locked_until, trusted_until in rows
        }

    def trusted_pairs(self, prefixes: Sequence[str], limit: int) -> dict[str, datetime]:
        """Pair key -> trusted until, for the trusted pairs starting with one of ``prefixes``
        (the latest ``limit``; trust is only ever extended until it expires)."""
        rows = self.session.execute(
            select(LoginThrottle.key, LoginThrottle.trusted_until)
            .where(
                _starts_with_any(prefixes),
                LoginThrottle.trusted_until > self.clock.now(),
            )
            .order_by(LoginThrottle.trusted_until.desc())
            .limit(limit)
        ).all()
        return {key: until for key, until in rows if until is not None}

    def _locked(
        self, keys: Iterable[str]
    ) -> tuple[dict[str, LoginThrottle], dict[str, ThrottleState]]:
        rows = {key: self._row_for_update(key) for key in sorted(set(keys))}
        return rows, {key: _state_of(row) for key, row in rows.items()}

    def _store_all(
        self, rows: Mapping[str, LoginThrottle], new: Mapping[str, ThrottleState]
    ) -> dict[str, ThrottleState]:
        for key, state in new.items():
            _store(rows[key], state)
        self.session.flush()
        return {key: _state_of(row) for key, row in rows.items()}

    def admit_after(
        self, keys: AttemptKeys, earlier: Mapping[str, int]
    ) -> tuple[Admission, dict[str, ThrottleState]]:
        """:meth:`admit`, once ``earlier`` attempts (per key) admitted in memory and still in
        flight are counted (:meth:`LockoutModel.admit_in_memory`): the admission, and the
        stored states of every key it locked."""
        rows, states = self._locked([*keys.all(), *earlier])
        now = self.clock.now()
        for key, n in earlier.items():
            for _ in range(n):
                states[key] = record_failure(states[key], now, self.policy_for(key))
        admission, new = self.model.admit(keys, states, now)
        return admission, self._store_all(rows, {**states, **new})

    def settle_after(self, keys: AttemptKeys, counted: Sequence[str]) -> dict[str, ThrottleState]:
        """:meth:`settle_success` of an attempt counted in advance under ``counted``; the
        stored states of its keys."""
        rows, states = self._locked(keys.all())
        admission = Admission(Decision(allowed=True), tuple(counted))
        new = self.model.settle_success(keys, admission, states, self.clock.now())
        return self._store_all(rows, new)

    def fail_after(self, keys: AttemptKeys, counted: Sequence[str]) -> dict[str, ThrottleState]:
        """A wrong credential admitted in memory: its failure on ``counted`` and the address
        (:meth:`LockoutModel.failure_after`); the stored states of its keys."""
        rows, states = self._locked([*keys.all(), *counted])
        new = self.model.failure_after(keys, counted, states, self.clock.now())
        return self._store_all(rows, new)

    def address_failure_after(self, keys: AttemptKeys) -> dict[str, ThrottleState]:
        """:meth:`address_failure`, returning the stored states of the attempt's keys."""
        rows, states = self._locked(keys.all())
        new = self.model.address_failure(keys, states, self.clock.now())
        return self._store_all(rows, new)

    def mark_trusted(self, pair: str, at: datetime) -> ThrottleState:
        """The account signed in from this address at ``at`` (a success admitted in memory,
        written later in a batch): the pair is trusted and, unless a failure came after
        ``at``, cleared (what :meth:`LockoutModel.settle_success` does to a pair)."""
        row = self._row_for_update(pair)
        state = self._trusted_state(_state_of(row), at)
        _store(row, state)
        self.session.flush()
        return state

    def mark_trusted_many(self, pairs: Mapping[str, datetime]) -> dict[str, ThrottleState]:
        """:meth:`mark_trusted` for many pairs at once (the batch after a burst of logins).

        On SQLite and PostgreSQL one ``INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING``
        statement per 500 pairs, evaluated by the database under its own row lock (no ORM
        rows, no separate lock and flush): a missing row is inserted trusted and clean; an
        existing one keeps the later of the two trust ends and is cleared unless a failure came
        after the batch's earliest success (stricter than each pair's own success time, never
        laxer). Other backends: a locked get-or-create per pair."""
        if not pairs:
            return {}
        keys = sorted(pairs)
        dialect = self.session.get_bind().dialect.name
        if dialect not in ("postgresql", "sqlite"):
            out: dict[str, ThrottleState] = {}
            for key in keys:
                row = self._row_for_update(key)
                out[key] = self._trusted_state(_state_of(row), pairs[key])
                _store(row, out[key])
            self.session.flush()
            return out
        trust = timedelta(seconds=self.model.trust_seconds)
        earliest = min(ensure_utc(at) for at in pairs.values())
        table = cast(Table, LoginThrottle.__table__)
        c = table.c
        states: dict[str, ThrottleState] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(table)
            rows = [
                {
                    "id": new_id(),
                    "key": key,
                    "failures": 0,
                    "last_failure_at": None,
                    "locked_until": None,
                    "trusted_until": ensure_utc(pairs[key]) + trust,
                }
                for key in chunk
            ]
            at = bindparam("b_earliest", earliest, type_=c.last_failure_at.type)
            cleared = or_(c.last_failure_at.is_(None), c.last_failure_at <= at)
            statement = (
                insert.values(rows)
                .on_conflict_do_update(
                    index_elements=["key"],
                    set_={
                        "trusted_until": case(
                            (
                                or_(
                                    c.trusted_until.is_(None),
                                    c.trusted_until < insert.excluded.trusted_until,
                                ),
                                insert.excluded.trusted_until,
                            ),
                            else_=c.trusted_until,
                        ),
                        "failures": case((cleared, 0), else_=c.failures),
                        "last_failure_at": case((cleared, None), else_=c.last_failure_at),
                        "locked_until": case((cleared, None), else_=c.locked_until),
                    },
                )
                .returning(c.key, c.failures, c.last_failure_at, c.locked_until, c.trusted_until)
            )
            for key, failures, last_failure_at, locked_until, trusted_until in self.session.execute(
                statement
            ):
                states[key] = ThrottleState(
                    failures=failures or 0,
                    last_failure_at=last_failure_at,
                    locked_until=locked_until,
                    trusted_until=trusted_until,
                )
        return states

    def _trusted_state(self, state: ThrottleState, at: datetime) -> ThrottleState:
        trusted_until = ensure_utc(at) + timedelta(seconds=self.model.trust_seconds)
        if state.trusted_until is not None:
            trusted_until = max(trusted_until, ensure_utc(state.trusted_until))
        if state.last_failure_at is None or ensure_utc(state.last_failure_at) <= ensure_utc(at):
            return ThrottleState(trusted_until=trusted_until)
        return ThrottleState(
            failures=state.failures,
            last_failure_at=state.last_failure_at,
            locked_until=state.locked_until,
            trusted_until=trusted_until,
        )

    def address_failure(self, keys: AttemptKeys) -> None:
        """A credential turned out wrong: count it against the client address (row-locked);
        the pair and the person were counted when the attempt was admitted."""
        if keys.address is None:
            return
        row = self._row_for_update(keys.address)
        new = self.model.address_failure(keys, {keys.address: _state_of(row)}, self.clock.now())
        for state in new.values():
            _store(row, state)
        self.session.flush()

    def fail(self, key: str) -> ThrottleState:
        """Count one failure against ``key`` alone (row-locked)."""
        row = self._row_for_update(key)
        new = record_failure(_state_of(row), self.clock.now(), self.policy_for(key))
        _store(row, new)
        self.session.flush()
        return new

    def fail_all(self, keys: Sequence[str]) -> list[ThrottleState]:
        return [self.fail(key) for key in sorted(keys)]

    def succeed(self, key: str) -> None:
        """Forget the failures of ``key`` (a password reset clears the account this way)."""
        self.session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))

    def clear_account(self, person: str) -> None:
        """Forget every failure held against an account, from every address (a password
        reset: the owner proved themselves by e-mail). Trust is kept."""
        self.session.execute(
            delete(LoginThrottle).where(
                or_(
                    LoginThrottle.key == person,
                    LoginThrottle.key.startswith(f"pair:{person}@", autoescape=True),
                ),
                LoginThrottle.trusted_until.is_(None),
            )
        )
        for row in self.session.scalars(
            select(LoginThrottle).where(
                LoginThrottle.key.startswith(f"pair:{person}@", autoescape=True),
                LoginThrottle.trusted_until.is_not(None),
            )
        ):
            row.failures = 0
            row.last_failure_at = None
            row.locked_until = None
        self.session.flush()

    def purge_stale(self) -> int:
        """Delete rows nothing is held against any more (for a periodic job)."""
        now = self.clock.now()
        horizon = now - timedelta(
            seconds=max(
                self.model.pair.reset_seconds,
                self.model.person.reset_seconds,
                self.model.address.reset_seconds,
            )
        )
        result = self.session.execute(
            delete(LoginThrottle)
            .where(
                or_(
                    LoginThrottle.last_failure_at.is_(None), LoginThrottle.last_failure_at < horizon
                )
            )
            .where(or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now))
            .where(or_(LoginThrottle.trusted_until.is_(None), LoginThrottle.trusted_until <= now))
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


def _starts_with_any(prefixes: Sequence[str]) -> ColumnElement[bool]:
    return or_(*(LoginThrottle.key.startswith(p, autoescape=True) for p in prefixes))


def _state_of(row: LoginThrottle) -> ThrottleState:
    return ThrottleState(
        failures=row.failures or 0,
        last_failure_at=row.last_failure_at,
        locked_until=row.locked_until,
        trusted_until=row.trusted_until,
    )


def _store(row: LoginThrottle, state: ThrottleState) -> None:
    row.failures = state.failures
    row.last_failure_at = state.last_failure_at
    row.locked_until = state.locked_until
    row.trusted_until = state.trusted_until


# --------------------------------------------------------------------------- e-mail requests

TOO_MANY_REQUESTS = "Too many requests. Try again in {minutes} minutes."


def email_request_policy(threshold: int) -> ThrottlePolicy:
    """``threshold`` requests, then an hour's wait; an hour without one forgets them."""
    return ThrottlePolicy(
        threshold=threshold,
        wait_seconds=3600,
        max_wait_seconds=3600,
        reset_seconds=3600,
        delays=(0.0,),
    )


def admit_email_request(
    session: Session,
    clock: Clock,
    security: SecuritySettings,
    *,
    purpose: str,
    email: str,
    address: str | None,
) -> None:
    """Count a request that sends an e-mail (a password reset, a sign-up) against the e-mail
    address (``email_requests_per_hour``) and the client address (four times as many);
    raise :class:`TooManyRequests` past either. Counted whether or not an account exists,
    so the answer tells nothing."""
    per_email = email_request_policy(security.email_requests_per_hour)
    per_address = email_request_policy(4 * security.email_requests_per_hour)
    digest = hashlib.sha256(email.strip().casefold().encode("utf-8")).hexdigest()
    person = f"{purpose}-mail:{digest}"
    keys = AttemptKeys(person=person)
    if address and address != "unknown":
        keys = AttemptKeys(
            person=person,
            address=_bounded(f"{purpose}-address", address_key(address).removeprefix("address:")),
        )
    throttle = LoginThrottleService(session, clock, per_email, address_policy=per_address)
    admission = throttle.admit(keys)
    if admission.allowed:
        throttle.address_failure(keys)  # every request counts here, not only failures
    if not admission.allowed:
        minutes = max(1, math.ceil(admission.decision.retry_after_seconds / 60))
        raise TooManyRequests(
            TOO_MANY_REQUESTS.format(minutes=minutes),
            retry_after=admission.decision.retry_after_seconds,
        )
