"""SCRAM (RFC 5802, RFC 7677) for the server side, and PLAIN checked against SCRAM keys.

Passwords are never stored: an account keeps only ``(salt, iterations, StoredKey, ServerKey)``
per hash (RFC 5802 §3). A PLAIN login (RFC 4616) is verified by deriving ``ClientKey`` and
``StoredKey`` from the offered password with the stored salt and comparing in constant time.

Channel binding (RFC 5929, RFC 9266) is supported through the ``cb_data`` given to
:class:`ScramServerExchange`; :func:`tls_server_end_point` computes RFC 5929 §4 data from the
server certificate, which is available with every TLS version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_ITERATIONS = 4096
"""RFC 7677 §4 recommends at least 4096 iterations for SCRAM-SHA-256."""


class ScramHash(StrEnum):
    """The hash behind a SCRAM mechanism (RFC 5802 SHA-1, RFC 7677 SHA-256)."""

    SHA1 = "sha1"
    SHA256 = "sha256"

    @property
    def digest_size(self) -> int:
        return 20 if self is ScramHash.SHA1 else 32


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What an account stores for one hash: RFC 5802 §3 ``SaltedPassword`` derivatives."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


class ScramError(Exception):
    """The exchange failed; ``condition`` is the SASL failure condition (RFC 6120 §6.5)."""

    def __init__(self, message: str, condition: str = "not-authorized") -> None:
        super().__init__(message)
        self.condition = condition


def prepare_password(password: str) -> bytes:
    """Normalise a password like SASLprep/OpaqueString (RFC 8265 §4.2) and encode as UTF-8.

    Non-ASCII spaces map to U+0020 and the string is put in NFC; control characters are
    refused. ASCII passwords are left unchanged (the common case, and what every client sends).
    """
    if password.isascii():
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
            raise ValueError("password contains a control character")
        return password.encode()
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in password)
    normalized = unicodedata.normalize("NFC", mapped)
    if any(unicodedata.category(c) == "Cc" for c in normalized):
        raise ValueError("password contains a control character")
    return normalized.encode()


def _hmac(key: bytes, msg: bytes, h: ScramHash) -> bytes:
    return hmac.new(key, msg, h.value).digest()


def _h(data: bytes, h: ScramHash) -> bytes:
    return hashlib.new(h.value, data).digest()


def salted_password(password: str, salt: bytes, iterations: int, h: ScramHash) -> bytes:
    """RFC 5802 §3 ``Hi(Normalize(password), salt, i)`` (PBKDF2-HMAC)."""
    return hashlib.pbkdf2_hmac(h.value, prepare_password(password), salt, iterations)


def derive_credentials(
    password: str,
    h: ScramHash,
    *,
    salt: bytes | None = None,
    iterations: int = DEFAULT_ITERATIONS,
) -> ScramCredentials:
    """Derive the stored form of ``password`` for hash ``h`` (random 16-byte salt by default)."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = salt if salt is not None else os.urandom(16)
    sp = salted_password(password, salt, iterations, h)
    client_key = _hmac(sp, b"Client Key", h)
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=_h(client_key, h),
        server_key=_hmac(sp, b"Server Key", h),
    )


def verify_plain(password: str, creds: ScramCredentials, h: ScramHash) -> bool:
    """Check a PLAIN password against stored SCRAM keys, in constant time for the comparison."""
    try:
        sp = salted_password(password, creds.salt, creds.iterations, h)
    except ValueError:
        return False
    stored = _h(_hmac(sp, b"Client Key", h), h)
    return hmac.compare_digest(stored, creds.stored_key)


def fake_credentials(username: str, secret: bytes, h: ScramHash) -> ScramCredentials:
    """Deterministic credentials for an account that does not exist.

    The salt is derived from the username and a server secret so that repeated attempts see
    the same salt (RFC 5802 §9: do not reveal whether a user exists); the keys are random so
    no password matches.
    """
    salt = _hmac(secret, username.encode(), ScramHash.SHA256)[:16]
    return ScramCredentials(
        salt=salt,
        iterations=DEFAULT_ITERATIONS,
        stored_key=secrets.token_bytes(h.digest_size),
        server_key=secrets.token_bytes(h.digest_size),
    )


def _parse_attrs(message: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM attribute", "malformed-request")
        out.append((part[0], part[2:]))
    return out


def _decode_saslname(name: str) -> str:
    """RFC 5802 §5.1: ``=2C`` is ',' and ``=3D`` is '='; any other '=' is an error."""
    if "=" in name:
        rest = name.replace("=2C", "").replace("=3D", "")
        if "=" in rest:
            raise ScramError("bad escape in username", "malformed-request")
        name = name.replace("=2C", ",").replace("=3D", "=")
    return name


class ScramServerExchange:
    """One server-side SCRAM exchange (RFC 5802 §5).

    Use: ``username = exchange.receive_client_first(msg)``; look up credentials (or
    :func:`fake_credentials`); ``challenge = exchange.server_first(creds)``;
    ``success_data = exchange.receive_client_final(msg)`` (raises :class:`ScramError`).

    ``cb_type``/``cb_data`` describe the channel binding this server can offer on this
    connection; ``plus`` is True when the client chose a ``-PLUS`` mechanism.
    """

    __slots__ = (
        "_auth_message",
        "_cb_data",
        "_cb_type",
        "_client_first_bare",
        "_creds",
        "_gs2_header",
        "_hash",
        "_nonce",
        "_plus",
        "_server_first",
        "_supports_plus",
        "authzid",
        "username",
    )

    def __init__(
        self,
        h: ScramHash,
        *,
        plus: bool = False,
        cb_type: str | None = None,
        cb_data: bytes | None = None,
        supports_plus: bool = False,
    ) -> None:
        self._hash = h
        self._plus = plus
        self._cb_type = cb_type
        self._cb_data = cb_data
        self._supports_plus = supports_plus
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._auth_message = b""
        self._creds: ScramCredentials | None = None
        self.username = ""
        self.authzid: str | None = None

    def receive_client_first(self, message: bytes) -> str:
        """Parse client-first-message; return the (unprepared) username."""
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("not UTF-8", "malformed-request") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed client-first-message", "malformed-request")
        cbflag, authz, bare = parts
        if cbflag.startswith("p="):
            if not self._plus:
                raise ScramError("channel binding requested without -PLUS", "malformed-request")
            if cbflag[2:] != self._cb_type:
                raise ScramError("unsupported channel binding type", "not-authorized")
        elif cbflag == "y":
            # RFC 5802 §6: the client supports binding but thinks we do not. If we do
            # advertise -PLUS, this is a downgrade attack.
            if self._plus or self._supports_plus:
                raise ScramError("channel binding downgrade detected", "not-authorized")
        elif cbflag == "n":
            if self._plus:
                raise ScramError("-PLUS mechanism without channel binding", "malformed-request")
        else:
            raise ScramError("bad gs2 flag", "malformed-request")
        if authz:
            if not authz.startswith("a="):
                raise ScramError("bad authzid", "malformed-request")
            self.authzid = _decode_saslname(authz[2:])
        self._gs2_header = f"{cbflag},{authz},"
        attrs = _parse_attrs(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            if attrs and attrs[0][0] == "m":
                raise ScramError("extensions not supported", "malformed-request")
            raise ScramError("malformed client-first-message", "malformed-request")
        self.username = _decode_saslname(attrs[0][1])
        client_nonce = attrs[1][1]
        if not client_nonce or not client_nonce.isprintable() or "," in client_nonce:
            raise ScramError("bad nonce", "malformed-request")
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        if not self.username:
            raise ScramError("empty username", "malformed-request")
        return self.username

    def server_first(self, creds: ScramCredentials) -> bytes:
        """Build server-first-message for these credentials."""
        self._creds = creds
        salt = base64.b64encode(creds.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={creds.iterations}"
        return self._server_first.encode()

    def receive_client_final(self, message: bytes) -> bytes:
        """Verify client-final-message; return server-final-message (``v=...``)."""
        if self._creds is None:
            raise ScramError("out of order", "malformed-request")
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("not UTF-8", "malformed-request") from None
        attrs = _parse_attrs(text)
        if len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            raise ScramError("malformed client-final-message", "malformed-request")
        try:
            cbind = base64.b64decode(attrs[0][1], validate=True)
            proof = base64.b64decode(attrs[-1][1], validate=True)
        except ValueError:
            raise ScramError("bad base64", "incorrect-encoding") from None
        expected_cb = self._gs2_header.encode()
        if self._gs2_header.startswith("p="):
            expected_cb += self._cb_data or b""
        if not hmac.compare_digest(cbind, expected_cb):
            raise ScramError("channel binding mismatch", "not-authorized")
        if attrs[1][1] != self._nonce:
            raise ScramError("nonce mismatch", "not-authorized")
        without_proof = text.rsplit(",p=", 1)[0]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        h = self._hash
        signature = _hmac(self._creds.stored_key, auth_message, h)
        if len(proof) != len(signature):
            raise ScramError("bad proof", "not-authorized")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(_h(client_key, h), self._creds.stored_key):
            raise ScramError("bad proof", "not-authorized")
        server_sig = _hmac(self._creds.server_key, auth_message, h)
        return b"v=" + base64.b64encode(server_sig)


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1 channel binding data: hash of the server certificate.

    The hash is the certificate's signature hash, with MD5 and SHA-1 upgraded to SHA-256.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_der_x509_certificate(cert_der)
    algo = cert.signature_hash_algorithm
    name = algo.name if algo is not None else "sha256"
    if name in ("md5", "sha1"):
        name = "sha256"
    digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    hasher = hashes.Hash(digest.get(name, hashes.SHA256()))
    hasher.update(cert_der)
    return hasher.finalize()
