"""XEP-0045 room state: configuration (with its XEP-0004 ``muc#roomconfig`` form),
affiliations, occupants and the history a joining occupant is sent. No I/O here: the
module (:mod:`.service`) turns this state into stanzas."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from imhost.xmpp.modules.api import Element, StanzaError, StanzaErrorCondition
from imhost.xmpp.ports import StoredRoom

if TYPE_CHECKING:
    from imhost.kit.jid import JID

NS_DATA = "jabber:x:data"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
RANK = {"owner": 4, "admin": 3, "member": 2, "none": 1, "outcast": 0}
"""Affiliations in XEP-0045 §5.2 order (higher outranks lower)."""

MAX_HISTORY = 50
"""The most messages a room keeps for joiners (``muc#maxhistoryfetch`` is at most this)."""
OCCUPANT_SECRET = "imhost#occupant_secret"  # noqa: S105 - a key name, not a secret
"""Stored-config key of the room's XEP-0421 secret (occupant ids stay the same on restart)."""


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """A room's ``muc#roomconfig`` settings (XEP-0045 §10.2, §15.5.3) with our defaults:
    a new room is temporary, public, open, unmoderated, without password, semi-anonymous."""

    name: str = ""
    description: str = ""
    persistent: bool = False
    public: bool = True
    members_only: bool = False
    moderated: bool = False
    password_protected: bool = False
    password: str = ""
    max_users: int = 0
    """0: only the plan's limit of occupants per room applies."""
    whois: str = "moderators"
    """Who may see occupants' real JIDs: ``moderators`` (semi-anonymous) or ``anyone``."""
    change_subject: bool = False
    """Participants may change the subject (moderators always may)."""
    allow_invites: bool = False
    """Participants may invite to a members-only room (admins and owners always may)."""
    allow_pm: str = "anyone"
    """Who may send private messages: ``anyone``, ``participants``, ``moderators``, ``none``."""
    history_length: int = 20


@dataclass(frozen=True, slots=True)
class _Field:
    var: str
    attr: str
    kind: str
    label: str
    options: tuple[str, ...] = ()


CONFIG_FIELDS: tuple[_Field, ...] = (
    _Field("muc#roomconfig_roomname", "name", "text-single", "Name"),
    _Field("muc#roomconfig_roomdesc", "description", "text-single", "Description"),
    _Field("muc#roomconfig_persistentroom", "persistent", "boolean", "Keep the room when empty"),
    _Field("muc#roomconfig_publicroom", "public", "boolean", "List the room publicly"),
    _Field("muc#roomconfig_membersonly", "members_only", "boolean", "Members only"),
    _Field("muc#roomconfig_moderatedroom", "moderated", "boolean", "Moderated"),
    _Field(
        "muc#roomconfig_passwordprotectedroom", "password_protected", "boolean", "Needs a password"
    ),
    _Field("muc#roomconfig_roomsecret", "password", "text-private", "Password"),
    _Field("muc#roomconfig_maxusers", "max_users", "text-single", "Most occupants (0: no limit)"),
    _Field(
        "muc#roomconfig_whois",
        "whois",
        "list-single",
        "Who may see real addresses",
        ("moderators", "anyone"),
    ),
    _Field(
        "muc#roomconfig_changesubject", "change_subject", "boolean", "Occupants may set the subject"
    ),
    _Field("muc#roomconfig_allowinvites", "allow_invites", "boolean", "Occupants may invite"),
    _Field(
        "muc#roomconfig_allowpm",
        "allow_pm",
        "list-single",
        "Who may send private messages",
        ("anyone", "participants", "moderators", "none"),
    ),
    _Field("muc#maxhistoryfetch", "history_length", "text-single", "Messages kept for joiners"),
)
_BY_VAR = {f.var: f for f in CONFIG_FIELDS}


def _form_value(config: RoomConfig, f: _Field) -> str:
    value = config.__getattribute__(f.attr)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def config_form(config: RoomConfig) -> Element:
    """The ``muc#roomconfig`` form (XEP-0004 ``type='form'``) with the current values."""
    x = Element("x", NS_DATA, {"type": "form"})
    x.sub("title", text="Room configuration")
    hidden = x.sub("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
    hidden.sub("value", text=NS_ROOMCONFIG)
    for f in CONFIG_FIELDS:
        el = x.sub("field", attrs={"var": f.var, "type": f.kind, "label": f.label})
        for option in f.options:
            el.sub("option", attrs={"label": option}).sub("value", text=option)
        el.sub("value", text=_form_value(config, f))
    return x


def _bool(var: str, value: str) -> bool:
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, f"{var} must be true or false")


def _int(var: str, value: str, low: int, high: int) -> int:
    text = value.strip()
    if text == "none":  # some clients send "none" for no limit
        return 0
    if not text.isdigit() or not low <= int(text) <= high:
        raise StanzaError(
            StanzaErrorCondition.NOT_ACCEPTABLE, f"{var} must be a number from {low} to {high}"
        )
    return int(text)


def form_values(x: Element) -> dict[str, list[str]]:
    """The fields of a submitted data form: var -> values."""
    out: dict[str, list[str]] = {}
    for child in x.elements():
        if child.name == "field" and child.ns == NS_DATA and child.get("var"):
            out[child.get("var", "")] = [v.text for v in child.elements() if v.name == "value"]
    return out


def apply_form(config: RoomConfig, x: Element) -> RoomConfig:
    """The configuration after a submitted form (XEP-0045 §10.2); fields not sent keep their
    value, unknown fields are ignored; a bad value is ``not-acceptable`` naming the field."""
    values = form_values(x)
    form_type = values.get("FORM_TYPE")
    if form_type and form_type[0] != NS_ROOMCONFIG:
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "this is not a room configuration form")
    changes: dict[str, object] = {}
    for var, given in values.items():
        f = _BY_VAR.get(var)
        if f is None:
            continue
        value = given[0] if given else ""
        if f.kind == "boolean":
            changes[f.attr] = _bool(var, value)
        elif f.attr == "max_users":
            changes[f.attr] = _int(var, value, 0, 1_000_000)
        elif f.attr == "history_length":
            changes[f.attr] = _int(var, value, 0, MAX_HISTORY)
        elif f.options:
            if value not in f.options:
                raise StanzaError(
                    StanzaErrorCondition.NOT_ACCEPTABLE,
                    f"{var} must be one of: {', '.join(f.options)}",
                )
            changes[f.attr] = value
        else:
            if len(value) > 1000:
                raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, f"{var} is too long")
            changes[f.attr] = value
    new = replace(config, **changes)  # type: ignore[arg-type]
    if new.password_protected and not new.password:
        raise StanzaError(
            StanzaErrorCondition.NOT_ACCEPTABLE, "a password-protected room needs a password"
        )
    if not new.password_protected and new.password:
        # a form that switches protection off (clients send back every field, the old
        # secret too) clears the password; one that only sets a secret switches it on
        if "muc#roomconfig_passwordprotectedroom" in values:
            new = replace(new, password="")
        else:
            new = replace(new, password_protected=True)
    return new


def config_to_stored(config: RoomConfig) -> dict[str, str]:
    return {f.var: _form_value(config, f) for f in CONFIG_FIELDS}


def config_from_stored(values: dict[str, str]) -> RoomConfig:
    """A stored configuration (unknown or damaged values fall back to the defaults)."""
    config = RoomConfig()
    x = Element("x", NS_DATA, {"type": "submit"})
    for var, value in values.items():
        if var in _BY_VAR:
            x.sub("field", attrs={"var": var}).sub("value", text=value)
    try:
        return apply_form(config, x)
    except StanzaError:
        return config


@dataclass(slots=True)
class Occupant:
    """One session in a room (XEP-0045 §5)."""

    nick: str
    address: JID
    """The real full JID; its session is looked up at each delivery (a XEP-0198 resumption
    moves the session to another stream)."""
    jid: str
    """The same, as text."""
    bare: str
    role: str
    presence: list[Element | str] = field(default_factory=list)
    """Children of the occupant's last presence to the room (show, status...), without the
    MUC payloads, re-sent to every occupant."""


@dataclass(slots=True)
class HistoryEntry:
    stanza: Element
    """The reflected message without ``to``."""
    stamp: datetime
    chars: int


@dataclass(slots=True)
class Room:
    """A room of the conference service."""

    name: str
    jid: str
    config: RoomConfig = field(default_factory=RoomConfig)
    affiliations: dict[str, str] = field(default_factory=dict)
    nicks: dict[str, str] = field(default_factory=dict)
    """Registered nicknames: bare JID -> nick (muc#register)."""
    subject: str = ""
    subject_by: str = ""
    occupants: dict[str, Occupant] = field(default_factory=dict)
    """Nick -> occupant."""
    by_jid: dict[str, str] = field(default_factory=dict)
    """Real full JID -> nick."""
    history: deque[HistoryEntry] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    locked: bool = False
    """Created with the MUC protocol and not yet configured (§10.1.1): only the owner enters."""
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    # -- who is who ----------------------------------------------------------------------------

    def affiliation(self, bare: str) -> str:
        return self.affiliations.get(bare, "none")

    def default_role(self, bare: str) -> str:
        """§5.1.2: the role an affiliation gets on entering."""
        affiliation = self.affiliation(bare)
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "outcast":
            return "none"
        if affiliation == "none" and self.config.moderated:
            return "visitor"
        return "participant"

    def occupant_of(self, full_jid: str) -> Occupant | None:
        nick = self.by_jid.get(full_jid)
        return self.occupants.get(nick) if nick is not None else None

    def occupants_of_bare(self, bare: str) -> list[Occupant]:
        return [o for o in self.occupants.values() if o.bare == bare]

    def nick_owner(self, nick: str) -> str | None:
        """The bare JID that registered ``nick``, if any."""
        for bare, reserved in self.nicks.items():
            if reserved == nick:
                return bare
        return None

    def owners(self) -> list[str]:
        return [b for b, a in self.affiliations.items() if a == "owner"]

    def occupant_id(self, bare: str) -> str:
        """XEP-0421: the same id for one real bare JID in this room, opaque to others."""
        digest = hmac.new(self.secret, bare.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:15]).decode("ascii")

    def sees_jids(self, viewer: Occupant) -> bool:
        return self.config.whois == "anyone" or viewer.role == "moderator"

    @property
    def persistent(self) -> bool:
        return self.config.persistent

    # -- storage -------------------------------------------------------------------------------

    def stored(self) -> StoredRoom:
        config = config_to_stored(self.config)
        config[OCCUPANT_SECRET] = base64.b64encode(self.secret).decode("ascii")
        return StoredRoom(
            name=self.name,
            config=config,
            affiliations=dict(self.affiliations),
            nicks=dict(self.nicks),
            subject=self.subject,
            subject_by=self.subject_by,
        )

    @classmethod
    def from_stored(cls, stored: StoredRoom, jid: str) -> Room:
        room = cls(
            name=stored.name,
            jid=jid,
            config=replace(config_from_stored(stored.config), persistent=True),
            affiliations={
                b: a for b, a in stored.affiliations.items() if a in AFFILIATIONS and a != "none"
            },
            nicks=dict(stored.nicks),
            subject=stored.subject,
            subject_by=stored.subject_by,
        )
        secret = stored.config.get(OCCUPANT_SECRET)
        if secret:
            try:
                room.secret = base64.b64decode(secret)
            except ValueError:
                room.secret = secrets.token_bytes(16)
        return room


def config_field_names() -> list[str]:
    """The ``muc#roomconfig`` fields this service understands (for the docs and tests)."""
    return [f.var for f in CONFIG_FIELDS]


__all__ = [
    "AFFILIATIONS",
    "CONFIG_FIELDS",
    "RANK",
    "ROLES",
    "HistoryEntry",
    "Occupant",
    "Room",
    "RoomConfig",
    "apply_form",
    "config_field_names",
    "config_form",
    "form_values",
]
