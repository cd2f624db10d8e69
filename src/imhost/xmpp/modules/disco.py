"""XEP-0030: Service Discovery, for the server and for accounts."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable

from .api import (
    Element,
    IqTarget,
    IqType,
    Module,
    ModuleContext,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    result_of,
)

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
CAPS_NODE = "https://imhost.dev/xmpp"
"""XEP-0115 node of this server software (``node#ver`` is answered by disco#info)."""


def host_identities(ctx: ModuleContext) -> list[tuple[str, str, str]]:
    """The server's identities, deduplicated, in a stable order."""
    return sorted(set(ctx.identities))


def host_features(ctx: ModuleContext) -> list[str]:
    """Every feature the loaded modules advertise for the host, plus disco itself."""
    return sorted(ctx.host_features | {NS_DISCO_INFO, NS_DISCO_ITEMS})


def verification_string(identities: list[tuple[str, str, str]], features: list[str]) -> str:
    """XEP-0115 §5.1 ``ver`` (SHA-1, no data forms): base64 of the hash of
    ``category/type/lang/name<`` per identity then ``feature<`` per feature, both sorted."""
    parts = [f"{c}/{t}//{n}<" for c, t, n in sorted(identities)]
    parts.extend(f"{f}<" for f in sorted(set(features)))
    digest = hashlib.sha1("".join(parts).encode("utf-8"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def info_query(
    identities: list[tuple[str, str, str]], features: list[str], node: str | None = None
) -> Element:
    query = Element("query", NS_DISCO_INFO)
    if node:
        query.attrs["node"] = node
    for category, type_, name in identities:
        attrs = {"category": category, "type": type_}
        if name:
            attrs["name"] = name
        query.sub("identity", attrs=attrs)
    for var in features:
        query.sub("feature", attrs={"var": var})
    return query


class DiscoModule(Module):
    """XEP-0030 §3 disco#info and §4 disco#items, for the host and for accounts.

        The host's identities and features are whatever the loaded modules registered, read at
        query time (a module loaded later is included)::

            C: <iq type='get' id='d1' to='example.test'>
                 <query xmlns='http://jabber.org/protocol/disco#info'/></iq>
            S: <iq type='result' id='d1' from='example.test' to='alice@example.test/res'>
                 <query xmlns='http://jabber.org/protocol/disco#info'>
                   <identity category='server' type='im' name='imhost'/>
                   <feature var='http://jabber.org/protocol/disco#info'/> ...</query></iq>

        An account (§3.2 "on behalf of" the user) answers with ``account/registered`` and the
        account features to the user and to contacts with a presence subscription
        (``from``/``both``); anyone else gets ``service-unavailable``, as if it did not exist
        (RFC 6121 §8.5.1: no account enumeration). ``node`` other than the XEP-0115 ``node#ver``
        is ``item-not-found``. The host's items are the services modules list (``ctx.add_item``:
    the XEP-0045 conference service).
    """

    name = "disco"

    def load(self) -> None:
        ctx = self.ctx
        ctx.add_feature(NS_DISCO_INFO, IqTarget.BOTH)
        ctx.add_feature(NS_DISCO_ITEMS, IqTarget.BOTH)
        ctx.iq_handler(NS_DISCO_INFO, IqType.GET, self.on_info, IqTarget.BOTH)
        ctx.iq_handler(NS_DISCO_ITEMS, IqType.GET, self.on_items, IqTarget.BOTH)

    def on_info(self, event: StanzaEvent) -> Element | Awaitable[Element]:
        query = event.stanza.find("query", NS_DISCO_INFO)
        node = query.get("node") if query is not None else None
        to = event.to
        if to is None or not to.local:
            identities = host_identities(self.ctx)
            features = host_features(self.ctx)
            if node and node != f"{CAPS_NODE}#{verification_string(identities, features)}":
                raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
            reply = result_of(event.stanza)
            reply.children.append(info_query(identities, features, node))
            return reply
        if node:
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
        return self._account(event, info=True)

    def on_items(self, event: StanzaEvent) -> Element | Awaitable[Element]:
        query = event.stanza.find("query", NS_DISCO_ITEMS)
        if query is not None and query.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
        to = event.to
        if to is None or not to.local:
            reply = result_of(event.stanza)
            items = reply.sub("query", NS_DISCO_ITEMS)
            for jid, name in self.ctx.items:
                items.sub("item", attrs={"jid": jid, "name": name} if name else {"jid": jid})
            return reply
        return self._account(event, info=False)

    async def _account(self, event: StanzaEvent, *, info: bool) -> Element:
        to = event.to
        session = event.session
        assert to is not None
        own = session is not None and session.bare_str == to.bare
        if not own and not await self._may_see(to.local, event.sender.bare if event.sender else ""):
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        reply = result_of(event.stanza)
        if info:
            features = sorted(self.ctx.account_features | {NS_DISCO_INFO, NS_DISCO_ITEMS})
            reply.children.append(info_query([("account", "registered", "")], features))
        else:
            reply.sub("query", NS_DISCO_ITEMS)
        return reply

    async def _may_see(self, localpart: str, requester: str) -> bool:
        from .roster import RosterModule

        roster = self.ctx.module(RosterModule)
        if roster is None or not requester:
            return False
        if not await self.ctx.stores.auth.account_exists(self.ctx.domain, localpart):
            return False
        item = (await roster.roster(localpart)).items.get(requester)
        return item is not None and item.subscription in ("from", "both")
