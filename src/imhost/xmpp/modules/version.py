"""XEP-0092: Software Version (the server's, and each client's for troubleshooting)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from .api import (
    Element,
    Hook,
    IqTarget,
    IqType,
    Module,
    SessionEvent,
    SessionKey,
    StanzaEvent,
    result_of,
)
from .common import new_iq

if TYPE_CHECKING:
    from .api import C2SStream

log = logging.getLogger("imhost.xmpp.version")

NS_VERSION = "jabber:iq:version"
MAX_FIELD_CHARS = 200
"""A client's name, version and os are cut to this length before they are kept."""


@dataclass(frozen=True, slots=True)
class ClientVersion:
    """What a client said about itself (XEP-0092 §2), for support and troubleshooting."""

    name: str
    version: str
    os: str


CLIENT_VERSION = SessionKey[ClientVersion | None]("client-version", None)
_QUERY = SessionKey[asyncio.Task[None] | None]("client-version-query", None)


def server_version() -> str:
    try:
        return metadata.version("imhost")
    except metadata.PackageNotFoundError:
        return "0"


class VersionModule(Module):
    """XEP-0092 §2: the server answers ``jabber:iq:version`` (name and version, no OS: it
    helps attackers more than users)::

        C: <iq type='get' id='v1' to='example.test'><query xmlns='jabber:iq:version'/></iq>
        S: <iq type='result' id='v1' from='example.test' to='alice@example.test/res'>
             <query xmlns='jabber:iq:version'><name>imhost</name><version>0.1.0</version>
             </query></iq>

    After a resource is bound the server asks the client the same question in the
    background and keeps the answer on the session (``CLIENT_VERSION``), listed by
    :meth:`client_versions` and reported through ``ctx.report_client_version`` (kept on the
    account), so support can see which client someone uses. A client that does not answer, or
    answers with an error, is simply not identified.
    """

    name = "version"
    query_timeout = 20.0

    def load(self) -> None:
        self._server_version = server_version()
        self.ctx.add_feature(NS_VERSION)
        self.ctx.iq_handler(NS_VERSION, IqType.GET, self.on_query, IqTarget.HOST)
        self.ctx.hook(Hook.SESSION_BOUND, self.on_bound)
        self.ctx.hook(Hook.SESSION_CLOSED, self.on_closed)

    def on_query(self, event: StanzaEvent) -> Element:
        reply = result_of(event.stanza)
        query = reply.sub("query", NS_VERSION)
        query.sub("name", text="imhost")
        query.sub("version", text=self._server_version)
        return reply

    def on_bound(self, event: SessionEvent) -> None:
        event.session.set(_QUERY, self.ctx.spawn(self._ask(event.session)))

    def on_closed(self, event: SessionEvent) -> None:
        task = event.session.get(_QUERY)
        if task is not None and not task.done():
            task.cancel()
        event.session.set(_QUERY, None)

    async def _ask(self, session: C2SStream) -> None:
        iq = new_iq("get")
        iq.sub("query", NS_VERSION)
        try:
            answer = await self.ctx.request(session, iq, timeout=self.query_timeout)
        except TimeoutError:
            return
        finally:
            session.set(_QUERY, None)
        query = answer.find("query", NS_VERSION)
        if answer.get("type") != "result" or query is None or session.closed:
            return
        info = ClientVersion(
            name=(query.find_text("name", NS_VERSION) or "").strip()[:MAX_FIELD_CHARS],
            version=(query.find_text("version", NS_VERSION) or "").strip()[:MAX_FIELD_CHARS],
            os=(query.find_text("os", NS_VERSION) or "").strip()[:MAX_FIELD_CHARS],
        )
        session.set(CLIENT_VERSION, info)
        software = " ".join(part for part in (info.name, info.version) if part)
        if info.os:
            software += f" ({info.os})"
        if software:
            try:
                self.ctx.report_client_version(session, software)
            except Exception:
                log.exception("reporting the client version of %s failed", session.jid_str)

    def client_versions(self) -> dict[str, ClientVersion]:
        """Full JID -> client software of every bound session that answered."""
        out: dict[str, ClientVersion] = {}
        for localpart in self.ctx.online_accounts():
            for session in self.ctx.sessions(localpart):
                info = session.get(CLIENT_VERSION)
                if info is not None:
                    out[session.jid_str] = info
        return out
