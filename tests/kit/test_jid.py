"""RFC 7622 JIDs: parsing, preparation (PRECIS profiles), limits and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imhost.kit.jid import (
    JID,
    parse_jid,
    prepare_domain,
    prepare_localpart,
    prepare_resource,
    try_parse_jid,
)

GOLDEN = json.loads((Path(__file__).parent / "data" / "precis_golden.json").read_text())
RFC7622_FORBIDDEN_IN_LOCALPART = set("\"&'/:<>@")


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
        ("\u2603@example.com", r"U\+2603 .*a symbol"),  # ☃
        ("\u2460@example.com", r"U\+2460 .*compatibility"),  # ①
        ("\ufb01@example.com", r"U\+FB01 .*compatibility"),  # ﬁ
        ("\u01c5@example.com", "compatibility"),  # ǅ, titlecase with a compatibility form
        ("a b@example.com", "forbidden character"),
        ("a\u3000b@example.com", r"U\+3000 \(IDEOGRAPHIC SPACE\)"),
        ("\u05d0a@example.com", "right-to-left"),  # the Bidi rule (RFC 5893)
        ("a@\u2603.example", "not a valid internationalised name"),
        ("a@xn--abc.example", "not a valid internationalised name"),
        ("a@b/\u2028", "disallowed character U\\+2028"),
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


@pytest.mark.parametrize(
    "vector",
    [v for v in GOLDEN if v["profile"] == "UsernameCaseMapped"],
    ids=lambda v: repr(v["input"])[:30],
)
def test_localpart_follows_the_username_case_mapped_vectors(vector: dict[str, str]) -> None:
    """precis-i18n's golden vectors (RFC 8265 §3.3), plus RFC 7622 §3.3.1's forbidden set."""
    refused = vector["error"] is not None or (
        RFC7622_FORBIDDEN_IN_LOCALPART & set(vector["output"])
    )
    if refused:
        with pytest.raises(ValueError):
            prepare_localpart(vector["input"])
    else:
        assert prepare_localpart(vector["input"]) == vector["output"]


@pytest.mark.parametrize(
    "vector",
    [v for v in GOLDEN if v["profile"] == "OpaqueString"],
    ids=lambda v: repr(v["input"])[:30],
)
def test_resourcepart_follows_the_opaque_string_vectors(vector: dict[str, str]) -> None:
    """precis-i18n's golden vectors for OpaqueString (RFC 8265 §4.2)."""
    if vector["error"] is not None:
        with pytest.raises(ValueError):
            prepare_resource(vector["input"])
    else:
        assert prepare_resource(vector["input"]) == vector["output"]


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        # RFC 8265 §3.5 examples for UsernameCaseMapped.
        ("juliet@example.com", "juliet@example.com"),
        ("fussball", "fussball"),
        ("fußball", "fußball"),
        ("π", "π"),
        ("Σ", "σ"),
        ("σ", "σ"),
        ("ς", "ς"),
        ("ＨＥＬＬＯ", "hello"),  # fullwidth, mapped to its narrow form
    ],
)
def test_rfc_8265_username_examples_are_accepted(raw: str, prepared: str) -> None:
    local = raw.split("@")[0]
    assert prepare_localpart(local) == prepared.split("@")[0]


@pytest.mark.parametrize("raw", ["\u2163", "foo bar", "", "henry\u2163", "\u2603", "\ufb01"])
def test_rfc_8265_username_counterexamples_are_refused(raw: str) -> None:
    """RFC 8265 §3.5: U+2163 ROMAN NUMERAL FOUR, spaces, empty; and the issue's ☃ and ﬁ."""
    with pytest.raises(ValueError):
        prepare_localpart(raw)


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        ("Bücher.Example", "bücher.example"),
        ("xn--bcher-kva.example", "bücher.example"),  # A-labels become U-labels (§3.2.1)
        ("XN--BCHER-KVA.example", "bücher.example"),
        ("ＢÜＣＨＥＲ．example", "bücher.example"),  # UTS 46 width mapping, fullwidth dot
        ("bu\u0308cher.example", "bücher.example"),  # NFC
        ("faß.de", "faß.de"),  # IDNA2008, not the transitional IDNA2003 mapping to "fass"
        ("example.com.", "example.com"),
    ],
)
def test_domainpart_is_idna2008_in_u_label_form(raw: str, prepared: str) -> None:
    assert prepare_domain(raw) == prepared
    assert prepare_domain(prepared) == prepared


def test_a_label_and_u_label_jids_are_the_same_address() -> None:
    assert parse_jid("user@xn--bcher-kva.example") == parse_jid("user@Bücher.example")
