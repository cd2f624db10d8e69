"""JIDs prepared per RFC 7622, with maintained implementations of the standards it cites.

- localpart: the PRECIS UsernameCaseMapped profile (RFC 8265 §3.3: width mapping, lower case,
  NFC, the IdentifierClass of RFC 8264, the Bidi rule), plus the characters RFC 7622 §3.3.1
  forbids (``" & ' / : < > @``). So "☃", "①", "ﬁ" and "ǅ" are refused, as RFC 8265 says.
- domainpart: RFC 7622 §3.2: a trailing dot is removed, IP literals in brackets are kept, and a
  name is checked with IDNA2008 (RFC 5891) after the UTS 46 mapping (lower case, width, NFC),
  then kept in its U-label form: ``xn--bcher-kva.example`` and ``Bücher.example`` are the same
  domain, ``bücher.example``. Plain ASCII names are letters, digits and hyphens (no label
  starting or ending with a hyphen, at most 63 octets).
- resourcepart: the PRECIS OpaqueString profile (RFC 8265 §4.2): non-ASCII spaces to U+0020,
  NFC, no control or unassigned characters.

The PRECIS profiles come from ``precis-i18n`` and IDNA from ``idna``. Each part is limited to
1023 octets once prepared (RFC 7622 §3.1). Parsing is cached, and ASCII input, what the router
sees on its hot path, takes a fast path that gives the same result as the full profiles.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import idna
from precis_i18n import get_profile

MAX_PART_BYTES = 1023
_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
# ASCII the IdentifierClass allows (U+0021..U+007E), lower case, less RFC 7622's forbidden ones.
_ASCII_LOCAL_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%()*+,-.;=?[\\]^_`{|}~")
_ASCII_DOMAIN_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_USERNAME = get_profile("UsernameCaseMapped")
_OPAQUE = get_profile("OpaqueString")

# What precis-i18n's reasons mean, in words a person can act on.
_REASONS = {
    "spaces": "a space",
    "symbols": "a symbol",
    "punctuation": "punctuation",
    "has_compat": "a compatibility character (write its plain form)",
    "controls": "a control character",
    "precis_ignorable_properties": "an invisible or non-character code point",
    "unassigned": "an unassigned code point",
    "other": "a character outside the allowed letters and digits",
    "old_hangul_jamo": "an archaic Hangul jamo",
    "bidi_rule": "a mix of right-to-left and left-to-right text that is not allowed",
    "context": "a joiner or mark out of its allowed context",
}


class JID:
    """An immutable, prepared JID. ``str(jid)`` is its canonical form."""

    __slots__ = ("_bare", "_str", "domain", "local", "resource")

    local: str
    domain: str
    resource: str
    _bare: str
    _str: str

    def __init__(self, local: str, domain: str, resource: str = "") -> None:
        """Build from parts that are already prepared (use :func:`parse_jid` for input)."""
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "resource", resource)
        bare = f"{local}@{domain}" if local else domain
        object.__setattr__(self, "_bare", bare)
        object.__setattr__(self, "_str", f"{bare}/{resource}" if resource else bare)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JID is immutable")

    @property
    def bare(self) -> str:
        """``local@domain`` (or ``domain``), as a string."""
        return self._bare

    @property
    def is_bare(self) -> bool:
        return not self.resource

    def to_bare(self) -> JID:
        return self if not self.resource else JID(self.local, self.domain)

    def with_resource(self, resource: str) -> JID:
        return JID(self.local, self.domain, prepare_resource(resource))

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"JID({self._str!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JID) and other._str == self._str

    def __hash__(self) -> int:
        return hash(self._str)


def _check_len(value: str, what: str) -> None:
    if len(value.encode("utf-8")) > MAX_PART_BYTES:
        raise ValueError(f"{what} is longer than {MAX_PART_BYTES} bytes (RFC 7622 §3.1)")


def _precis_error(what: str, exc: UnicodeEncodeError) -> ValueError:
    """A sentence naming the refused character and why (``exc`` is precis-i18n's error)."""
    reason = exc.reason.removeprefix("DISALLOWED/")
    if reason == "empty":
        return ValueError(f"{what} is empty")
    meaning = _REASONS.get(reason, reason.replace("_", " "))
    bad = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else ""
    if bad and reason not in ("bidi_rule", "context"):
        name = unicodedata.name(bad[0], "unnamed")
        return ValueError(
            f"{what} contains a disallowed character U+{ord(bad[0]):04X} ({name}): {meaning}"
        )
    return ValueError(f"{what} contains a disallowed character: {meaning}")


def prepare_localpart(value: str) -> str:
    """RFC 7622 §3.3 with the UsernameCaseMapped profile (RFC 8265 §3.3)."""
    if not value:
        raise ValueError("localpart is empty")
    if value.isascii():
        # Same result as the profile for ASCII: lower case, then U+0021..U+007E only.
        out = value.lower()
        bad = set(out) - _ASCII_LOCAL_OK
        if bad:
            raise ValueError(f"localpart contains a forbidden character: {min(bad)!r}")
    else:
        try:
            out = _USERNAME.enforce(value)
        except UnicodeEncodeError as exc:
            raise _precis_error("localpart", exc) from None
        for c in out:
            if c in _LOCAL_FORBIDDEN:
                raise ValueError(f"localpart contains a forbidden character: {c!r}")
    _check_len(out, "localpart")
    return out


def _check_ascii_labels(out: str) -> None:
    for label in out.split("."):
        if not label:
            raise ValueError("domainpart has an empty label")
        if len(label) > 63:
            raise ValueError("domainpart has a label longer than 63 octets")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError("domainpart label starts or ends with a hyphen")


def _idna_to_unicode(value: str) -> str:
    """UTS 46 mapping, IDNA2008 validation, then the U-label form (RFC 7622 §3.2.1)."""
    try:
        return idna.decode(idna.encode(value, uts46=True, std3_rules=True))
    except idna.IDNAError as exc:
        raise ValueError(f"domainpart is not a valid internationalised name: {exc}") from None


def prepare_domain(value: str) -> str:
    """RFC 7622 §3.2: IDNA2008 after UTS 46 mapping, kept as U-labels; IP literals kept."""
    if value.endswith("."):
        value = value[:-1]
    if not value:
        raise ValueError("domainpart is empty")
    if value.startswith("["):
        if not value.endswith("]") or len(value) < 3:
            raise ValueError("domainpart: malformed IP literal")
        return value.lower()
    if value.isascii():
        out = value.lower()
        if set(out) - _ASCII_DOMAIN_OK:
            raise ValueError("domainpart contains a character not allowed in a DNS name")
        _check_ascii_labels(out)
        if "xn--" in out:
            # A-labels are checked and turned into U-labels (RFC 7622 §3.2.1).
            out = _idna_to_unicode(out)
    else:
        for c in value:
            if unicodedata.category(c)[0] in ("C", "Z"):
                raise ValueError(f"domainpart contains a disallowed character U+{ord(c):04X}")
        if value.endswith(("。", "．", "｡")):  # UTS 46 maps these to '.'
            value = value[:-1]
        out = _idna_to_unicode(value)
    _check_len(out, "domainpart")
    return out


def prepare_resource(value: str) -> str:
    """RFC 7622 §3.4 with the OpaqueString profile (RFC 8265 §4.2)."""
    if not value:
        raise ValueError("resourcepart is empty")
    if value.isascii():
        # Same result as the profile for ASCII: U+0020..U+007E, kept as they are.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("resourcepart contains a control character")
        out = value
    else:
        try:
            out = _OPAQUE.enforce(value)
        except UnicodeEncodeError as exc:
            raise _precis_error("resourcepart", exc) from None
    _check_len(out, "resourcepart")
    return out


@lru_cache(maxsize=65536)
def parse_jid(value: str) -> JID:
    """Parse and prepare a JID string (RFC 7622 §3.1); raise ValueError with the reason."""
    if not value:
        raise ValueError("JID is empty")
    if len(value) > 3 * 1024 * 4:
        raise ValueError("JID is too long")
    # RFC 7622 §3.1: the first '/' separates the resource; the first '@' before it the local.
    slash = value.find("/")
    if slash >= 0:
        head, resource = value[:slash], value[slash + 1 :]
        if not resource:
            raise ValueError("resourcepart is empty after '/'")
    else:
        head, resource = value, ""
    at = head.find("@")
    if at >= 0:
        local, domain = head[:at], head[at + 1 :]
        if not local:
            raise ValueError("localpart is empty before '@'")
    else:
        local, domain = "", head
    return JID(
        prepare_localpart(local) if local else "",
        prepare_domain(domain),
        prepare_resource(resource) if resource else "",
    )


def try_parse_jid(value: str | None) -> JID | None:
    """Like :func:`parse_jid` but return None for a missing or invalid JID."""
    if not value:
        return None
    try:
        return parse_jid(value)
    except ValueError:
        return None
