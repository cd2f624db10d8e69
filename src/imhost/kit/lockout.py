"""The one brute-force model of every password and code check (web, API, TOTP, XMPP).

Pure rules over :class:`ThrottleState` values; where the states live (database rows in
``accounts.throttle``, a dictionary in the in-memory XMPP backend) is the caller's business.
docs/security.md ("Brute-force protection") explains the model; in short, one attempt at an
account from a client address counts under three keys:

- the **pair** (this account from this address): the hard lock. ``threshold`` failures lock
  the pair with a wait that grows by ``wait_seconds`` per further failure, up to
  ``max_wait_seconds``. A stranger guessing from one address is stopped here, and only that
  address is locked: the owner elsewhere is not.
- the **person** (the account, whatever the address): a cap on the failures of *strangers*,
  i.e. addresses the account has not signed in from lately. Past it, strangers get growing
  delays and then waits, so a botnet with many addresses gets no more guesses than one
  address would. An address the account signed in from (a *trusted* pair, for
  ``trust_seconds``) is not held back by the cap, and a password reset clears it: guessing
  strangers cannot lock the owner out (OWASP's "lockout as denial of service"; the same idea
  as its "device cookies", keyed by address so that XMPP clients get it too).
- the **address** (any account from this address): a larger threshold, no delays, so one
  address cannot spread its guesses over many accounts. A success does not clear it.

Atomicity: :meth:`LockoutModel.admit` counts the attempt as a failure *before* the credential
is checked, under the same lock as the decision, so parallel attempts can never get more
than ``threshold`` checks past a limit. A right credential then gives its count back
(:meth:`LockoutModel.settle_success`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from imhost.kit.clock import ensure_utc

DEFAULT_DELAYS: tuple[float, ...] = (0.0, 0.0, 0.5, 1.0, 2.0)
"""Seconds to wait before answering, indexed by the failures so far (the last one repeats)."""


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
    """What is held against one key."""

    failures: int = 0
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None
    trusted_until: datetime | None = None
    """Pairs only: the account signed in from this address; the person cap does not apply."""

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and ensure_utc(now) < ensure_utc(self.locked_until)

    def is_trusted(self, now: datetime) -> bool:
        return self.trusted_until is not None and ensure_utc(now) < ensure_utc(self.trusted_until)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to try the credential now.

    ``allowed`` False: answer at once (HTTP 429 with ``Retry-After: retry_after_seconds``, or
    SASL ``temporary-auth-failure``) without checking the credential. ``allowed`` True: sleep
    ``delay_seconds``, then check it.
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


def _current(state: ThrottleState, now: datetime, policy: ThrottlePolicy) -> ThrottleState:
    """``state`` as it stands at ``now``: failures forgotten after a quiet period with no lock
    left (trust is kept)."""
    if state.last_failure_at is None:
        return state
    quiet = ensure_utc(now) - ensure_utc(state.last_failure_at)
    if quiet >= timedelta(seconds=policy.reset_seconds) and not state.is_locked(now):
        return ThrottleState(trusted_until=state.trusted_until)
    return state


def check(state: ThrottleState, now: datetime, policy: ThrottlePolicy) -> Decision:
    """May an attempt be made at ``now``, and after what delay?"""
    state = _current(state, now, policy)
    if state.locked_until is not None and state.is_locked(now):
        remaining = (ensure_utc(state.locked_until) - ensure_utc(now)).total_seconds()
        return Decision(allowed=False, retry_after_seconds=max(1, math.ceil(remaining)))
    return Decision(allowed=True, delay_seconds=policy.delay_for(state.failures))


def _clean(state: ThrottleState) -> bool:
    """No failure and no lock (trust aside)."""
    return not state.failures and state.locked_until is None


_ALLOWED = Decision(allowed=True, delay_seconds=0.0)


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
    return ThrottleState(
        failures=failures,
        last_failure_at=now,
        locked_until=locked_until,
        trusted_until=state.trusted_until,
    )


def record_success(state: ThrottleState) -> ThrottleState:
    """The state after a successful attempt: nothing held against the key any more."""
    return ThrottleState(trusted_until=state.trusted_until)


def give_back(state: ThrottleState, policy: ThrottlePolicy) -> ThrottleState:
    """Undo one failure counted in advance (the credential turned out right)."""
    failures = max(0, state.failures - 1)
    locked_until = state.locked_until if failures >= policy.threshold else None
    return ThrottleState(
        failures=failures,
        last_failure_at=state.last_failure_at if failures else None,
        locked_until=locked_until,
        trusted_until=state.trusted_until,
    )


@dataclass(frozen=True, slots=True)
class AttemptKeys:
    """The keys one attempt counts under (see the module docstring)."""

    person: str
    pair: str | None = None
    address: str | None = None
    """None when the client address is not known (then only ``person`` counts)."""

    def all(self) -> list[str]:
        return sorted(k for k in (self.person, self.pair, self.address) if k is not None)


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision on one attempt and the keys it was counted under in advance."""

    decision: Decision
    counted: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


@dataclass(frozen=True, slots=True)
class LockoutModel:
    """The three policies and how long a successful address stays trusted."""

    pair: ThrottlePolicy
    person: ThrottlePolicy
    address: ThrottlePolicy
    trust_seconds: int = 90 * 86400

    def policy_for(self, keys: AttemptKeys, key: str) -> ThrottlePolicy:
        if key == keys.address:
            return self.address
        if key == keys.pair:
            return self.pair
        return self.person

    def admit(
        self, keys: AttemptKeys, states: Mapping[str, ThrottleState], now: datetime
    ) -> tuple[Admission, dict[str, ThrottleState]]:
        """Decide an attempt and, when it is allowed, count it as a failure already.

        Returns the admission and the new states to store (empty when refused: a refused
        attempt checks nothing and so counts nothing). The caller must hold every key's lock
        from reading ``states`` to storing the result.
        """
        empty = ThrottleState()
        trusted = keys.pair is not None and states.get(keys.pair, empty).is_trusted(now)
        enforced = [k for k in keys.all() if not (k == keys.person and trusted)]
        decision = Decision.combine(
            check(states.get(k, empty), now, self.policy_for(keys, k)) for k in enforced
        )
        if not decision.allowed:
            return Admission(decision), {}
        # The address is checked, not counted in advance: many people behind one address
        # (an office, a carrier's NAT) signing in at once after a network blip are many
        # attempts in flight, not failures. Its failures are counted when they happen
        # (:meth:`address_failure`); the pair and the person, where parallel guesses matter,
        # are counted before the check.
        counted = [k for k in enforced if k != keys.address]
        new = {
            k: record_failure(states.get(k, empty), now, self.policy_for(keys, k)) for k in counted
        }
        return Admission(decision, tuple(counted)), new

    def admit_in_memory(
        self,
        keys: AttemptKeys,
        states: Mapping[str, ThrottleState],
        in_flight: Mapping[str, int],
        now: datetime,
    ) -> Admission | None:
        """The admission of an attempt that needs no stored count, or None (store it).

        ``states`` are the stored states of ``keys``; ``in_flight`` the attempts admitted this
        way and not settled yet, per key: they count as failures, exactly as :meth:`admit`
        would have counted them in advance. An attempt is admitted here only when nothing is
        stored against the keys it would count (no failure, no lock), the address is not
        locked and the decision has no delay; the caller then counts it in ``in_flight`` until
        it settles (a success needs no stored change but the pair's trust, a failure is
        stored then with :meth:`failure_after`). Anything else goes through :meth:`admit`,
        with the attempts still in flight counted first.
        """
        empty = ThrottleState()
        ordered = keys.all()
        # The usual login: nothing held against any key, nothing in flight on them. What
        # :meth:`admit` would decide, without building the states it would store.
        if (
            not any(in_flight.get(k) for k in ordered)
            and all(_clean(states.get(k, empty)) for k in ordered)
            and self.pair.delays[0] == self.person.delays[0] == self.address.delays[0] == 0
        ):
            trusted = keys.pair is not None and states.get(keys.pair, empty).is_trusted(now)
            counted = tuple(
                k for k in ordered if k != keys.address and not (k == keys.person and trusted)
            )
            return Admission(_ALLOWED, counted)
        effective = {}
        for key in ordered:
            state = states.get(key, empty)
            for _ in range(in_flight.get(key, 0)):
                state = record_failure(state, now, self.policy_for(keys, key))
            effective[key] = state
        admission, _ = self.admit(keys, effective, now)
        if not admission.allowed or admission.decision.delay_seconds > 0:
            return None
        for key in admission.counted:
            state = _current(states.get(key, empty), now, self.policy_for(keys, key))
            if state.failures or state.is_locked(now):
                return None
        return admission

    def failure_after(
        self,
        keys: AttemptKeys,
        counted: Iterable[str],
        states: Mapping[str, ThrottleState],
        now: datetime,
    ) -> dict[str, ThrottleState]:
        """A credential admitted by :meth:`admit_in_memory` turned out wrong: the failure it
        was not counted for in advance goes on ``counted``, and the address's on the
        address (what :meth:`admit` and :meth:`address_failure` would have stored)."""
        empty = ThrottleState()
        new = {
            key: record_failure(states.get(key, empty), now, self.policy_for(keys, key))
            for key in counted
        }
        new.update(self.address_failure(keys, states, now))
        return new

    def address_failure(
        self, keys: AttemptKeys, states: Mapping[str, ThrottleState], now: datetime
    ) -> dict[str, ThrottleState]:
        """A credential turned out wrong: the address's count goes up (the others were
        counted at admission). Empty when the address is not known."""
        if keys.address is None:
            return {}
        state = states.get(keys.address, ThrottleState())
        return {keys.address: record_failure(state, now, self.address)}

    def settle_success(
        self,
        keys: AttemptKeys,
        admission: Admission | None,
        states: Mapping[str, ThrottleState],
        now: datetime,
    ) -> dict[str, ThrottleState]:
        """The credential was right: the pair is cleared and trusted, the other keys get
        back the failure counted in advance (the person's count of strangers' failures stays:
        one right password does not excuse the guesses of other addresses).

        ``admission`` None: the keys counted are inferred (all, but the person when the pair
        is trusted), for callers that do not keep the admission.
        """
        empty = ThrottleState()
        if admission is not None:
            counted: tuple[str, ...] = admission.counted
        else:
            trusted = keys.pair is not None and states.get(keys.pair, empty).is_trusted(now)
            counted = tuple(
                k for k in keys.all() if k != keys.address and not (k == keys.person and trusted)
            )
        new: dict[str, ThrottleState] = {}
        for key in counted:
            state = states.get(key, empty)
            if key == keys.pair:
                new[key] = ThrottleState(
                    trusted_until=ensure_utc(now) + timedelta(seconds=self.trust_seconds)
                )
            else:
                new[key] = give_back(state, self.policy_for(keys, key))
        if keys.pair is not None and keys.pair not in new:
            new[keys.pair] = ThrottleState(
                trusted_until=ensure_utc(now) + timedelta(seconds=self.trust_seconds)
            )
        return new
