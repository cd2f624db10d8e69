"""Second factors: TOTP (RFC 6238) and one-time recovery codes.

TOTP is written here on top of ``hmac`` (RFC 4226 HOTP with SHA-1, 6 digits, a 30-second
step: the parameters every authenticator app supports). A code is accepted once: the caller
stores the matched time step in ``MfaFactor.last_used_step`` and passes it back, and any step
at or before it is refused (RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of
the same OTP after the successful validation has been issued for the first OTP").

Recovery codes are 60-bit random strings shown once and stored only as hashes. They are hashed
with argon2id at a low cost (8 MiB, one pass) rather than the password cost: with 60 bits of
entropy, an offline search of even one code needs ~2^59 argon2 evaluations, so the memory-hard
function only has to make each guess expensive, not to stretch a weak secret, and checking a
user's ten codes stays within a login's time budget. Each hash has its own random salt.

Other factor kinds (WebAuthn) plug in through :class:`SecondFactor`: they verify a piece of
material at a time and return the replay counter to store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import quote, urlencode

import argon2
import segno
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imhost.kit.clock import ensure_utc
from imhost.kit.ids import CROCKFORD

TOTP_DIGITS = 6
TOTP_STEP_SECONDS = 30
TOTP_SECRET_BYTES = 20
"""160 bits, the HMAC-SHA-1 block-size key RFC 4226 §4 recommends (R6)."""
MAX_WINDOW = 10


class FactorKind(StrEnum):
    """The kinds of second factor (``MfaFactor.kind``). WebAuthn will join as another kind."""

    TOTP = "totp"


class SecondFactor(Protocol):
    """A second factor a user has enrolled, ready to check one attempt."""

    @property
    def kind(self) -> FactorKind: ...

    def verify(self, material: str, at: datetime) -> int | None:
        """Check ``material`` (what the person or their device sent) at time ``at``.

        Returns the new replay counter to store on the factor (a TOTP time step; for WebAuthn
        the authenticator's signature counter), or None when the attempt is refused.
        """
        ...


# --------------------------------------------------------------------------- TOTP


def new_totp_secret() -> str:
    """A new random TOTP secret: 160 bits as unpadded base32 (32 characters)."""
    return base64.b32encode(secrets.token_bytes(TOTP_SECRET_BYTES)).decode("ascii").rstrip("=")


def _secret_bytes(secret: str) -> bytes:
    cleaned = "".join(secret.split()).upper().rstrip("=")
    if not cleaned:
        raise ValueError("a TOTP secret cannot be empty")
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a TOTP secret must be base32") from exc


def hotp(key: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 §5.3: HMAC-SHA-1 of the 8-byte counter, dynamic truncation, ``digits`` digits."""
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    binary = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(binary % (10**digits)).zfill(digits)


def time_step(at: datetime) -> int:
    """RFC 6238 §4.2: T = floor((unix time - T0) / X), with T0 = 0 and X = 30 s."""
    return int(ensure_utc(at).timestamp()) // TOTP_STEP_SECONDS


def totp_code(secret: str, at: datetime) -> str:
    """The 6-digit code for ``secret`` at ``at``."""
    return hotp(_secret_bytes(secret), time_step(at))


def verify_totp(
    secret: str,
    code: str,
    at: datetime,
    *,
    last_used_step: int | None,
    window: int = 1,
) -> int | None:
    """The time step ``code`` matches within ``window`` steps of ``at``, or None.

    Spaces are ignored ("123 456" as apps show it). A step at or before ``last_used_step`` is
    refused, so a code is good once. Every candidate is compared in constant time, and all of
    them are always compared, so timing tells nothing about which step matched.
    """
    if not 0 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be between 0 and {MAX_WINDOW}")
    key = _secret_bytes(secret)
    typed = "".join(code.split()) if isinstance(code, str) else ""
    well_formed = len(typed) == TOTP_DIGITS and typed.isascii() and typed.isdigit()
    candidate = typed.encode("ascii") if well_formed else b"0" * (TOTP_DIGITS + 1)
    current = time_step(at)
    matched: int | None = None
    for step in range(current - window, current + window + 1):
        expected = hotp(key, step).encode("ascii")
        if hmac.compare_digest(expected, candidate) and (
            last_used_step is None or step > last_used_step
        ):
            matched = step
    return matched


def provisioning_uri(secret: str, account_name: str, issuer: str) -> str:
    """The ``otpauth://totp/`` URI authenticator apps read from the QR code.

    Key URI format (Google Authenticator wiki): label ``issuer:account`` with each part
    percent-encoded (a ':' inside either is encoded too), and the issuer repeated as a parameter.
    """
    account_name = account_name.strip()
    issuer = issuer.strip()
    if not account_name or not issuer:
        raise ValueError("a provisioning URI needs an account name and an issuer")
    _secret_bytes(secret)
    label = f"{quote(issuer, safe='')}:{quote(account_name, safe='@')}"
    query = urlencode(
        {
            "secret": "".join(secret.split()).upper().rstrip("="),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": str(TOTP_DIGITS),
            "period": str(TOTP_STEP_SECONDS),
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def qr_svg(uri: str, *, scale: int = 4) -> str:
    """The QR code of ``uri`` as an inline ``<svg>`` element (no XML declaration, no assets)."""
    qr = segno.make(uri, error="m", micro=False)
    svg: str = qr.svg_inline(scale=scale, title="Scan with your authenticator app")
    return svg


@dataclass(frozen=True, slots=True)
class TotpFactor:
    """A confirmed TOTP factor as :class:`SecondFactor` (built from an ``MfaFactor`` row)."""

    secret: str
    last_used_step: int | None = None
    window: int = 1

    @property
    def kind(self) -> FactorKind:
        return FactorKind.TOTP

    def verify(self, material: str, at: datetime) -> int | None:
        return verify_totp(
            self.secret, material, at, last_used_step=self.last_used_step, window=self.window
        )


def factor_for(kind: str, secret: str, last_used_step: int | None) -> SecondFactor:
    """The :class:`SecondFactor` for a stored factor's ``kind``; ValueError for an unknown one."""
    if kind == FactorKind.TOTP:
        return TotpFactor(secret=secret, last_used_step=last_used_step)
    raise ValueError(f"unknown second-factor kind {kind!r}")


# --------------------------------------------------------------------------- secrets at rest

_SEALED_PREFIX = "aesgcm1:"


def secret_sealing_key(master_secret: str | bytes) -> bytes:
    """A 256-bit key for :func:`seal_secret`, derived (HKDF-SHA-256) from the server secret.

    Optional: TOTP secrets must be readable by the server, so they cannot be hashed; sealing
    them means a copy of the database alone does not give away everyone's second factor.
    Changing the master secret makes sealed secrets unreadable (users must enrol again).
    """
    raw = master_secret.encode("utf-8") if isinstance(master_secret, str) else master_secret
    if len(raw) < 32:
        raise ValueError("the master secret must be at least 32 bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"imhost mfa secrets v1")
    return hkdf.derive(raw)


def seal_secret(secret: str, key: bytes, *, context: str = "") -> str:
    """``secret`` encrypted with AES-256-GCM for ``MfaFactor.secret`` (80 characters for a
    TOTP secret). ``context`` (the user id, say) is authenticated, so a sealed secret copied to
    another user's row does not open."""
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(key).encrypt(nonce, secret.encode("utf-8"), context.encode("utf-8"))
    return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_secret(stored: str, key: bytes, *, context: str = "") -> str:
    """The secret :func:`seal_secret` sealed; a value stored before sealing is returned as is.

    Raises ValueError when the value was tampered with, or sealed with another key or context.
    """
    if not stored.startswith(_SEALED_PREFIX):
        return stored
    try:
        blob = base64.urlsafe_b64decode(stored[len(_SEALED_PREFIX) :].encode("ascii"))
        plain = AESGCM(key).decrypt(blob[:12], blob[12:], context.encode("utf-8"))
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise ValueError("this sealed secret cannot be opened with this key") from exc
    return plain.decode("utf-8")


# --------------------------------------------------------------------------- recovery codes

RECOVERY_CODE_GROUPS = 3
RECOVERY_CODE_GROUP_LENGTH = 4
RECOVERY_CODE_CHARS = RECOVERY_CODE_GROUPS * RECOVERY_CODE_GROUP_LENGTH
"""12 Crockford base-32 characters: 60 bits of entropy per code."""
DEFAULT_RECOVERY_CODES = 10

_recovery_hasher = argon2.PasswordHasher(
    time_cost=1, memory_cost=8192, parallelism=1, hash_len=32, salt_len=16, type=argon2.Type.ID
)
_CROCKFORD_READ = {c: c for c in CROCKFORD} | {"O": "0", "I": "1", "L": "1"}


def generate_recovery_codes(n: int = DEFAULT_RECOVERY_CODES) -> list[str]:
    """``n`` distinct one-time codes like ``7k2m-9xhd-q4tz`` (Crockford base 32, lower case)."""
    if not 1 <= n <= 100:
        raise ValueError("between 1 and 100 recovery codes")
    alphabet = CROCKFORD.lower()
    codes: list[str] = []
    while len(codes) < n:
        body = "".join(secrets.choice(alphabet) for _ in range(RECOVERY_CODE_CHARS))
        code = "-".join(
            body[i : i + RECOVERY_CODE_GROUP_LENGTH]
            for i in range(0, RECOVERY_CODE_CHARS, RECOVERY_CODE_GROUP_LENGTH)
        )
        if code not in codes:
            codes.append(code)
    return codes


def normalize_recovery_code(code: str) -> str | None:
    """The canonical form (12 upper-case Crockford characters), or None if it cannot be one.

    Case, dashes and spaces do not matter; O reads as 0 and I/L as 1, as Crockford intends.
    """
    if not isinstance(code, str) or len(code) > 64:
        return None
    out = []
    for ch in code.upper():
        if ch == "-" or ch.isspace():
            continue
        mapped = _CROCKFORD_READ.get(ch)
        if mapped is None:
            return None
        out.append(mapped)
    if len(out) != RECOVERY_CODE_CHARS:
        return None
    return "".join(out)


def hash_recovery_code(code: str) -> str:
    """A salted argon2id hash of the normalised code, for ``RecoveryCode.code_hash``."""
    canonical = normalize_recovery_code(code)
    if canonical is None:
        raise ValueError("not a recovery code")
    return _recovery_hasher.hash(canonical)


def verify_recovery_code(code: str, hash: str) -> bool:
    """True when ``code`` (in any case, with or without dashes and spaces) matches ``hash``."""
    canonical = normalize_recovery_code(code)
    if canonical is None:
        return False
    try:
        return _recovery_hasher.verify(hash, canonical)
    except (VerificationError, InvalidHashError, ValueError, TypeError):
        return False


def match_recovery_code(code: str, hashes: Sequence[str]) -> int | None:
    """The index in ``hashes`` (a user's unused codes) that ``code`` matches, or None.

    Every hash is checked, so the time taken does not depend on which one matched.
    """
    found: int | None = None
    for index, stored in enumerate(hashes):
        if verify_recovery_code(code, stored) and found is None:
            found = index
    return found
