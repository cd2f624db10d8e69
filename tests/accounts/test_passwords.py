"""Password hashing (argon2id) and the NIST SP 800-63B policy."""

from __future__ import annotations

import gzip
import importlib.util
import threading
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imhost.accounts import passwords
from imhost.accounts.passwords import (
    PasswordHasher,
    PasswordPolicy,
    ProblemCode,
    check_password,
    common_passwords,
    context_words,
    ensure_acceptable,
)
from imhost.config import SecuritySettings
from imhost.kit.errors import InvalidInput

STRONG = "violet marmalade tugboat 47"
DATA = Path(passwords.__file__).with_name("data")


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


def codes(password: str, policy: PasswordPolicy | None = None, **kw: object) -> set[ProblemCode]:
    return {p.code for p in check_password(password, policy or PasswordPolicy(), **kw)}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hashing


def test_hash_is_argon2id_with_the_owasp_parameters(hasher: PasswordHasher) -> None:
    encoded = hasher.hash(STRONG)
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_hashes_of_one_password_differ_by_their_salt(hasher: PasswordHasher) -> None:
    assert hasher.hash(STRONG) != hasher.hash(STRONG)


def test_verify_accepts_the_right_password_and_refuses_another(hasher: PasswordHasher) -> None:
    encoded = hasher.hash(STRONG)
    assert hasher.verify(encoded, STRONG) is True
    assert hasher.verify(encoded, STRONG + " ") is False
    assert hasher.verify(encoded, "") is False


@pytest.mark.parametrize(
    "bad_hash",
    ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$", "$2b$12$abcdefghijklmnopqrstuv"],
)
def test_verify_returns_false_on_a_malformed_hash_instead_of_raising(
    hasher: PasswordHasher, bad_hash: str
) -> None:
    assert hasher.verify(bad_hash, STRONG) is False


def test_verify_returns_false_for_a_user_without_a_password(hasher: PasswordHasher) -> None:
    assert hasher.verify(None, STRONG) is False


def test_verify_returns_false_for_unencodable_or_huge_input(hasher: PasswordHasher) -> None:
    encoded = hasher.hash(STRONG)
    assert hasher.verify(encoded, "\ud800 lone surrogate") is False
    assert hasher.verify(encoded, "x" * (passwords.MAX_VERIFY_LENGTH + 1)) is False


def test_password_is_nfkc_normalised_so_equivalent_spellings_verify(
    hasher: PasswordHasher,
) -> None:
    composed = "caf\u00e9 ﬁnale marmalade"  # é precomposed, "ﬁ" ligature
    decomposed = "cafe\u0301 finale marmalade"
    assert unicodedata.normalize("NFKC", composed) == unicodedata.normalize("NFKC", decomposed)
    assert hasher.verify(hasher.hash(composed), decomposed) is True


def test_needs_rehash_when_parameters_change(hasher: PasswordHasher) -> None:
    stronger = PasswordHasher(time_cost=3)
    old = hasher.hash(STRONG)
    assert hasher.needs_rehash(old) is False
    assert stronger.needs_rehash(old) is True
    assert stronger.needs_rehash(stronger.hash(STRONG)) is False
    # An old hash still verifies under the new parameters: rehash happens at the next login.
    assert stronger.verify(old, STRONG) is True


def test_needs_rehash_for_a_hash_that_is_not_argon2id(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash("$2b$12$abcdefghijklmnopqrstuv") is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_cost_kib": 4096},
        {"memory_cost_kib": 19_456, "time_cost": 1},
        {"parallelism": 0},
        {"time_cost": 0},
    ],
)
def test_parameters_weaker_than_owasp_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="argon2"):
        PasswordHasher(**kwargs)


def test_an_owasp_equivalent_pair_is_accepted() -> None:
    assert (
        PasswordHasher(memory_cost_kib=47_104, time_cost=1)
        .hash("x")
        .startswith("$argon2id$v=19$m=47104,t=1,p=1$")
    )


def test_dummy_verify_takes_about_as_long_as_a_real_verification(
    hasher: PasswordHasher,
) -> None:
    import time

    encoded = hasher.hash(STRONG)
    hasher.dummy_verify()  # the first call builds the dummy hash

    def best_of(fn: object, runs: int = 5) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return min(times)

    real = best_of(lambda: hasher.verify(encoded, "wrong password here"))
    dummy = best_of(lambda: hasher.dummy_verify("wrong password here"))
    assert 0.5 < dummy / real < 2.0


# --------------------------------------------------------------------------- policy


def test_policy_defaults_follow_the_issue() -> None:
    policy = PasswordPolicy()
    assert (policy.min_length, policy.max_length, policy.min_score, policy.check_breached) == (
        12,
        256,
        3,
        True,
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_length": 7}, "min_length"),
        ({"min_length": 129}, "min_length"),
        ({"max_length": 63}, "max_length"),
        ({"min_length": 100, "max_length": 80}, "max_length"),
        ({"min_score": 5}, "min_score"),
        ({"min_score": -1}, "min_score"),
    ],
)
def test_policy_out_of_bounds_is_invalid_input_naming_the_field(
    kwargs: dict[str, int], field: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        PasswordPolicy(**kwargs)  # type: ignore[arg-type]
    assert exc.value.field == field


def test_policy_from_settings_takes_organization_overrides() -> None:
    security = SecuritySettings(password_min_length=14, password_min_score=4)
    assert PasswordPolicy.from_settings(security) == PasswordPolicy(min_length=14, min_score=4)
    assert PasswordPolicy.from_settings(security, min_length=20, min_score=2) == PasswordPolicy(
        min_length=20, min_score=2
    )


def test_a_strong_passphrase_is_accepted() -> None:
    assert check_password(STRONG, PasswordPolicy()) == []


def test_a_short_password_is_refused_with_the_lengths_in_the_message() -> None:
    problems = check_password("Zq8!vR2#", PasswordPolicy())
    short = [p for p in problems if p.code is ProblemCode.TOO_SHORT]
    assert len(short) == 1
    assert "12" in short[0].message and "8" in short[0].message


def test_length_is_counted_in_code_points_after_nfkc() -> None:
    policy = PasswordPolicy(min_length=12, min_score=0, check_breached=False)
    # Twelve emoji are 12 code points (48 UTF-8 bytes): long enough.
    assert ProblemCode.TOO_SHORT not in codes("🐙🦑🐳🦀🐚🐠🦐🐡🐬🦈🐟🐊", policy)
    # "ﬃ" is one code point that NFKC turns into three ("ffi").
    assert ProblemCode.TOO_SHORT not in codes("ﬃﬃﬃﬃ", policy)
    assert ProblemCode.TOO_SHORT in codes("ﬃﬃﬃ", policy)


def test_a_password_over_max_length_is_refused() -> None:
    problems = check_password("a" * 257, PasswordPolicy())
    assert [p.code for p in problems] == [ProblemCode.TOO_LONG]
    assert "256" in problems[0].message


def test_a_long_password_up_to_max_length_is_accepted_quickly() -> None:
    import time

    password = " ".join(["violet marmalade tugboat ferris"] * 8)[:256]
    start = time.perf_counter()
    assert check_password(password, PasswordPolicy()) == []
    assert time.perf_counter() - start < 1.0


def test_no_composition_rules_lowercase_words_alone_are_fine() -> None:
    assert check_password("correct horse battery staple", PasswordPolicy()) == []


@pytest.mark.parametrize("password", ["password", "Password", "qwerty", "iloveyou"])
def test_a_common_password_is_refused_as_common(password: str) -> None:
    assert ProblemCode.COMMON in codes(password)


def test_a_long_common_password_is_refused_even_when_long_enough() -> None:
    long_common = next(p for p in sorted(common_passwords()) if len(p) >= 12)
    problems = codes(long_common)
    assert ProblemCode.TOO_SHORT not in problems
    assert ProblemCode.COMMON in problems


def test_the_common_list_check_can_be_turned_off() -> None:
    policy = PasswordPolicy(min_length=8, min_score=0, check_breached=False)
    assert check_password("password", policy) == []


def test_the_shipped_list_has_at_least_ten_thousand_passwords_and_is_cached() -> None:
    first = common_passwords()
    assert isinstance(first, frozenset)
    assert len(first) >= 10_000
    assert {"123456", "password", "qwerty"} <= first
    assert common_passwords() is first


def test_the_shipped_list_is_what_the_build_script_produces() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_common_passwords", DATA / "build_common_passwords.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with gzip.open(DATA / "common-passwords.txt.gz", "rt", encoding="utf-8") as shipped:
        lines = shipped.read().splitlines()
    assert lines == module.collect()


def test_a_weak_password_is_refused_with_zxcvbn_feedback_as_sentences() -> None:
    problems = check_password("abcabcabcabcabc", PasswordPolicy())
    weak = [p for p in problems if p.code is ProblemCode.TOO_WEAK]
    assert len(weak) == 1
    message = weak[0].message
    assert message.startswith("This password is too easy to guess.")
    assert "repeat" in message.lower()
    assert message.endswith(".")


def test_min_score_decides_what_is_weak() -> None:
    from zxcvbn import zxcvbn

    medium = "greenapple42x"
    assert zxcvbn(medium)["score"] == 3  # the premise of this test
    assert ProblemCode.TOO_WEAK not in codes(medium, PasswordPolicy(min_score=3))
    assert ProblemCode.TOO_WEAK in codes(medium, PasswordPolicy(min_score=4))


def test_a_password_built_on_the_users_email_is_refused() -> None:
    inputs = ["anna.berg@acme.example", "Anna Berg", "Acme Corporation"]
    assert ProblemCode.CONTAINS_USER_INFO in codes("AnnaBerg1987!", user_inputs=inputs)
    assert ProblemCode.CONTAINS_USER_INFO in codes("acmecorporation", user_inputs=inputs)
    # Without the user's details the same password is not flagged as theirs.
    assert ProblemCode.CONTAINS_USER_INFO not in codes("AnnaBerg1987!")


def test_the_service_name_is_always_a_context_word() -> None:
    assert ProblemCode.CONTAINS_USER_INFO in codes("imhost-imhost-2026")


def test_a_strong_passphrase_mentioning_a_name_in_passing_is_accepted() -> None:
    inputs = ["anna.berg@acme.example", "Anna Berg"]
    assert (
        check_password("anna likes violet marmalade tugboats", PasswordPolicy(), user_inputs=inputs)
        == []
    )


def test_context_words_split_email_and_names() -> None:
    words = context_words(["Anna.Berg@Acme.example", "Anna Berg"])
    assert {"anna.berg@acme.example", "anna", "berg", "acme", "imhost"} <= set(words)
    assert "example" not in words  # the top-level label is not personal
    assert all(len(w) >= 3 for w in words)


def test_control_characters_are_refused_with_a_reason() -> None:
    problems = check_password("violet\tmarmalade tugboat", PasswordPolicy())
    assert [p.code for p in problems] == [ProblemCode.INVALID_CHARACTER]


def test_every_problem_has_a_sentence() -> None:
    for password in ["", "short", "password", "a" * 300, "abcabcabcabcabc", "imhostimhost"]:
        for problem in check_password(password, PasswordPolicy()):
            assert problem.message and problem.message[-1] in ".!"


def test_ensure_acceptable_raises_invalid_input_listing_every_problem() -> None:
    with pytest.raises(InvalidInput) as exc:
        ensure_acceptable("password", PasswordPolicy(), field="new_password")
    assert exc.value.field == "new_password"
    listed = {p["code"] for p in exc.value.extra["problems"]}
    assert {"too_short", "common"} <= listed
    ensure_acceptable(STRONG, PasswordPolicy())


def test_concurrent_checks_do_not_see_each_others_user_inputs() -> None:
    # zxcvbn keeps user inputs in a global while scoring; the lock keeps checks apart.
    results: dict[str, set[ProblemCode]] = {}

    def run(name: str, inputs: list[str]) -> None:
        for _ in range(20):
            found = codes("zebulonquartz", PasswordPolicy(min_score=0), user_inputs=inputs)
            results.setdefault(name, set()).update(found)

    threads = [
        threading.Thread(target=run, args=("owner", ["zebulonquartz@acme.example"])),
        threading.Thread(target=run, args=("other", ["someone@else.example"])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ProblemCode.CONTAINS_USER_INFO in results["owner"]
    assert ProblemCode.CONTAINS_USER_INFO not in results["other"]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_check_password_never_raises_and_always_explains(password: str) -> None:
    for problem in check_password(password, PasswordPolicy()):
        assert isinstance(problem.code, ProblemCode)
        assert problem.message
