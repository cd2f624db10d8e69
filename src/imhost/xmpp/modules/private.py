"""XEP-0049: Private XML Storage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.parser import parse_fragment
from ..ports import StorageFull
from .api import (
    NS_CLIENT,
    Element,
    IqTarget,
    IqType,
    Module,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    result_of,
)

if TYPE_CHECKING:
    from .api import C2SStream

NS_PRIVATE = "jabber:iq:private"
REFUSED_NAMESPACES = frozenset(("jabber:client", "jabber:server", NS_PRIVATE, ""))
"""§3: these namespaces may not be stored (``not-acceptable``)."""
MAX_ELEMENT_BYTES = 64 * 1024
"""Largest element stored under one (name, namespace)."""
MAX_ELEMENTS_PER_SET = 16


def storage_key(el: Element) -> str:
    return f"{el.name} {el.ns}"


class PrivateModule(Module):
    """XEP-0049 §2: a user stores and reads back XML elements keyed by name and namespace::

        C: <iq type='set' id='p1'><query xmlns='jabber:iq:private'>
             <prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>
        S: <iq type='result' id='p1' to='alice@example.test/res'/>
        C: <iq type='get' id='p2'><query xmlns='jabber:iq:private'>
             <prefs xmlns='urn:example:prefs'/></query></iq>
        S: <iq type='result' id='p2' to='alice@example.test/res'><query xmlns='jabber:iq:private'>
             <prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>

    Nothing stored: the requested element comes back empty. Errors (§3): another account's
    storage ``forbidden``; a get with other than exactly one child, or an empty set,
    ``bad-request``; a refused namespace (jabber:client, jabber:server, jabber:iq:private,
    none) or an element over 64 KiB ``not-acceptable``. A set that would take the host over
    its plan's storage (``HostLimits.max_storage_bytes``, offline messages included) stores
    nothing and gets ``resource-constraint`` (RFC 6120 §8.3.3.18, type ``wait``) with the
    text; a set that does not grow the storage (smaller or emptied elements) always passes::

        S: <iq type='error' id='p3'><error type='wait'><resource-constraint .../>
             <text ...>the storage of example.test is full (its plan allows 100 MB);
             nothing was stored</text></error></iq>
    """

    name = "private"

    def load(self) -> None:
        self.ctx.add_feature(NS_PRIVATE, IqTarget.BOTH)
        self.ctx.iq_handler(NS_PRIVATE, IqType.GET, self.on_get, IqTarget.ACCOUNT)
        self.ctx.iq_handler(NS_PRIVATE, IqType.SET, self.on_set, IqTarget.ACCOUNT)

    @staticmethod
    def _children(event: StanzaEvent) -> tuple[C2SStream, list[Element]]:
        session = event.session
        if session is None or event.to is None or event.to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "this is not your private storage")
        query = event.stanza.find("query", NS_PRIVATE)
        children = list(query.elements()) if query is not None else []
        for child in children:
            if child.ns in REFUSED_NAMESPACES:
                raise StanzaError(
                    StanzaErrorCondition.NOT_ACCEPTABLE,
                    f"the namespace {child.ns!r} cannot be stored",
                )
        return session, children

    async def on_get(self, event: StanzaEvent) -> Element:
        session, children = self._children(event)
        if len(children) != 1:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "ask for exactly one element")
        wanted = children[0]
        stored = await self.ctx.stores.private.get_private(
            self.ctx.domain, session.localpart, storage_key(wanted)
        )
        found: Element | None = None
        if stored:
            try:
                found = parse_fragment(stored)
            except ValueError:
                found = None
        reply = result_of(event.stanza)
        query = reply.sub("query", NS_PRIVATE)
        query.children.append(found if found is not None else Element(wanted.name, wanted.ns))
        return reply

    async def on_set(self, event: StanzaEvent) -> Element:
        session, children = self._children(event)
        if not children or len(children) > MAX_ELEMENTS_PER_SET:
            raise StanzaError(
                StanzaErrorCondition.BAD_REQUEST,
                f"store between 1 and {MAX_ELEMENTS_PER_SET} elements",
            )
        serialised: list[tuple[str, str]] = []
        for child in children:
            xml = child.serialize(NS_CLIENT)
            if len(xml.encode("utf-8")) > MAX_ELEMENT_BYTES:
                raise StanzaError(
                    StanzaErrorCondition.NOT_ACCEPTABLE,
                    f"<{child.name}/> is larger than {MAX_ELEMENT_BYTES // 1024} KiB",
                )
            serialised.append((storage_key(child), xml))
        try:
            await self.ctx.stores.private.set_private(
                self.ctx.domain,
                session.localpart,
                serialised,
                self.ctx.host.limits.max_storage_bytes,
            )
        except StorageFull as full:
            raise StanzaError(
                StanzaErrorCondition.RESOURCE_CONSTRAINT, f"{full}; nothing was stored"
            ) from None
        return result_of(event.stanza)
