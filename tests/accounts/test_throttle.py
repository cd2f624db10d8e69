"""Brute-force protection: delays, lockouts that grow, reset after a quiet period."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import LoginThrottle
from imhost.accounts.throttle import (
    LOCKED_MESSAGE,
    AttemptKeys,
    Decision,
    LoginThrottleService,
    ThrottlePolicy,
    ThrottleState,
    account_key,
    account_policy,
    address_key,
    address_policy,
    attempt_keys,
    check,
    locked_message,
    login_name_key,
    login_person,
    pair_key,
    policies,
    record_failure,
    record_success,
    too_many_attempts,
    totp_key,
    xmpp_key,
)
from imhost.config import SecuritySettings
from imhost.db.engine import write_intent
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import TooManyRequests

SECURITY = SecuritySettings()
ACCOUNT = account_policy(SECURITY)
ADDRESS = address_policy(SECURITY)


def fail_times(state: ThrottleState, clock: FrozenClock, n: int) -> ThrottleState:
    for _ in range(n):
        state = record_failure(state, clock.now(), ACCOUNT)
    return state


# --------------------------------------------------------------------------- pure rules


def test_policies_come_from_the_security_settings() -> None:
    assert (ACCOUNT.threshold, ACCOUNT.wait_seconds, ACCOUNT.max_wait_seconds) == (5, 60, 900)
    assert ACCOUNT.reset_seconds == 12 * 3600
    assert ADDRESS.threshold == 20
    custom = SecuritySettings(lockout_threshold=3, address_failure_threshold=50)
    assert account_policy(custom).threshold == 3
    assert address_policy(custom).threshold == 50
    assert policies(SECURITY).person.threshold == 10


def test_five_failures_are_allowed_then_the_next_attempt_waits_sixty_seconds(
    clock: FrozenClock,
) -> None:
    state = ThrottleState()
    for _ in range(5):
        assert check(state, clock.now(), ACCOUNT).allowed
        state = record_failure(state, clock.now(), ACCOUNT)
    decision = check(state, clock.now(), ACCOUNT)
    assert decision == Decision(allowed=False, retry_after_seconds=60)
    clock.advance(59)
    assert check(state, clock.now(), ACCOUNT) == Decision(allowed=False, retry_after_seconds=1)
    clock.advance(1)
    assert check(state, clock.now(), ACCOUNT).allowed


def test_each_failure_past_the_threshold_waits_a_minute_longer_up_to_fifteen(
    clock: FrozenClock,
) -> None:
    state = fail_times(ThrottleState(), clock, 5)
    waits = []
    for _ in range(18):
        retry_after = check(state, clock.now(), ACCOUNT).retry_after_seconds
        waits.append(retry_after)
        clock.advance(retry_after)
        assert check(state, clock.now(), ACCOUNT).allowed
        state = record_failure(state, clock.now(), ACCOUNT)
    assert waits[:4] == [60, 120, 180, 240]
    assert max(waits) == 900
    assert waits[-3:] == [900, 900, 900]
    assert waits == [min(60 * n, 900) for n in range(1, 19)]


def test_twelve_quiet_hours_forget_every_failure(clock: FrozenClock) -> None:
    state = fail_times(ThrottleState(), clock, 8)
    clock.advance(timedelta(hours=12) - timedelta(seconds=1))
    # Still remembered: the next failure locks again, longer.
    remembered = record_failure(state, clock.now(), ACCOUNT)
    assert remembered.failures == 9
    clock.advance(timedelta(hours=12))
    assert check(remembered, clock.now(), ACCOUNT) == Decision(allowed=True, delay_seconds=0.0)
    fresh = record_failure(remembered, clock.now(), ACCOUNT)
    assert fresh.failures == 1
    assert fresh.locked_until is None


def test_small_progressive_delays_before_the_threshold(clock: FrozenClock) -> None:
    state = ThrottleState()
    delays = []
    for _ in range(5):
        delays.append(check(state, clock.now(), ACCOUNT).delay_seconds)
        state = record_failure(state, clock.now(), ACCOUNT)
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0]


def test_address_threshold_is_twenty_failures_without_delays(clock: FrozenClock) -> None:
    state = ThrottleState()
    for _ in range(20):
        decision = check(state, clock.now(), ADDRESS)
        assert decision.allowed and decision.delay_seconds == 0.0
        state = record_failure(state, clock.now(), ADDRESS)
    assert check(state, clock.now(), ADDRESS) == Decision(allowed=False, retry_after_seconds=60)


def test_success_clears_the_state() -> None:
    state = ThrottleState(failures=4)
    assert record_success(state) == ThrottleState()


def test_combined_decision_refuses_if_any_key_refuses() -> None:
    ok = Decision(allowed=True, delay_seconds=0.5)
    slower = Decision(allowed=True, delay_seconds=2.0)
    locked = Decision(allowed=False, retry_after_seconds=120)
    assert Decision.combine([ok, slower]) == Decision(allowed=True, delay_seconds=2.0)
    assert Decision.combine([ok, locked, slower]) == locked


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy(threshold=0)
    with pytest.raises(ValueError):
        ThrottlePolicy(wait_seconds=60, max_wait_seconds=30)
    with pytest.raises(ValueError):
        ThrottlePolicy(delays=())


def test_locked_message_never_names_the_account() -> None:
    assert locked_message(60) == "Too many failed attempts. Try again in 1 minute."
    assert locked_message(61) == LOCKED_MESSAGE.format(minutes=2)
    assert locked_message(900) == "Too many failed attempts. Try again in 15 minutes."
    error = too_many_attempts(Decision(allowed=False, retry_after_seconds=120))
    assert isinstance(error, TooManyRequests)
    assert error.retry_after == 120 and error.status == 429
    assert error.detail == locked_message(120)


@given(st.lists(st.integers(min_value=0, max_value=20 * 3600), max_size=40))
def test_a_lockout_never_exceeds_the_cap_and_every_wait_is_honest(gaps: list[int]) -> None:
    clock = FrozenClock()
    state = ThrottleState()
    for gap in gaps:
        clock.advance(gap)
        decision = check(state, clock.now(), ACCOUNT)
        if decision.allowed:
            assert decision.retry_after_seconds == 0
            assert decision.delay_seconds in ACCOUNT.delays
            before = state
            state = record_failure(state, clock.now(), ACCOUNT)
            assert state.failures >= 1
            assert state.failures in (1, before.failures + 1)
        else:
            assert 1 <= decision.retry_after_seconds <= ACCOUNT.max_wait_seconds
            assert state.locked_until is not None
            # Waiting exactly the advertised time is enough.
            later = clock.now() + timedelta(seconds=decision.retry_after_seconds)
            assert check(state, later, ACCOUNT).allowed


# --------------------------------------------------------------------------- keys


def test_keys_for_each_kind_of_attempt() -> None:
    assert account_key("u1") == "account:u1"
    assert totp_key("u1") == "totp:u1"
    assert xmpp_key(" Anna@Acme.Example ") == "xmpp:anna@acme.example"
    assert address_key("192.0.2.7") == "address:192.0.2.7"


def test_ipv6_addresses_are_counted_per_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7")
    assert address_key("testclient") == "address:testclient"


def test_long_keys_are_hashed_to_fit_the_column() -> None:
    key = xmpp_key("a" * 1000 + "@acme.example")
    assert key.startswith("xmpp:sha256:") and len(key) <= 200


def test_unknown_login_names_are_keyed_by_hash_case_insensitively() -> None:
    key = login_name_key("Nobody@Example.org ")
    assert key == login_name_key("nobody@example.org")
    assert "nobody" not in key
    assert attempt_keys(
        login_person(user_id=None, login_name="nobody@example.org"), "192.0.2.7"
    ) == (AttemptKeys(person=key, pair=f"pair:{key}@192.0.2.7", address="address:192.0.2.7"))
    assert attempt_keys(login_person(user_id="u1", login_name="x"), "192.0.2.7") == AttemptKeys(
        person="account:u1", pair="pair:account:u1@192.0.2.7", address="address:192.0.2.7"
    )
    assert attempt_keys("account:u1", "unknown") == AttemptKeys(person="account:u1")


# --------------------------------------------------------------------------- stored


def service(db: Session, clock: FrozenClock) -> LoginThrottleService:
    return LoginThrottleService(db, clock, SECURITY)


def test_stored_lockout_timeline_matches_the_pure_rules(db: Session, clock: FrozenClock) -> None:
    throttle = service(db, clock)
    keys = attempt_keys(account_key("u1"), "198.51.100.4")
    for _ in range(5):
        assert throttle.admit(keys).allowed  # counted in advance: the password was wrong
    db.commit()
    refused = throttle.admit(keys)
    assert refused.decision == Decision(allowed=False, retry_after_seconds=60)
    assert refused.counted == ()
    clock.advance(60)
    assert throttle.admit(keys).allowed
    db.commit()
    assert throttle.admit(keys).decision == Decision(allowed=False, retry_after_seconds=120)
    stored = throttle.state(pair_key(account_key("u1"), "198.51.100.4"))
    assert stored.failures == 6
    assert stored.locked_until == clock.now() + timedelta(seconds=120)
    assert stored.last_failure_at == clock.now()


def test_a_right_password_clears_the_pair_and_gives_back_the_address_count(
    db: Session, clock: FrozenClock
) -> None:
    throttle = service(db, clock)
    keys = attempt_keys(account_key("u1"), "198.51.100.4")
    for _ in range(3):
        throttle.admit(keys)
        throttle.address_failure(keys)  # wrong
    admission = throttle.admit(keys)
    throttle.settle_success(keys, admission)
    db.commit()
    assert keys.pair is not None and keys.address is not None
    pair = throttle.state(keys.pair)
    assert (pair.failures, pair.locked_until) == (0, None)
    assert pair.is_trusted(clock.now())
    assert throttle.state(keys.address).failures == 3  # a success does not clear the address
    assert throttle.state(account_key("u1")).failures == 3


def test_one_address_trying_many_accounts_is_locked_at_twenty(
    db: Session, clock: FrozenClock
) -> None:
    throttle = service(db, clock)
    for n in range(20):
        keys = attempt_keys(account_key(f"user{n}"), "203.0.113.9")
        assert throttle.admit(keys).allowed
        throttle.address_failure(keys)  # each password was wrong
    # Every account has only one failure, but the address is locked for all of them.
    fresh = throttle.admit(attempt_keys(account_key("someone-else"), "203.0.113.9"))
    assert fresh.decision == Decision(allowed=False, retry_after_seconds=60)
    assert throttle.admit(attempt_keys(account_key("user0"), "203.0.113.10")).allowed


def test_strangers_from_many_addresses_get_no_more_than_the_account_cap(
    db: Session, clock: FrozenClock
) -> None:
    throttle = service(db, clock)
    allowed = [
        throttle.admit(attempt_keys(account_key("u1"), f"203.0.113.{n}")).allowed
        for n in range(1, 40)
    ]
    assert allowed == [True] * 10 + [False] * 29


def test_strangers_cannot_lock_the_owner_out_of_an_address_it_signed_in_from(
    db: Session, clock: FrozenClock
) -> None:
    throttle = service(db, clock)
    home = attempt_keys(account_key("u1"), "192.0.2.7")
    throttle.settle_success(home, throttle.admit(home))
    for n in range(1, 40):
        throttle.admit(attempt_keys(account_key("u1"), f"203.0.113.{n}"))
    db.commit()
    assert not throttle.admit(attempt_keys(account_key("u1"), "198.51.100.1")).allowed
    assert throttle.admit(home).allowed  # the owner's own address still gets in
    # ... and a password reset lets a new address in too.
    throttle.clear_account(account_key("u1"))
    assert throttle.admit(attempt_keys(account_key("u1"), "198.51.100.1")).allowed
    assert throttle.state(home.pair or "").is_trusted(clock.now())


def test_unknown_and_existing_accounts_lock_alike(db: Session, clock: FrozenClock) -> None:
    throttle = service(db, clock)
    real = attempt_keys(account_key("u1"), "192.0.2.1")
    ghost = attempt_keys(login_name_key("ghost@acme.example"), "192.0.2.2")
    seen: dict[str, list[Decision]] = {"real": [], "ghost": []}
    for _ in range(7):
        for name, keys in (("real", real), ("ghost", ghost)):
            seen[name].append(throttle.admit(keys).decision)
    assert seen["real"] == seen["ghost"]
    assert not seen["ghost"][-1].allowed


def test_totp_codes_lock_out_on_their_own_key(db: Session, clock: FrozenClock) -> None:
    throttle = service(db, clock)
    for _ in range(5):
        assert throttle.admit(attempt_keys(totp_key("u1"), "192.0.2.1")).allowed
    assert throttle.admit(attempt_keys(totp_key("u1"), "192.0.2.1")).decision == Decision(
        allowed=False, retry_after_seconds=60
    )
    assert throttle.admit(attempt_keys(account_key("u1"), "192.0.2.1")).allowed
    assert throttle.admit(attempt_keys(totp_key("u2"), "192.0.2.1")).allowed


def test_xmpp_sasl_failures_use_the_same_model(db: Session, clock: FrozenClock) -> None:
    throttle = service(db, clock)
    keys = attempt_keys(xmpp_key("anna@acme.example"), "192.0.2.1")
    for _ in range(5):
        assert throttle.admit(keys).allowed
    assert not throttle.admit(keys).allowed


def test_a_quiet_period_unlocks_a_stored_key(db: Session, clock: FrozenClock) -> None:
    throttle = service(db, clock)
    for _ in range(9):
        throttle.fail(account_key("u1"))
    clock.advance(timedelta(hours=12))
    assert throttle.check(account_key("u1")) == Decision(allowed=True, delay_seconds=0.0)
    assert throttle.fail(account_key("u1")).failures == 1


def test_the_service_never_commits(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as first:
        service(first, clock).fail(account_key("u1"))
        first.rollback()
    with session_factory() as second:
        assert second.scalar(select(func.count()).select_from(LoginThrottle)) == 0


def test_purge_stale_removes_only_rows_nothing_is_held_against(
    db: Session, clock: FrozenClock
) -> None:
    throttle = service(db, clock)
    throttle.fail(account_key("old"))
    clock.advance(timedelta(hours=12, seconds=1))
    for _ in range(5):
        throttle.fail(account_key("recent"))
    db.commit()
    assert throttle.purge_stale() == 1
    db.commit()
    keys = set(db.scalars(select(LoginThrottle.key)))
    assert keys == {account_key("recent")}


def test_parallel_attempts_from_many_addresses_never_pass_more_than_the_threshold(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Forty attempts at once, from forty addresses: the decision and the count are one
    locked step, so exactly the account cap (10) are let through to the password check."""
    person = account_key("u1")
    barrier = threading.Barrier(8)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def guesses(worker: int) -> None:
        try:
            barrier.wait(10)
            for n in range(5):
                with session_factory() as own:
                    write_intent(own)
                    admission = LoginThrottleService(own, clock, SECURITY).admit(
                        attempt_keys(person, f"203.0.{worker}.{n}")
                    )
                    own.commit()
                with lock:
                    results.append(admission.allowed)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guesses, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 40
    assert results.count(True) == SECURITY.account_failure_threshold
    with session_factory() as check_session:
        stored = LoginThrottleService(check_session, clock, SECURITY).state(person)
        assert stored.failures == SECURITY.account_failure_threshold


def test_parallel_attempts_from_one_address_never_pass_more_than_the_threshold(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    keys = attempt_keys(account_key("u1"), "203.0.113.5")
    barrier = threading.Barrier(12)
    results: list[bool] = []
    errors: list[BaseException] = []

    def guess() -> None:
        try:
            barrier.wait(10)
            with session_factory() as own:
                write_intent(own)
                admission = LoginThrottleService(own, clock, SECURITY).admit(keys)
                own.commit()
            results.append(admission.allowed)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 12
    assert results.count(True) == SECURITY.lockout_threshold


def test_throttle_policy_can_be_given_directly(db: Session, clock: FrozenClock) -> None:
    strict = ThrottlePolicy(threshold=2, wait_seconds=30, max_wait_seconds=30)
    throttle = LoginThrottleService(db, clock, strict)
    throttle.fail(account_key("u1"))
    throttle.fail(account_key("u1"))
    assert throttle.check(account_key("u1")) == Decision(allowed=False, retry_after_seconds=30)
    assert throttle.address_policy.threshold == 20


def test_marking_many_pairs_trusted_is_marking_each(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """The batch's bulk form gives every pair the state the one-pair form gives: a new pair,
    a known one, and one whose failure came after the success keeps its failure."""
    security = SecuritySettings()
    at = clock.now()
    pairs = {pair_key(f"xmpp:u{n}@a.example", "192.0.2.7"): at for n in range(3)}
    late, known, new = sorted(pairs)
    with session_factory() as session:
        throttle = LoginThrottleService(session, clock, security)
        throttle.mark_trusted(known, at - timedelta(days=3))
        clock.advance(timedelta(seconds=5))
        throttle.fail(late)  # after ``at``
        session.commit()
        expected_late = throttle.states([late])[late]
    with session_factory() as session:
        many = LoginThrottleService(session, clock, security).mark_trusted_many(pairs)
        session.commit()
    with session_factory() as session:
        stored = LoginThrottleService(session, clock, security).states(sorted(pairs))
    assert many == stored
    assert many[late].failures == expected_late.failures == 1
    assert many[late].trusted_until is not None
    for key in (known, new):
        assert many[key].failures == 0
        assert many[key].trusted_until is not None
    assert many[known].trusted_until == many[new].trusted_until  # renewed from ``at``
    assert LoginThrottleService(session_factory(), clock, security).mark_trusted_many({}) == {}


def test_marking_many_pairs_trusted_clears_only_failures_before_every_success(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """The bulk upsert clears a pair's failure only when it came before the batch's earliest
    success (never laxer than the one-pair form) and keeps the later trust end."""
    security = SecuritySettings()
    early, old, between = (pair_key(f"xmpp:{n}@a.example", "192.0.2.8") for n in "abc")
    with session_factory() as session:
        throttle = LoginThrottleService(session, clock, security)
        throttle.fail(old)
        clock.advance(timedelta(seconds=5))
        first = clock.now()
        clock.advance(timedelta(seconds=5))
        throttle.fail(between)  # after the batch's first success, before its own
        clock.advance(timedelta(seconds=5))
        session.commit()
    with session_factory() as session:
        many = LoginThrottleService(session, clock, security).mark_trusted_many(
            {early: first, old: clock.now(), between: clock.now()}
        )
        session.commit()
    assert many[old].failures == 0 and many[old].last_failure_at is None
    assert many[between].failures == 1 and many[between].trusted_until is not None
    assert many[early].trusted_until is not None and many[early].failures == 0
    with session_factory() as session:
        stored = LoginThrottleService(session, clock, security).states([early, old, between])
    assert stored == many
    later = clock.now() + timedelta(days=1)
    with session_factory() as session:
        again = LoginThrottleService(session, clock, security).mark_trusted_many({old: later})
        session.commit()
        shorter = LoginThrottleService(session, clock, security).mark_trusted_many({old: first})
        session.commit()
    assert again[old].trusted_until is not None
    assert shorter[old].trusted_until == again[old].trusted_until  # never shortened
