"""SCRAM (RFC 5802 / RFC 7677) server side, PLAIN against SCRAM keys, channel binding."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from imhost.kit.scram import (
    ScramError,
    ScramHash,
    ScramServerExchange,
    derive_credentials,
    fake_credentials,
    verify_plain,
)


def test_rfc7677_sha256_vector() -> None:
    """RFC 7677 §3: user/pencil, salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    creds = derive_credentials("pencil", ScramHash.SHA256, salt=salt, iterations=4096)
    ex = ScramServerExchange(ScramHash.SHA256)
    ex.receive_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    ex._nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    first = ex.server_first(creds)
    assert first == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = ex.receive_client_final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_rfc5802_sha1_vector() -> None:
    """RFC 5802 §5: user/pencil, salt QSXCR+Q6sek8bf92, 4096 iterations."""
    salt = base64.b64decode("QSXCR+Q6sek8bf92")
    creds = derive_credentials("pencil", ScramHash.SHA1, salt=salt, iterations=4096)
    ex = ScramServerExchange(ScramHash.SHA1)
    ex.receive_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    ex._nonce = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j"
    ex.server_first(creds)
    final = ex.receive_client_final(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    assert final == b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="


def test_wrong_proof_and_nonce_are_refused() -> None:
    creds = derive_credentials("pencil", ScramHash.SHA256, iterations=16)
    ex = ScramServerExchange(ScramHash.SHA256)
    ex.receive_client_first(b"n,,n=user,r=abc")
    ex.server_first(creds)
    with pytest.raises(ScramError, match="nonce"):
        ex.receive_client_final(b"c=biws,r=abcX,p=AAAA")
    with pytest.raises(ScramError, match="proof"):
        ex.receive_client_final(
            f"c=biws,r={ex._nonce},p={base64.b64encode(bytes(32)).decode()}".encode()
        )


def _client_final(
    ex: ScramServerExchange,
    first_bare: str,
    server_first: bytes,
    password: str,
    gs2: bytes,
    cb_data: bytes = b"",
) -> bytes:
    attrs = dict(p.split("=", 1) for p in server_first.decode().split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    ck = hmac.new(salted, b"Client Key", "sha256").digest()
    sk = hashlib.sha256(ck).digest()
    c = base64.b64encode(gs2 + cb_data).decode()
    without = f"c={c},r={attrs['r']}"
    sig = hmac.new(
        sk, f"{first_bare},{server_first.decode()},{without}".encode(), "sha256"
    ).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig, strict=True))).decode()
    return f"{without},p={proof}".encode()


def test_channel_binding_plus() -> None:
    creds = derive_credentials("pw", ScramHash.SHA256, iterations=16)
    cb = b"certificate-hash"
    ex = ScramServerExchange(
        ScramHash.SHA256, plus=True, cb_type="tls-server-end-point", cb_data=cb, supports_plus=True
    )
    gs2 = b"p=tls-server-end-point,,"
    ex.receive_client_first(gs2 + b"n=u,r=n1")
    sf = ex.server_first(creds)
    assert ex.receive_client_final(_client_final(ex, "n=u,r=n1", sf, "pw", gs2, cb)).startswith(
        b"v="
    )
    # the wrong binding data fails (a man in the middle has another certificate)
    ex2 = ScramServerExchange(
        ScramHash.SHA256, plus=True, cb_type="tls-server-end-point", cb_data=cb, supports_plus=True
    )
    ex2.receive_client_first(gs2 + b"n=u,r=n1")
    sf2 = ex2.server_first(creds)
    with pytest.raises(ScramError, match="channel binding"):
        ex2.receive_client_final(_client_final(ex2, "n=u,r=n1", sf2, "pw", gs2, b"other"))


def test_downgrade_detected() -> None:
    """RFC 5802 §6: 'y' while the server advertises -PLUS means a stripped mechanism list."""
    ex = ScramServerExchange(ScramHash.SHA256, supports_plus=True)
    with pytest.raises(ScramError, match="downgrade"):
        ex.receive_client_first(b"y,,n=u,r=x")
    ScramServerExchange(ScramHash.SHA256).receive_client_first(b"y,,n=u,r=x")


def test_malformed_messages() -> None:
    for msg in (b"", b"n,,", b"x,,n=u,r=a", b"n,,m=ext,n=u,r=a", b"n,,n=u=,r=a", b"\xff"):
        with pytest.raises(ScramError):
            ScramServerExchange(ScramHash.SHA1).receive_client_first(msg)


def test_plain_checked_against_scram_keys() -> None:
    for h in ScramHash:
        creds = derive_credentials("correct horse", h, iterations=32)
        assert verify_plain("correct horse", creds, h)
        assert not verify_plain("correct horsE", creds, h)
        assert not verify_plain("bad\x00pw", creds, h)


def test_fake_credentials_are_stable_per_user_and_never_match() -> None:
    a = fake_credentials("ghost@x", b"secret", ScramHash.SHA256)
    b = fake_credentials("ghost@x", b"secret", ScramHash.SHA256)
    assert a.salt == b.salt and a.iterations == 4096
    assert a.stored_key != b.stored_key
    assert not verify_plain("", a, ScramHash.SHA256)
