"""TOTP (RFC 6238 / RFC 4226) and recovery codes."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imhost.accounts.mfa import (
    FactorKind,
    SecondFactor,
    TotpFactor,
    factor_for,
    generate_recovery_codes,
    hash_recovery_code,
    hotp,
    match_recovery_code,
    new_totp_secret,
    normalize_recovery_code,
    open_secret,
    provisioning_uri,
    qr_svg,
    seal_secret,
    secret_sealing_key,
    time_step,
    totp_code,
    verify_recovery_code,
    verify_totp,
)
from imhost.kit.ids import CROCKFORD

RFC_KEY = b"12345678901234567890"
RFC_SECRET = base64.b32encode(RFC_KEY).decode("ascii")

# RFC 6238 Appendix B, SHA-1 column: (Unix time, 8-digit TOTP).
RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

# RFC 4226 Appendix D: HOTP values for counters 0..9 with the same key.
RFC4226 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


# --------------------------------------------------------------------------- TOTP


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226)))
def test_hotp_matches_rfc4226_appendix_d(counter: int, expected: str) -> None:
    assert hotp(RFC_KEY, counter) == expected


@pytest.mark.parametrize(("unix", "expected"), RFC6238_SHA1)
def test_totp_matches_rfc6238_appendix_b_sha1(unix: int, expected: str) -> None:
    # The RFC lists 8-digit codes; our 6-digit code is the same value modulo 10^6.
    assert hotp(RFC_KEY, time_step(at(unix)), digits=8) == expected
    assert totp_code(RFC_SECRET, at(unix)) == expected[-6:]


def test_a_naive_datetime_is_taken_as_utc() -> None:
    naive = datetime(2009, 2, 13, 23, 31, 30)  # 1234567890
    assert totp_code(RFC_SECRET, naive) == "005924"


def test_new_secret_is_160_bits_of_unpadded_base32() -> None:
    secret = new_totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(base64.b32decode(secret)) == 20
    assert new_totp_secret() != secret


def test_verify_accepts_the_current_code_and_returns_its_step() -> None:
    now = at(1234567890)
    code = totp_code(RFC_SECRET, now)
    assert verify_totp(RFC_SECRET, code, now, last_used_step=None) == time_step(now)


def test_verify_accepts_one_step_of_clock_drift_either_way_and_no_more() -> None:
    now = at(1234567890)
    before = totp_code(RFC_SECRET, now - timedelta(seconds=30))
    after = totp_code(RFC_SECRET, now + timedelta(seconds=30))
    too_old = totp_code(RFC_SECRET, now - timedelta(seconds=60))
    assert verify_totp(RFC_SECRET, before, now, last_used_step=None) == time_step(now) - 1
    assert verify_totp(RFC_SECRET, after, now, last_used_step=None) == time_step(now) + 1
    assert verify_totp(RFC_SECRET, too_old, now, last_used_step=None) is None
    assert verify_totp(RFC_SECRET, before, now, last_used_step=None, window=0) is None


def test_a_code_is_good_only_once() -> None:
    now = at(1234567890)
    code = totp_code(RFC_SECRET, now)
    step = verify_totp(RFC_SECRET, code, now, last_used_step=None)
    assert step is not None
    assert verify_totp(RFC_SECRET, code, now, last_used_step=step) is None
    # Nor an older code still inside the window.
    previous = totp_code(RFC_SECRET, now - timedelta(seconds=30))
    assert verify_totp(RFC_SECRET, previous, now, last_used_step=step) is None
    # The next code is fine.
    later = now + timedelta(seconds=30)
    assert verify_totp(RFC_SECRET, totp_code(RFC_SECRET, later), later, last_used_step=step) == (
        step + 1
    )


@pytest.mark.parametrize("decorate", [" {} ", "{}\n", "{0}{1}{2} {3}{4}{5}"])
def test_verify_ignores_spaces(decorate: str) -> None:
    now = at(1111111111)
    code = totp_code(RFC_SECRET, now)
    typed = decorate.format(*code) if "{0}" in decorate else decorate.format(code)
    assert verify_totp(RFC_SECRET, typed, now, last_used_step=None) == time_step(now)


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "12-456"])
def test_verify_refuses_malformed_codes(typed: str) -> None:
    assert verify_totp(RFC_SECRET, typed, at(59), last_used_step=None) is None


def test_verify_refuses_a_wrong_code() -> None:
    now = at(59)
    right = totp_code(RFC_SECRET, now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert verify_totp(RFC_SECRET, wrong, now, last_used_step=None) is None


def test_window_is_bounded() -> None:
    with pytest.raises(ValueError, match="window"):
        verify_totp(RFC_SECRET, "123456", at(59), last_used_step=None, window=11)


def test_a_secret_that_is_not_base32_is_an_error() -> None:
    with pytest.raises(ValueError, match="base32"):
        totp_code("not base32!", at(59))


def test_secret_is_read_with_spaces_and_lower_case() -> None:
    spaced = " ".join(RFC_SECRET[i : i + 4] for i in range(0, len(RFC_SECRET), 4)).lower()
    assert totp_code(spaced, at(59)) == totp_code(RFC_SECRET, at(59))


def test_provisioning_uri_encodes_label_and_parameters() -> None:
    uri = provisioning_uri(RFC_SECRET, "anna berg@acme.example", "Acme: IM")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    issuer, account = parts.path.lstrip("/").split(":")
    assert unquote(issuer) == "Acme: IM"
    assert unquote(account) == "anna berg@acme.example"
    assert " " not in uri and "+" not in uri
    query = parse_qs(parts.query)
    assert query == {
        "secret": [RFC_SECRET],
        "issuer": ["Acme: IM"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }


def test_provisioning_uri_needs_an_account_and_an_issuer() -> None:
    with pytest.raises(ValueError):
        provisioning_uri(RFC_SECRET, " ", "imhost")
    with pytest.raises(ValueError):
        provisioning_uri(RFC_SECRET, "anna@acme.example", "")


def test_qr_svg_is_an_inline_svg_that_encodes_the_uri() -> None:
    uri = provisioning_uri(RFC_SECRET, "anna@acme.example", "imhost")
    svg = qr_svg(uri)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg
    assert "http" not in svg.replace("http://www.w3.org", "")  # no external assets
    assert qr_svg(uri + "x") != svg


def test_totp_factor_is_a_second_factor_with_replay_protection() -> None:
    now = at(1234567890)
    factor: SecondFactor = factor_for("totp", RFC_SECRET, None)
    assert factor.kind is FactorKind.TOTP
    step = factor.verify(totp_code(RFC_SECRET, now), now)
    assert step == time_step(now)
    used = TotpFactor(secret=RFC_SECRET, last_used_step=step)
    assert used.verify(totp_code(RFC_SECRET, now), now) is None


def test_an_unknown_factor_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="webauthn"):
        factor_for("webauthn", "x", None)


# --------------------------------------------------------------------------- recovery codes


def test_ten_distinct_recovery_codes_of_sixty_bits() -> None:
    codes = generate_recovery_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    alphabet = re.escape(CROCKFORD.lower())
    for code in codes:
        assert re.fullmatch(rf"[{alphabet}]{{4}}-[{alphabet}]{{4}}-[{alphabet}]{{4}}", code)
    # 12 characters of a 32-letter alphabet: 12 x 5 = 60 bits.
    assert len(code.replace("-", "")) * 5 >= 60


def test_recovery_code_count_is_bounded() -> None:
    assert len(generate_recovery_codes(3)) == 3
    with pytest.raises(ValueError):
        generate_recovery_codes(0)


def test_recovery_code_hash_is_salted_and_is_not_the_code() -> None:
    code = generate_recovery_codes(1)[0]
    first, second = hash_recovery_code(code), hash_recovery_code(code)
    assert first != second
    assert code not in first and code.replace("-", "").upper() not in first
    assert first.startswith("$argon2id$")


@pytest.mark.parametrize(
    "retype",
    [
        lambda c: c,
        lambda c: c.upper(),
        lambda c: c.replace("-", ""),
        lambda c: " " + c.replace("-", " ") + " ",
        lambda c: c.upper().replace("0", "O").replace("1", "L"),
    ],
)
def test_recovery_code_verifies_however_it_is_typed(retype: object) -> None:
    code = "0a1b-2c3d-4e5f"
    assert verify_recovery_code(retype(code), hash_recovery_code(code))  # type: ignore[operator]


def test_a_different_or_malformed_recovery_code_does_not_verify() -> None:
    stored = hash_recovery_code("0a1b-2c3d-4e5f")
    assert not verify_recovery_code("0a1b-2c3d-4e5g", stored)
    assert not verify_recovery_code("0a1b-2c3d-4e5", stored)
    assert not verify_recovery_code("0a1b-2c3d-4e5f-0", stored)
    assert not verify_recovery_code("0a1b_2c3d_4e5f", stored)
    assert not verify_recovery_code("0a1b-2c3d-4e5f", "not a hash")


def test_hashing_something_that_is_not_a_recovery_code_is_an_error() -> None:
    with pytest.raises(ValueError):
        hash_recovery_code("hello")


def test_normalized_recovery_code_is_canonical() -> None:
    assert normalize_recovery_code(" 0a1b 2c3d-4e5f ") == "0A1B2C3D4E5F"
    assert normalize_recovery_code("uuuu-uuuu-uuuu") is None  # U is not Crockford


def test_match_recovery_code_finds_which_stored_hash_matches() -> None:
    codes = generate_recovery_codes(4)
    hashes = [hash_recovery_code(c) for c in codes]
    assert match_recovery_code(codes[2].upper(), hashes) == 2
    assert match_recovery_code(generate_recovery_codes(1)[0], hashes) is None


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=80))
def test_verifying_arbitrary_input_never_raises(typed: str) -> None:
    assert verify_recovery_code(typed, hash_recovery_code("0a1b-2c3d-4e5f")) in (True, False)
    assert verify_totp(RFC_SECRET, typed, at(59), last_used_step=None) in (None, 0, 1, 2)


# --------------------------------------------------------------------------- secrets at rest

MASTER = "a server secret of at least thirty-two bytes"


def test_a_sealed_secret_opens_with_the_same_key_and_context() -> None:
    key = secret_sealing_key(MASTER)
    secret = new_totp_secret()
    sealed = seal_secret(secret, key, context="user-1")
    assert secret not in sealed
    assert len(sealed) <= 128  # MfaFactor.secret is String(128)
    assert open_secret(sealed, key, context="user-1") == secret
    assert seal_secret(secret, key, context="user-1") != sealed  # a fresh nonce each time


def test_a_sealed_secret_does_not_open_elsewhere() -> None:
    key = secret_sealing_key(MASTER)
    sealed = seal_secret(new_totp_secret(), key, context="user-1")
    with pytest.raises(ValueError):
        open_secret(sealed, key, context="user-2")
    with pytest.raises(ValueError):
        open_secret(sealed, secret_sealing_key(MASTER + "!"), context="user-1")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(ValueError):
        open_secret(tampered, key, context="user-1")


def test_a_secret_stored_before_sealing_is_read_as_is() -> None:
    assert open_secret(RFC_SECRET, secret_sealing_key(MASTER)) == RFC_SECRET


def test_the_sealing_key_needs_a_long_master_secret() -> None:
    with pytest.raises(ValueError):
        secret_sealing_key("short")
