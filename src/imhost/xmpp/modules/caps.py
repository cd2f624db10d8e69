"""XEP-0115: Entity Capabilities (the server's caps, and a cache of clients' caps)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .api import Element, Hook, Module, SessionKey, StanzaEvent
from .common import new_iq
from .disco import (
    CAPS_NODE,
    NS_DISCO_INFO,
    host_features,
    host_identities,
    verification_string,
)

if TYPE_CHECKING:
    from .api import C2SStream

log = logging.getLogger("imhost.xmpp.caps")

NS_CAPS = "http://jabber.org/protocol/caps"
MAX_CACHED_VERS = 4096
"""Distinct client ``ver`` strings remembered per host (clients share a handful)."""


@dataclass(frozen=True, slots=True)
class ClientCaps:
    node: str
    ver: str
    features: frozenset[str] | None
    """Known once the ``ver`` was resolved and its hash verified (None while unknown)."""


CLIENT_CAPS = SessionKey[ClientCaps | None]("caps", None)


class CapsModule(Module):
    """XEP-0115 §6.3 (server caps in stream features) and §6.1 (caching clients' caps).

    After authentication the server announces its own capabilities; ``ver`` is the §5.1
    verification string of exactly what disco#info answers, recomputed when the loaded
    features change::

        S: <stream:features>... <c xmlns='http://jabber.org/protocol/caps' hash='sha-1'
             node='https://imhost.dev/xmpp' ver='...'/></stream:features>

    A client's presence carrying ``<c/>`` is remembered on its session; an unknown ``ver``
    is resolved once per host by a disco#info query to the client, and cached only if the
    hash of the answer matches (§5.4: a mismatch is not trusted).
    """

    name = "caps"

    def load(self) -> None:
        self._known: dict[str, frozenset[str]] = {}
        self._resolving: set[str] = set()
        self._ver_cache: tuple[tuple[int, int], str] | None = None
        self.ctx.add_stream_feature(self._feature)
        self.ctx.hook(Hook.PRESENCE_OUT, self.on_presence, priority=10)

    def server_ver(self) -> str:
        # Offered in every stream's features: computed again only when a module added a
        # feature or an identity.
        key = self.ctx.disco_generation
        if self._ver_cache is None or self._ver_cache[0] != key:
            ver = verification_string(host_identities(self.ctx), host_features(self.ctx))
            self._ver_cache = (key, ver)
        return self._ver_cache[1]

    def _feature(self, _session: C2SStream) -> Element:
        return Element("c", NS_CAPS, {"hash": "sha-1", "node": CAPS_NODE, "ver": self.server_ver()})

    def client_features(self, session: C2SStream) -> frozenset[str] | None:
        """What a client supports, if it announced caps we could verify."""
        caps = session.get(CLIENT_CAPS)
        return caps.features if caps is not None else None

    def on_presence(self, event: StanzaEvent) -> None:
        session = event.session
        if session is None or event.to is not None or event.stanza.get("type") is not None:
            return None
        c = event.stanza.find("c", NS_CAPS)
        if c is None:
            return None
        node, ver, algo = c.get("node", ""), c.get("ver", ""), c.get("hash", "")
        if not ver or algo != "sha-1":
            return None  # legacy or unsupported hash: not cached
        features = self._known.get(ver)
        session.set(CLIENT_CAPS, ClientCaps(node, ver, features))
        if features is None and ver not in self._resolving and len(self._known) < MAX_CACHED_VERS:
            self._resolving.add(ver)
            self.ctx.spawn(self._resolve(session, node, ver))
        return None

    async def _resolve(self, session: C2SStream, node: str, ver: str) -> None:
        try:
            iq = new_iq("get")
            iq.sub("query", NS_DISCO_INFO, {"node": f"{node}#{ver}"})
            answer = await self.ctx.request(session, iq, timeout=15)
        except TimeoutError:
            return
        finally:
            self._resolving.discard(ver)
        query = answer.find("query", NS_DISCO_INFO)
        if answer.get("type") != "result" or query is None:
            return
        identities = [
            (i.get("category", ""), i.get("type", ""), i.get("name", ""))
            for i in query.elements()
            if i.name == "identity"
        ]
        features = [f.get("var", "") for f in query.elements() if f.name == "feature"]
        if verification_string(identities, features) != ver:
            log.info("caps ver %s from %s does not match its disco#info", ver, session.jid_str)
            return
        known = frozenset(features)
        self._known[ver] = known
        for other in self.ctx.online_accounts():
            for s in self.ctx.sessions(other):
                caps = s.get(CLIENT_CAPS)
                if caps is not None and caps.ver == ver and caps.features is None:
                    s.set(CLIENT_CAPS, ClientCaps(caps.node, ver, known))
