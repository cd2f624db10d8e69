"""SASL PLAIN on SCRAM-only storage: one key derivation for a new password, one HMAC for a
password this process verified already (docs/security.md, "PLAIN passwords are verified once
per process")."""

from __future__ import annotations

import pytest

from imhost.kit.scram import ScramCredentials, ScramHash
from imhost.xmpp.core import sasl
from imhost.xmpp.core.sasl import SaslExchange, Step, VerifiedPasswords
from imhost.xmpp.memory import MemoryBackend

pytestmark = pytest.mark.anyio

DOMAIN = "plain.example"


@pytest.fixture
def backend() -> MemoryBackend:
    backend = MemoryBackend(iterations=64)
    backend.add_host(DOMAIN)
    backend.create_account(DOMAIN, "alice", "correct horse")
    return backend


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[ScramHash]:
    """The key derivations PLAIN runs (the real one, counted)."""
    seen: list[ScramHash] = []
    real = sasl.verify_plain

    def counted(password: str, creds: ScramCredentials, h: ScramHash) -> bool:
        seen.append(h)
        return real(password, creds, h)

    monkeypatch.setattr(sasl, "verify_plain", counted)
    monkeypatch.setattr(sasl, "verified_passwords", VerifiedPasswords())
    return seen


async def _plain(backend: MemoryBackend, user: str, password: str) -> Step:
    exchange = SaslExchange(
        "PLAIN",
        auth=backend,
        domain=DOMAIN,
        address="192.0.2.1",
        secret=b"s" * 32,
        channel_bindings={},
    )
    outcome = await exchange.start(f"\0{user}\0{password}".encode())
    return outcome.step


async def test_a_repeat_plain_login_derives_no_key(
    backend: MemoryBackend, derivations: list[ScramHash]
) -> None:
    assert await _plain(backend, "alice", "correct horse") is Step.SUCCESS
    assert derivations == [ScramHash.SHA1]  # one hash, not both
    for _ in range(5):
        assert await _plain(backend, "alice", "correct horse") is Step.SUCCESS
    assert derivations == [ScramHash.SHA1]


async def test_wrong_passwords_are_derived_every_time_and_never_kept(
    backend: MemoryBackend, derivations: list[ScramHash]
) -> None:
    assert await _plain(backend, "alice", "correct horse") is Step.SUCCESS
    for _ in range(2):
        assert await _plain(backend, "alice", "wrong horse") is Step.FAILURE
    assert len(derivations) == 3
    assert len(sasl.verified_passwords) == 1


async def test_a_changed_password_never_matches_an_old_entry(
    backend: MemoryBackend, derivations: list[ScramHash]
) -> None:
    assert await _plain(backend, "alice", "correct horse") is Step.SUCCESS
    await backend.set_password(DOMAIN, "alice", "battery staple")
    assert await _plain(backend, "alice", "correct horse") is Step.FAILURE
    assert await _plain(backend, "alice", "battery staple") is Step.SUCCESS
    assert len(derivations) == 3


async def test_an_unknown_account_is_derived_and_refused_every_time(
    backend: MemoryBackend, derivations: list[ScramHash]
) -> None:
    for _ in range(2):
        assert await _plain(backend, "nobody", "correct horse") is Step.FAILURE
    assert len(derivations) == 2
    assert len(sasl.verified_passwords) == 0


def test_the_cache_is_bounded_and_drops_the_oldest_first() -> None:
    cache = VerifiedPasswords(max_entries=2)
    creds = [ScramCredentials(b"salt", 64, bytes([n]) * 20, b"k" * 20) for n in range(3)]
    for c in creds:
        cache.add(c, "pw")
    assert len(cache) == 2
    assert (creds[0], "pw") not in cache
    assert (creds[1], "pw") in cache and (creds[2], "pw") in cache
    assert (creds[2], "other") not in cache
