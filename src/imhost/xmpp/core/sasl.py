"""SASL for c2s (RFC 6120 §6): SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS), PLAIN.

An exchange never reveals whether an account exists: an unknown account gets deterministic
fake SCRAM credentials (same salt every time, RFC 5802 §9), and PLAIN runs the same key
derivation against them, so failures look and take the same as a wrong password.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imhost.kit.jid import prepare_localpart
from imhost.kit.scram import (
    ScramCredentials,
    ScramError,
    ScramHash,
    ScramServerExchange,
    fake_credentials,
    verify_plain,
)

from ..ports import AccountAuth, AuthAttempt

MECHANISMS: dict[str, tuple[ScramHash | None, bool]] = {
    "SCRAM-SHA-256-PLUS": (ScramHash.SHA256, True),
    "SCRAM-SHA-1-PLUS": (ScramHash.SHA1, True),
    "SCRAM-SHA-256": (ScramHash.SHA256, False),
    "SCRAM-SHA-1": (ScramHash.SHA1, False),
    "PLAIN": (None, False),
}
"""Mechanisms in order of preference: (hash, needs channel binding)."""


PLAIN_HASHES = (ScramHash.SHA1, ScramHash.SHA256)
"""Which stored keys a PLAIN password is checked against, first found wins (one derivation).

SHA-1 first: PBKDF2-HMAC-SHA-1 costs about 20 % less CPU than SHA-256 for the same 4,096
iterations, and checking a password against either stored key proves the same thing (the
keys, their iterations and what is stored do not change). ejabberd's and Prosody's hashed
storage check PLAIN against SHA-1 keys too."""

_kdf_executor: ThreadPoolExecutor | None = None


class VerifiedPasswords:
    """PLAIN passwords verified lately, so that a repeat login costs one HMAC, not a PBKDF2.

    An entry is keyed by the account's stored key and an HMAC-SHA256 of the password under a
    random secret of this process: the password itself is not kept, a changed password
    changes the stored key (so an old entry never matches again), and only right passwords
    are added. Bounded: the oldest entries go first. docs/security.md says what it trades.
    """

    def __init__(self, max_entries: int = 65_536) -> None:
        self.max_entries = max_entries
        self._secret = secrets.token_bytes(32)
        self._entries: dict[tuple[bytes, bytes], None] = {}

    def _key(self, creds: ScramCredentials, password: str) -> tuple[bytes, bytes]:
        tag = hmac.new(self._secret, password.encode("utf-8"), hashlib.sha256).digest()
        return creds.stored_key, tag

    def __contains__(self, item: tuple[ScramCredentials, str]) -> bool:
        return self._key(*item) in self._entries

    def add(self, creds: ScramCredentials, password: str) -> None:
        key = self._key(creds, password)
        self._entries.pop(key, None)
        self._entries[key] = None
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


verified_passwords = VerifiedPasswords()
"""This process's cache of verified PLAIN passwords."""


def kdf_executor() -> ThreadPoolExecutor:
    """The threads that run PBKDF2 for PLAIN logins (``hashlib`` releases the GIL).

    One per CPU this process may run on: more threads than CPUs only add switches (a server
    pinned to one core gets one), and the event loop keeps routing while a key is derived.
    """
    global _kdf_executor
    if _kdf_executor is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        _kdf_executor = ThreadPoolExecutor(max_workers=max(1, cpus), thread_name_prefix="kdf")
    return _kdf_executor


class Step(enum.Enum):
    CHALLENGE = "challenge"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(slots=True)
class Outcome:
    step: Step
    data: bytes = b""
    condition: str = "not-authorized"
    text: str = ""
    localpart: str = ""
    delay_seconds: float = 0.0
    """Wait this long before sending a final outcome (the brute-force model's delay)."""


class SaslExchange:
    """One SASL exchange on one stream for one virtual host."""

    def __init__(
        self,
        mechanism: str,
        *,
        auth: AccountAuth,
        domain: str,
        address: str,
        secret: bytes,
        channel_bindings: dict[str, bytes],
    ) -> None:
        self.mechanism = mechanism
        self.auth = auth
        self.domain = domain
        self.address = address
        self.secret = secret
        self.channel_bindings = channel_bindings
        h, plus = MECHANISMS[mechanism]
        self.hash = h
        self.plus = plus
        self.localpart = ""
        self._scram: ScramServerExchange | None = None
        self._account_known = False
        self._delay = 0.0
        self.suspended_reason: str | None = None
        """Set by the stream when the host is suspended: told only after a right password."""

    async def start(self, initial: bytes | None) -> Outcome:
        """Handle ``<auth/>``; ``initial`` is None when the client sent no initial response."""
        if initial is None:
            return Outcome(Step.CHALLENGE, b"")
        if self.hash is None:
            return await self._plain(initial)
        cb_type = next(iter(self.channel_bindings), None)
        self._scram = ScramServerExchange(
            self.hash,
            plus=self.plus,
            cb_type=None,
            cb_data=None,
            supports_plus=bool(self.channel_bindings),
        )
        # Accept any binding type we can compute: look at the gs2 header first.
        head = initial.split(b",", 1)[0]
        if head.startswith(b"p="):
            cb_type = head[2:].decode("ascii", "replace")
            data = self.channel_bindings.get(cb_type)
            if data is None:
                return Outcome(
                    Step.FAILURE,
                    condition="not-authorized",
                    text="unsupported channel binding type",
                )
            self._scram = ScramServerExchange(
                self.hash, plus=self.plus, cb_type=cb_type, cb_data=data, supports_plus=True
            )
        try:
            username = self._scram.receive_client_first(initial)
        except ScramError as exc:
            return Outcome(Step.FAILURE, condition=exc.condition, text=str(exc))
        try:
            self.localpart = prepare_localpart(username)
        except ValueError:
            self.localpart = ""
        refused = await self._admit()
        if refused is not None:
            return refused
        creds = None
        if self.localpart:
            creds = await self.auth.get_credentials(self.domain, self.localpart, self.hash)
        self._account_known = creds is not None
        if creds is None:
            creds = fake_credentials(f"{username}@{self.domain}", self.secret, self.hash)
        return Outcome(Step.CHALLENGE, self._scram.server_first(creds))

    async def step(self, response: bytes) -> Outcome:
        """Handle ``<response/>``."""
        if self._scram is None:
            return await self.start(response)
        try:
            final = self._scram.receive_client_final(response)
        except ScramError as exc:
            await self._report(False)
            return self._failure(exc.condition)
        if not self._account_known:
            await self._report(False)
            return self._failure()
        return await self._succeed(final)

    async def _plain(self, message: bytes) -> Outcome:
        """RFC 4616: ``[authzid] NUL authcid NUL passwd``."""
        parts = message.split(b"\x00")
        if len(parts) != 3:
            return Outcome(Step.FAILURE, condition="malformed-request")
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return Outcome(Step.FAILURE, condition="malformed-request")
        try:
            self.localpart = prepare_localpart(authcid)
        except ValueError:
            self.localpart = ""
        if authzid and authzid not in (authcid, f"{self.localpart}@{self.domain}"):
            return Outcome(Step.FAILURE, condition="invalid-authzid")
        refused = await self._admit()
        if refused is not None:
            return refused
        h = PLAIN_HASHES[0]
        creds = None
        if self.localpart:
            for h in PLAIN_HASHES:
                creds = await self.auth.get_credentials(self.domain, self.localpart, h)
                if creds is not None:
                    break
        known = creds is not None
        if creds is None:
            h = PLAIN_HASHES[0]
            creds = fake_credentials(f"{authcid}@{self.domain}", self.secret, h)
        if known and (creds, password) in verified_passwords:
            ok = True
        else:
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(kdf_executor(), verify_plain, password, creds, h)
            if ok and known:
                verified_passwords.add(creds, password)
        if not (ok and known):
            await self._report(False)
            return self._failure()
        return await self._succeed(b"")

    async def _admit(self) -> Outcome | None:
        """Ask the brute-force model; a refusal is the outcome, else None (go on)."""
        if not self.localpart:
            return None
        admission = await self.auth.admit_auth(self.domain, self.localpart, self.address)
        if not admission.allowed:
            return Outcome(
                Step.FAILURE,
                condition="temporary-auth-failure",
                text="too many failed attempts; try again later",
            )
        self._delay = admission.delay_seconds
        return None

    def _failure(self, condition: str = "not-authorized", text: str = "") -> Outcome:
        return Outcome(Step.FAILURE, condition=condition, text=text, delay_seconds=self._delay)

    async def _succeed(self, data: bytes) -> Outcome:
        """The credential is right: only now may the reason of a suspension be told."""
        reason = self.suspended_reason
        if reason is None:
            reason = await self.auth.account_disabled(self.domain, self.localpart)
        if reason is not None:
            await self._report(False)
            return self._failure("account-disabled", reason)
        await self._report(True)
        return Outcome(Step.SUCCESS, data, localpart=self.localpart, delay_seconds=self._delay)

    async def _report(self, success: bool) -> None:
        await self.auth.report_auth(
            AuthAttempt(
                domain=self.domain,
                localpart=self.localpart,
                address=self.address,
                success=success,
                mechanism=self.mechanism,
            )
        )
