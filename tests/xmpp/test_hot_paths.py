"""What the benchmark's profile changed: when output is written, and what a PLAIN login costs."""

from __future__ import annotations

import os

import pytest

from imhost.kit.scram import ScramHash, derive_credentials
from imhost.xmpp.core.sasl import kdf_executor
from imhost.xmpp.memory import MemoryAccount

from .harness import DOMAIN, Harness

pytestmark = pytest.mark.anyio


async def test_a_message_is_written_when_the_read_that_carried_it_is_parsed() -> None:
    """No wait for the end of the event-loop iteration: after a busy iteration the first
    messages read would otherwise wait for the last one (the p99 at high rates)."""
    async with Harness() as h:
        a = await h.online("alice")
        b = await h.online("bob")
        before = len(b.transport.data)
        a.send(
            "<message to='bob@example.test/res' type='chat'><body>now</body></message>"
            "<message to='bob@example.test/res' type='chat'><body>and now</body></message>"
        )
        written = bytes(b.transport.data[before:])  # no await: the loop has not turned
        assert b"<body>now</body>" in written and b"<body>and now</body>" in written
        assert written.index(b"<body>now</body>") < written.index(b"<body>and now</body>")
        got = await b.recv()
        assert [m.find_text("body") for m in got if m.name == "message"] == ["now", "and now"]


def _account_with_different_passwords_per_hash() -> MemoryAccount:
    """Deliberately inconsistent keys: SHA-1 keys for 'sha1-password', SHA-256 keys for
    'sha256-password', so a login shows which stored key was checked."""
    return MemoryAccount(
        credentials={
            ScramHash.SHA1: derive_credentials("sha1-password", ScramHash.SHA1, iterations=64),
            ScramHash.SHA256: derive_credentials(
                "sha256-password", ScramHash.SHA256, iterations=64
            ),
        }
    )


async def test_plain_checks_one_stored_key_the_sha1_one_when_the_account_has_it() -> None:
    async with Harness() as h:
        h.backend.accounts[(DOMAIN, "dave")] = _account_with_different_passwords_per_hash()
        ok = await h.client().login_plain("dave", "sha1-password")
        assert ok.name == "success"
        refused = await h.client().login_plain("dave", "sha256-password")
        assert refused.name == "failure" and refused.find("not-authorized") is not None


async def test_plain_falls_back_to_sha256_keys_when_an_account_has_no_sha1_keys() -> None:
    async with Harness() as h:
        h.backend.accounts[(DOMAIN, "erin")] = MemoryAccount(
            credentials={
                ScramHash.SHA256: derive_credentials("only-sha256", ScramHash.SHA256, iterations=64)
            }
        )
        assert (await h.client().login_plain("erin", "only-sha256")).name == "success"
        assert (await h.client().login_plain("erin", "wrong-password")).name == "failure"
        # an unknown account fails the same way (fake credentials, same derivation)
        assert (await h.client().login_plain("nobody", "only-sha256")).name == "failure"


def test_key_derivation_threads_match_the_cpus_this_process_may_use() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    workers = kdf_executor()._max_workers
    assert workers >= 1
    if expected is not None:
        assert workers == expected
