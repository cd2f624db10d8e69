"""The sign-in flow under the lockout model: atomic counts, no lockout of the owner by
strangers, and no delay slept inside a database transaction (docs/security.md)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.auth import AuthFlows
from imhost.accounts.models import AuditEvent
from imhost.config import SecuritySettings
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import TooManyRequests, Unauthenticated
from tests.factories import PASSWORD, make_user

SECURITY = SecuritySettings()


def flows(clock: FrozenClock, sleep: object = None) -> AuthFlows:
    return AuthFlows(clock=clock, security=SECURITY, sleep=sleep or (lambda _s: None))  # type: ignore[arg-type]


def sign_in(
    factory: sessionmaker[Session],
    clock: FrozenClock,
    password: str,
    address: str,
    email: str = "anna@acme.example",
) -> str:
    """One sign-in in its own session, as a request would make it: 'ok', 'wrong', 'locked'."""
    with factory() as session:
        try:
            flows(clock).login(
                session, email=email, password=password, address=address, user_agent="pytest"
            )
        except Unauthenticated:
            session.commit()
            return "wrong"
        except TooManyRequests:
            session.commit()
            return "locked"
        session.commit()
        return "ok"


@pytest.fixture
def anna(session_factory: sessionmaker[Session], clock: FrozenClock) -> str:
    with session_factory() as session:
        user = make_user(session, clock, "anna@acme.example")
        session.commit()
        return user.id


def password_checks(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "login.failed")
            )
            or 0
        )


def run_in_parallel(n: int, attempt: object) -> list[str]:
    barrier = threading.Barrier(n)
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            barrier.wait(10)
            outcome = attempt(i)  # type: ignore[operator]
            with lock:
                results.append(outcome)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    return results


def test_parallel_guesses_from_one_address_reach_the_password_check_five_times_at_most(
    session_factory: sessionmaker[Session], clock: FrozenClock, anna: str
) -> None:
    results = run_in_parallel(
        12, lambda i: sign_in(session_factory, clock, f"guess {i}", "203.0.113.5")
    )
    assert sorted(results) == ["locked"] * 7 + ["wrong"] * 5
    assert password_checks(session_factory) == SECURITY.lockout_threshold


def test_parallel_guesses_from_many_addresses_reach_the_password_check_ten_times_at_most(
    session_factory: sessionmaker[Session], clock: FrozenClock, anna: str
) -> None:
    results = run_in_parallel(
        16, lambda i: sign_in(session_factory, clock, f"guess {i}", f"203.0.113.{i + 1}")
    )
    assert results.count("wrong") == SECURITY.account_failure_threshold
    assert results.count("locked") == 16 - SECURITY.account_failure_threshold
    assert password_checks(session_factory) == SECURITY.account_failure_threshold


def test_strangers_cannot_lock_the_owner_out_of_an_address_she_signed_in_from(
    session_factory: sessionmaker[Session], clock: FrozenClock, anna: str
) -> None:
    assert sign_in(session_factory, clock, PASSWORD, "192.0.2.10") == "ok"
    for n in range(30):
        sign_in(session_factory, clock, "guess", f"203.0.113.{n + 1}")
    assert sign_in(session_factory, clock, "guess", "198.51.100.1") == "locked"
    # At home she still gets in, and a typo there costs her nothing more than her own count.
    assert sign_in(session_factory, clock, "typo", "192.0.2.10") == "wrong"
    assert sign_in(session_factory, clock, PASSWORD, "192.0.2.10") == "ok"


def test_an_unknown_name_is_held_back_exactly_like_an_account(
    session_factory: sessionmaker[Session], clock: FrozenClock, anna: str
) -> None:
    real = [sign_in(session_factory, clock, "guess", "203.0.113.1") for _ in range(7)]
    ghost = [
        sign_in(session_factory, clock, "guess", "203.0.113.2", email="ghost@acme.example")
        for _ in range(7)
    ]
    assert real == ghost == ["wrong"] * 5 + ["locked"] * 2


def test_the_delay_is_slept_after_the_count_is_committed(
    session_factory: sessionmaker[Session], clock: FrozenClock, anna: str
) -> None:
    """No transaction (and so no SQLite write lock) is held while a delay is slept."""
    slept: list[tuple[float, bool]] = []
    with session_factory() as session:

        def sleep(seconds: float) -> None:
            slept.append((seconds, session.in_transaction()))

        auth = flows(clock, sleep)
        for _ in range(4):
            with pytest.raises(Unauthenticated):
                auth.login(
                    session,
                    email="anna@acme.example",
                    password="guess",
                    address="203.0.113.7",
                    user_agent=None,
                )
            session.commit()
    assert slept == [(0.5, False), (1.0, False)]


def test_many_people_behind_one_address_sign_in_at_once(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """An office or a carrier's NAT after a network blip: more right sign-ins in flight from
    one address than the address's failure threshold. In-flight attempts are not failures."""
    n = SECURITY.address_failure_threshold + 10
    with session_factory() as session:
        for i in range(n):
            make_user(session, clock, f"p{i}@office.example")
        session.commit()
    results = run_in_parallel(
        n,
        lambda i: sign_in(
            session_factory, clock, PASSWORD, "198.51.100.7", email=f"p{i}@office.example"
        ),
    )
    assert results == ["ok"] * n


def test_wrong_passwords_over_many_accounts_still_count_against_the_address(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    limit = SECURITY.address_failure_threshold
    with session_factory() as session:
        for i in range(limit + 2):
            make_user(session, clock, f"q{i}@office.example")
        session.commit()
    results = [
        sign_in(session_factory, clock, "not it", "198.51.100.8", email=f"q{i}@office.example")
        for i in range(limit + 2)
    ]
    assert results == ["wrong"] * limit + ["locked"] * 2
