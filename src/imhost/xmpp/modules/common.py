"""Helpers shared by the IM modules: per-session keys several modules read and small stanza
utilities. Not a module itself (nothing here is loaded by the server). A module finds a
sibling module with ``ctx.module(SiblingClass)``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from imhost.kit.jid import JID, try_parse_jid

from .api import NS_CLIENT, Element, ModuleContext, SessionKey

if TYPE_CHECKING:
    from .api import C2SStream

BLOCKLIST = SessionKey[frozenset[str]]("blocklist", frozenset())
"""XEP-0191: the account's block list (bare, full and domain JIDs), the same frozenset on every
session of the account. Set by :mod:`.blocking`; read by presence to skip blocked contacts."""


def is_blocked(blocklist: frozenset[str], jid: JID) -> bool:
    """XEP-0191 §3.4 matching: a full JID, its bare JID, or its domain (also ``domain/res``)."""
    if not blocklist:
        return False
    return (
        jid.bare in blocklist
        or (bool(jid.resource) and str(jid) in blocklist)
        or jid.domain in blocklist
        or (bool(jid.resource) and f"{jid.domain}/{jid.resource}" in blocklist)
    )


def sender_of(stanza: Element) -> JID | None:
    return try_parse_jid(stanza.attrs.get("from"))


def new_iq(type_: str, to: str | None = None, from_: str | None = None) -> Element:
    attrs = {"type": type_, "id": secrets.token_hex(6)}
    if to:
        attrs["to"] = to
    if from_:
        attrs["from"] = from_
    return Element("iq", NS_CLIENT, attrs)


def presence(
    from_: str, to: str | None = None, type_: str | None = None, children: list[Any] | None = None
) -> Element:
    attrs = {"from": from_}
    if to is not None:
        attrs["to"] = to
    if type_ is not None:
        attrs["type"] = type_
    return Element("presence", NS_CLIENT, attrs, children if children is not None else [])


def retarget(stanza: Element, to: str) -> Element:
    """A shallow copy of ``stanza`` with another ``to`` (children shared, never mutated)."""
    attrs = dict(stanza.attrs)
    attrs["to"] = to
    return Element(stanza.name, stanza.ns, attrs, stanza.children)


def available_sessions(ctx: ModuleContext, localpart: str) -> list[C2SStream]:
    return [s for s in ctx.sessions(localpart) if s.available and not s.closed]
