"""RFC 7622 JIDs: parsing, preparation (PRECIS profiles), limits and error messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imhost.kit.jid import JID, parse_jid, prepare_localpart, try_parse_jid


@pytest.mark.parametrize(
    ("raw", "local", "domain", "resource"),
    [
        ("example.com", "", "example.com", ""),
        ("Juliet@Example.COM", "juliet", "example.com", ""),
        ("juliet@example.com/Balcony", "juliet", "example.com", "Balcony"),
        ("juliet@example.com/a/b@c", "juliet", "example.com", "a/b@c"),  # first '/' splits
        ("example.com/res@x", "", "example.com", "res@x"),
        ("ΣΑΣ@example.com", "σας", "example.com", ""),  # toLowerCase, final sigma (RFC 8265)
        ("ＪＵＬＩＥＴ@example.com", "juliet", "example.com", ""),  # width mapped
        ("juliet@example.com./r", "juliet", "example.com", "r"),  # trailing dot
        ("x@[::1]", "x", "[::1]", ""),
        ("user@bücher.example", "user", "bücher.example", ""),
        ("a@b/\u00a0space", "a", "b", " space"),  # OpaqueString maps non-ASCII spaces
    ],
)
def test_parse_and_prepare(raw: str, local: str, domain: str, resource: str) -> None:
    jid = parse_jid(raw)
    assert (jid.local, jid.domain, jid.resource) == (local, domain, resource)
    assert parse_jid(str(jid)) == jid


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("@example.com", "localpart is empty"),
        ("juliet@", "domainpart is empty"),
        ("juliet@example.com/", "resourcepart is empty"),
        ("jul'iet@example.com", "forbidden character"),
        ("jul:iet@example.com", "forbidden character"),
        ("a@b@c", "character not allowed"),
        ("a@exa mple.com", "character not allowed"),
        ("a@example..com", "empty label"),
        ("a@-example.com", "hyphen"),
        ("a@" + "x" * 64 + ".com", "longer than 63"),
        ("x" * 1024 + "@example.com", "1023 bytes"),
        ("a@b/" + "r" * 1024, "1023 bytes"),
        ("a@b/x\x07", "control character"),
        ("a\u200b@example.com", "disallowed character"),
    ],
)
def test_invalid_jids_have_clear_messages(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jid(raw)
    assert try_parse_jid(raw) is None


def test_bare_and_full() -> None:
    jid = parse_jid("romeo@montague.lit/orchard")
    assert jid.bare == "romeo@montague.lit"
    assert jid.to_bare() == JID("romeo", "montague.lit")
    assert not jid.is_bare and jid.to_bare().is_bare
    assert jid.with_resource("garden") == parse_jid("romeo@montague.lit/garden")
    with pytest.raises(AttributeError):
        jid.local = "mallory"  # type: ignore[misc]


def test_localpart_preparation_is_idempotent_on_examples() -> None:
    for raw in ("Juliet", "ΣΑΣ", "ＪＵＬＩＥＴ", "o'brien".replace("'", ""), "Ünïcödé"):
        once = prepare_localpart(raw)
        assert prepare_localpart(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_parse_never_crashes_and_is_stable(raw: str) -> None:
    try:
        jid = parse_jid(raw)
    except ValueError:
        return
    assert parse_jid(str(jid)) == jid
