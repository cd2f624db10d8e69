"""Helpers shared by the IM modules: per-session keys several modules read, sibling lookup,
and small stanza utilities. Not a module itself (nothing here is loaded by the server).
"""

from __future__ import annotations

import secrets
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from imhost.kit.jid import JID, try_parse_jid

from .api import NS_CLIENT, Element, Module, ModuleContext, SessionKey

if TYPE_CHECKING:
    from .api import C2SStream

BLOCKLIST = SessionKey[frozenset[str]]("blocklist", frozenset())
"""XEP-0191: the account's block list (bare, full and domain JIDs), the same frozenset on every
session of the account. Set by :mod:`.blocking`; read by presence to skip blocked contacts."""

M = TypeVar("M", bound=Module)

_REGISTRY: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Module]]] = (
    weakref.WeakKeyDictionary()
)
_STRONG: dict[int, dict[str, dict[str, Module]]] = {}


def _host_modules(ctx: ModuleContext) -> dict[str, Module]:
    # Keyed by the roster store object: one per server (tests create one backend per server).
    anchor = ctx.stores.roster
    try:
        per_host = _REGISTRY.setdefault(anchor, {})
    except TypeError:  # not weak-referenceable
        per_host = _STRONG.setdefault(id(anchor), {})
    return per_host.setdefault(ctx.domain, {})


def register_module(module: Module) -> None:
    """Make ``module`` findable by its siblings on the same host (see :func:`sibling`)."""
    _host_modules(module.ctx)[module.name] = module


def unregister_module(module: Module) -> None:
    mods = _host_modules(module.ctx)
    if mods.get(module.name) is module:
        del mods[module.name]


def sibling(ctx: ModuleContext, name: str, cls: type[M]) -> M | None:
    """The module named ``name`` loaded on the same host, if any (and of type ``cls``)."""
    finder = getattr(ctx, "module", None)
    found: object = finder(name) if callable(finder) else _host_modules(ctx).get(name)
    return found if isinstance(found, cls) else None


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
