"""Password hashing and the password policy.

Hashing: argon2id (RFC 9106) through argon2-cffi, with parameters chosen explicitly at
construction so that a change is a deliberate decision. Stored hashes carry their parameters;
:meth:`PasswordHasher.needs_rehash` tells the login flow to re-hash after a successful
verification when the parameters have changed.

Policy: NIST SP 800-63B §5.1.1.2 (memorized secret verifiers):

- length is counted in Unicode code points after NFKC normalisation, at least ``min_length``
  (default 12, bounded 8..128) and at most ``max_length`` (default 256; NIST asks for >= 64);
- no composition rules (no "one digit, one symbol"), no hints, no periodic expiry;
- the password is compared against a shipped list of common and breached passwords, and
  against context-specific words (the service's name, the user's e-mail and name, the
  organization's name);
- a zxcvbn strength estimate (score 0..4) must reach ``min_score`` (default 3);
- every rejection says why, as a :class:`PasswordProblem`.

All passwords are NFKC-normalised before hashing and before verification (§5.1.1.2: "the
verifier SHOULD apply the Normalization Process for Stabilized Strings using either the NFKC
or NFKD normalization"), so the same password typed on two keyboards verifies.
"""

from __future__ import annotations

import gzip
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from imhost.config import SecuritySettings
from imhost.kit.errors import InvalidInput

# --------------------------------------------------------------------------- hashing

OWASP_MEMORY_KIB = 19_456
"""OWASP Password Storage Cheat Sheet: argon2id with m=19 MiB, t=2, p=1 as the baseline."""
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1

_MIN_MEMORY_KIB = 7_168
_MIN_MEMORY_TIMES_PASSES = 7_168 * 5
"""OWASP lists equivalent argon2id settings (m=47104/t=1 ... m=7168/t=5); all keep
memory x passes >= about 35,840 KiB. We refuse anything weaker."""

MAX_VERIFY_LENGTH = 4096
"""Longer inputs are refused without hashing (no one types that; it only costs CPU)."""


def normalize_password(password: str) -> str:
    """NFKC, as NIST SP 800-63B §5.1.1.2 recommends. Hash and verify both go through this."""
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    """argon2id with explicit, OWASP-or-stronger parameters.

    ``verify`` never raises on a wrong password or a malformed hash: it returns False.
    Comparison of the derived key is constant time (libargon2's ``argon2_verify``).
    """

    def __init__(
        self,
        *,
        memory_cost_kib: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
        hash_len: int = 32,
        salt_len: int = 16,
    ) -> None:
        if parallelism < 1 or parallelism > 64:
            raise ValueError("argon2 parallelism must be between 1 and 64")
        if time_cost < 1:
            raise ValueError("argon2 time_cost must be at least 1")
        if memory_cost_kib < _MIN_MEMORY_KIB or memory_cost_kib * time_cost < (
            _MIN_MEMORY_TIMES_PASSES
        ):
            raise ValueError(
                "argon2 parameters weaker than OWASP's minimum: use at least "
                "memory_cost_kib=19456 with time_cost=2 (or an equivalent pair)"
            )
        if memory_cost_kib > 4 * 1024 * 1024:
            raise ValueError("argon2 memory_cost_kib above 4 GiB is not sensible")
        if hash_len < 16 or salt_len < 16:
            raise ValueError("argon2 hash_len and salt_len must be at least 16 bytes")
        self.memory_cost_kib = memory_cost_kib
        self.time_cost = time_cost
        self.parallelism = parallelism
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            hash_len=hash_len,
            salt_len=salt_len,
            type=argon2.Type.ID,
        )
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        """The encoded argon2id hash (``$argon2id$v=19$m=...,t=...,p=...$salt$key``)."""
        return self._hasher.hash(normalize_password(password))

    def verify(self, hash: str | None, password: str) -> bool:
        """True when ``password`` matches ``hash``; False on a mismatch or any malformed input.

        ``hash`` None (a user without a password) costs a dummy verification and is False.
        """
        if hash is None:
            self.dummy_verify(password)
            return False
        if len(password) > MAX_VERIFY_LENGTH:
            return False
        try:
            return self._hasher.verify(hash, normalize_password(password))
        except (VerificationError, InvalidHashError, UnicodeEncodeError, ValueError, TypeError):
            return False

    def needs_rehash(self, hash: str) -> bool:
        """True when ``hash`` was made with other parameters (or is not an argon2id hash).

        Call it after a successful ``verify`` and store ``hash(password)`` when True.
        """
        try:
            return self._hasher.check_needs_rehash(hash)
        except (InvalidHashError, ValueError, TypeError):
            return True

    def dummy_verify(self, password: str = "") -> None:
        """Spend the time of one verification, for an account that does not exist.

        Without it, "no such user" answers faster than "wrong password" and timing tells an
        attacker which e-mail addresses have accounts.
        """
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash("imhost dummy password, never matches")
            dummy = self._dummy_hash
        self.verify(dummy, password)


# --------------------------------------------------------------------------- policy

MIN_LENGTH_BOUNDS = (8, 128)
MAX_LENGTH_BOUNDS = (64, 1024)
ZXCVBN_MAX_INPUT = 100
"""zxcvbn's matching is super-linear in the length; only this many code points are scored
(a longer password scores at least as well as its prefix)."""

SERVICE_WORDS: tuple[str, ...] = ("imhost",)
"""Context-specific words always rejected as the basis of a password (NIST §5.1.1.2)."""


class ProblemCode(StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    INVALID_CHARACTER = "invalid_character"
    COMMON = "common"
    CONTAINS_USER_INFO = "contains_user_info"
    TOO_WEAK = "too_weak"


@dataclass(frozen=True, slots=True)
class PasswordProblem:
    """One reason a password is refused: a stable ``code`` and a sentence for the person."""

    code: ProblemCode
    message: str


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """What a new password must satisfy. One for staff, one per organization.

    The defaults follow NIST SP 800-63B §5.1.1.2. No composition rules on purpose.
    """

    min_length: int = 12
    max_length: int = 256
    min_score: int = 3
    check_breached: bool = True

    def __post_init__(self) -> None:
        lo, hi = MIN_LENGTH_BOUNDS
        if not lo <= self.min_length <= hi:
            raise InvalidInput(
                f"The minimum password length must be between {lo} and {hi}.",
                field="min_length",
            )
        lo, hi = MAX_LENGTH_BOUNDS
        if not lo <= self.max_length <= hi or self.max_length < self.min_length:
            raise InvalidInput(
                f"The maximum password length must be between {lo} and {hi} "
                "and not below the minimum.",
                field="max_length",
            )
        if not 0 <= self.min_score <= 4:
            raise InvalidInput(
                "The minimum strength score must be between 0 and 4.", field="min_score"
            )

    @classmethod
    def from_settings(
        cls,
        security: SecuritySettings,
        *,
        min_length: int | None = None,
        min_score: int | None = None,
    ) -> PasswordPolicy:
        """The provider's policy, with an organization's overrides when it has set them
        (``Organization.password_min_length`` / ``password_min_score``)."""
        return cls(
            min_length=security.password_min_length if min_length is None else min_length,
            min_score=security.password_min_score if min_score is None else min_score,
        )


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list of common/breached passwords (lower-cased, NFKC), loaded once."""
    ref = resources.files("imhost.accounts").joinpath("data").joinpath("common-passwords.txt.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        return frozenset(line.rstrip("\n") for line in text if line.strip())


def context_words(user_inputs: Sequence[str]) -> list[str]:
    """Split e-mail addresses and names into the words a person might build a password on.

    ``anna.berg@acme.example`` gives ``anna.berg@acme.example``, ``anna.berg``, ``anna``,
    ``berg``, ``acme``, plus the service's own name. Pieces shorter than 3 are dropped.
    """
    words: list[str] = list(SERVICE_WORDS)
    for raw in user_inputs:
        value = normalize_password(str(raw)[:320]).strip().casefold()
        if not value:
            continue
        words.append(value)
        local, at, domain = value.partition("@")
        pieces = [local]
        if at:
            labels = domain.split(".")
            pieces.extend(labels[:-1] if len(labels) > 1 else labels)
        for piece in pieces:
            words.append(piece)
            token = []
            for ch in piece:
                if ch.isalnum():
                    token.append(ch)
                else:
                    words.append("".join(token))
                    token = []
            words.append("".join(token))
    seen: set[str] = set()
    out = []
    for word in words:
        if len(word) >= 3 and word not in seen:
            seen.add(word)
            out.append(word)
    return out


_zxcvbn_lock = threading.Lock()


def _zxcvbn(password: str, user_inputs: list[str]) -> dict[str, Any]:
    # zxcvbn keeps the user inputs in a module-level dictionary while it scores, so two
    # threads scoring at once would see each other's words: one at a time.
    from zxcvbn import zxcvbn

    with _zxcvbn_lock:
        result: dict[str, Any] = zxcvbn(
            password[:ZXCVBN_MAX_INPUT], user_inputs=user_inputs, max_length=ZXCVBN_MAX_INPUT
        )
    return result


def _sentence(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text


def _weak_message(feedback: dict[str, Any]) -> str:
    parts = ["This password is too easy to guess."]
    warning = str(feedback.get("warning") or "")
    if warning:
        parts.append(_sentence(warning))
    suggestions = [str(s) for s in feedback.get("suggestions") or [] if s]
    if suggestions:
        parts.extend(_sentence(s) for s in suggestions)
    else:
        parts.append("Use a longer password, for example several unrelated words.")
    return " ".join(parts)


def _uses_context(match: dict[str, Any]) -> bool:
    """A zxcvbn match on a context word, directly or repeated ("annaanna")."""
    if match.get("dictionary_name") == "user_inputs":
        return True
    return any(_uses_context(m) for m in match.get("base_matches") or [])


def _has_bad_characters(password: str) -> bool:
    # Control characters cannot be typed reliably and break SASLprep (RFC 4013) for XMPP;
    # lone surrogates cannot be encoded at all.
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in password)


def check_password(
    password: str,
    policy: PasswordPolicy,
    *,
    user_inputs: Sequence[str] = (),
) -> list[PasswordProblem]:
    """Every reason ``password`` is refused under ``policy``; an empty list accepts it.

    ``user_inputs``: the person's e-mail address and name, the organization's name, the
    provider's name: a password built on them is refused (NIST SP 800-63B §5.1.1.2,
    "context-specific words").
    """
    normalized = normalize_password(password)
    length = len(normalized)
    problems: list[PasswordProblem] = []
    if length < policy.min_length:
        problems.append(
            PasswordProblem(
                ProblemCode.TOO_SHORT,
                f"Use at least {policy.min_length} characters (this one has {length}).",
            )
        )
    if length > policy.max_length:
        problems.append(
            PasswordProblem(
                ProblemCode.TOO_LONG,
                f"Use at most {policy.max_length} characters (this one has {length}).",
            )
        )
        return problems
    if _has_bad_characters(normalized):
        problems.append(
            PasswordProblem(
                ProblemCode.INVALID_CHARACTER,
                "Passwords cannot contain control characters such as tabs or line breaks.",
            )
        )
        return problems
    folded = normalized.casefold()
    if policy.check_breached and folded in common_passwords():
        problems.append(
            PasswordProblem(
                ProblemCode.COMMON,
                "This password is on a list of common or breached passwords; "
                "attackers try those first. Choose another.",
            )
        )
    if not normalized:
        return problems

    words = context_words(user_inputs)
    result = _zxcvbn(normalized, words)
    scored = min(length, ZXCVBN_MAX_INPUT)
    covered = sum(
        int(m["j"]) - int(m["i"]) + 1 for m in result.get("sequence") or [] if _uses_context(m)
    )
    score = int(result["score"])
    if covered and (covered * 2 >= scored or score < policy.min_score):
        problems.append(
            PasswordProblem(
                ProblemCode.CONTAINS_USER_INFO,
                "This password is built on your name, e-mail address, your organization's "
                "name or the service's name, which an attacker tries early. Choose another.",
            )
        )
    if score < policy.min_score:
        problems.append(
            PasswordProblem(ProblemCode.TOO_WEAK, _weak_message(result.get("feedback") or {}))
        )
    return problems


def ensure_acceptable(
    password: str,
    policy: PasswordPolicy,
    *,
    user_inputs: Sequence[str] = (),
    field: str = "password",
) -> None:
    """Raise :class:`InvalidInput` with every reason when ``password`` is refused.

    The exception's ``extra["problems"]`` lists ``{"code", "message"}`` for the API.
    """
    problems = check_password(password, policy, user_inputs=user_inputs)
    if problems:
        raise InvalidInput(
            " ".join(p.message for p in problems),
            field=field,
            problems=[{"code": p.code.value, "message": p.message} for p in problems],
        )
