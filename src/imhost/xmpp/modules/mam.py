"""XEP-0313: Message Archive Management for accounts, with XEP-0059 result sets and
XEP-0359 stanza ids."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from imhost.kit.jid import JID, parse_jid

from ..ports import (
    ArchivedMessage,
    ArchiveFilter,
    ArchivePage,
    ArchivePrefs,
    UnknownArchiveId,
)
from .api import (
    NS_CLIENT,
    Element,
    Hook,
    IqTarget,
    IqType,
    Module,
    SessionEvent,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    result_of,
)
from .roster import RosterModule

if TYPE_CHECKING:
    from .api import C2SStream

log = logging.getLogger(__name__)

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_SID = "urn:xmpp:sid:0"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_DATA = "jabber:x:data"
NS_HINTS = "urn:xmpp:hints"
NS_FULLTEXT = "urn:xmpp:fulltext:0"
FULLTEXT_FIELD = "{urn:xmpp:fulltext:0}fulltext"

PRIORITY = 70
"""After blocking (100: a refused message is not archived), before carbons (50: the copies
carry the ``stanza-id``)."""

DEFAULT_PAGE = 50
"""Results per page when the client gives no ``<max/>``."""
MAX_PAGE = 250
"""The largest ``<max/>`` a client may ask for; more is ``policy-violation``."""
FLUSH_SECONDS = 0.2
FLUSH_ITEMS = 500
"""The archive writes are queued and stored in one batch every ``FLUSH_SECONDS`` or as soon
as ``FLUSH_ITEMS`` wait, whichever comes first."""
MAX_QUEUED = 100_000
"""Bound on messages kept while the store fails (the oldest are dropped past it, logged)."""

QUERY_FIELDS = ("FORM_TYPE", "with", "start", "end", "after-id", "before-id", "ids")
POLICIES = ("always", "never", "roster")

_counter = itertools.count()
_PROCESS = secrets.token_hex(3)
"""Random per process: two nodes archiving in the same microsecond make different ids."""


def new_archive_id(stamp: datetime) -> str:
    """A new archive id: the time (microseconds, hex), a counter, and this process's random
    part, so that ids of one node sort in the order they were made and never repeat."""
    micros = int(stamp.timestamp() * 1_000_000)
    return f"{micros:014x}{next(_counter) % 0x1000000:06x}{_PROCESS}"


def format_stamp(when: datetime) -> str:
    """XEP-0082 date-time with microseconds, UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(value: str) -> datetime:
    """A XEP-0082 date-time; ``ValueError`` when it is not one (or has no time zone)."""
    text = value.strip()
    if "T" not in text:
        raise ValueError(f"{value!r} is not a date and time")
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return when.astimezone(UTC)


def archivable(stanza: Element) -> bool:
    """XEP-0313 §5.1.1 and XEP-0334: chat and normal messages with a body, or with a
    ``<store/>`` hint; never ones with ``<no-store/>`` or ``<no-permanent-store/>``, never
    groupchat (the room archives those), headline or error."""
    if stanza.attrs.get("type", "normal") not in ("chat", "normal"):
        return False
    keep = False
    for child in stanza.elements():
        if child.ns == NS_HINTS:
            if child.name in ("no-store", "no-permanent-store"):
                return False
            if child.name == "store":
                keep = True
        elif child.name == "body" and child.ns == NS_CLIENT:
            keep = True
    return keep


def has_stanza_id(stanza: Element, by: str) -> bool:
    return any(
        c.ns == NS_SID and c.name == "stanza-id" and c.get("by") == by for c in stanza.elements()
    )


def strip_stanza_ids(stanza: Element, by: str) -> None:
    """XEP-0359 §3.1: drop ``<stanza-id/>`` elements claiming to come from ``by`` (only the
    entity ``by`` names may add them)."""
    children = stanza.children
    if any(
        isinstance(c, Element) and c.ns == NS_SID and c.name == "stanza-id" and c.get("by") == by
        for c in children
    ):
        stanza.children = [
            c
            for c in children
            if not (
                isinstance(c, Element)
                and c.ns == NS_SID
                and c.name == "stanza-id"
                and c.get("by") == by
            )
        ]


class ArchiveWriter:
    """The queue of messages waiting to be stored: flushed in one ``append`` every
    ``FLUSH_SECONDS`` or at ``FLUSH_ITEMS`` (never on the message path); a failed batch stays
    queued for the next flush."""

    def __init__(self, module: MamModule) -> None:
        self.module = module
        self.queue: list[ArchivedMessage] = []
        self.lock = asyncio.Lock()
        self.dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flush_due = False
        """A flush is spawned and has not taken the queue yet (never two waiting)."""
        self._failing = False
        """The last batch failed: retry on the timer only, not at every message."""

    def add(self, message: ArchivedMessage) -> None:
        self.queue.append(message)
        if len(self.queue) >= FLUSH_ITEMS and not self._failing:
            self._cancel_timer()
            self._spawn_flush()
        elif self._timer is None and not self._flush_due:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(FLUSH_SECONDS, self._on_timer)

    def _spawn_flush(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self.module.ctx.spawn(self.flush())

    def _on_timer(self) -> None:
        self._timer = None
        if self.queue:
            self._spawn_flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def flush(self) -> None:
        """Store what is queued (and what an earlier failure left)."""
        async with self.lock:
            self._flush_due = False
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            try:
                await self.module.ctx.stores.archive.append(batch)
                self._failing = False
            except Exception:
                log.exception("storing %d archived messages failed; retrying", len(batch))
                self._failing = True
                self.queue[:0] = batch
                excess = len(self.queue) - MAX_QUEUED
                if excess > 0:
                    del self.queue[:excess]
                    self.dropped += excess
                if self._timer is None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(FLUSH_SECONDS * 5, self._on_timer)

    def close(self) -> None:
        self._cancel_timer()


class MamModule(Module):
    """XEP-0313 (``urn:xmpp:mam:2``) for the host's accounts.

    Every archivable 1:1 message (:func:`archivable`) is stored in the sender's archive and
    in the recipient's, as each one's preferences (§6) allow, and the recipient's copy gets
    the archive id as a XEP-0359 stanza id (also in carbons and offline delivery)::

        (bob sends alice a chat message; alice gets:)
        S: <message from='bob@example.test/res' to='alice@example.test' type='chat'>
             <body>hi</body>
             <stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.test' id='0005f1...'/>
           </message>
        C: <iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f27'>
             <x xmlns='jabber:x:data' type='submit'>
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>
               <field var='with'><value>bob@example.test</value></field></x>
             <set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set></query></iq>
        S: <message to='alice@example.test/phone' from='alice@example.test'>
             <result xmlns='urn:xmpp:mam:2' queryid='f27' id='0005f1...'>
               <forwarded xmlns='urn:xmpp:forward:0'>
                 <delay xmlns='urn:xmpp:delay' stamp='2026-12-03T09:30:00.000000Z'/>
                 <message xmlns='jabber:client' ...><body>hi</body></message>
             </forwarded></result></message>
        S: <iq type='result' id='q1'><fin xmlns='urn:xmpp:mam:2' queryid='f27' complete='true'>
             <set xmlns='http://jabber.org/protocol/rsm'><first>0005f1...</first>
               <last>0005f1...</last><count>1</count></set></fin></iq>

    Queries (§4): ``with``, ``start``, ``end``, ``after-id``, ``before-id``, ``ids``
    (``#extended``) and ``{urn:xmpp:fulltext:0}fulltext`` (every word in the body), paged
    by XEP-0059 (``max`` up to :data:`MAX_PAGE`, ``after``, ``before``, empty ``before`` for
    the last page), ``<flip-page/>`` (§4.1.2). Errors: an id not in the archive is
    ``item-not-found``, a bad form ``not-acceptable``, a ``max`` over the limit
    ``policy-violation``, another account's archive ``forbidden``. Writes are queued and
    stored in batches (:class:`ArchiveWriter`); a query first stores what waits.
    """

    name = "mam"
    depends = (RosterModule,)

    def load(self) -> None:
        ctx = self.ctx
        self._roster = ctx.module(RosterModule)
        self._prefs: dict[str, ArchivePrefs] = {}
        """Preferences by localpart, read once per account (then kept: they are small)."""
        self.writer = ArchiveWriter(self)
        self._last_serialized: tuple[Element, list[Element | str], int, str] | None = None
        for feature in (NS_MAM, NS_MAM_EXTENDED, NS_SID, NS_FULLTEXT):
            ctx.add_feature(feature, IqTarget.ACCOUNT)
        ctx.iq_handler(NS_MAM, IqType.GET, self.on_get, IqTarget.ACCOUNT)
        ctx.iq_handler(NS_MAM, IqType.SET, self.on_set, IqTarget.ACCOUNT)
        ctx.hook(Hook.MESSAGE_OUT, self.on_sent, priority=PRIORITY)
        ctx.hook(Hook.MESSAGE_TO_BARE, self.on_received, priority=PRIORITY)
        ctx.hook(Hook.MESSAGE_TO_FULL, self.on_received, priority=PRIORITY)
        ctx.hook(Hook.SESSION_BOUND, self.on_bound)

    def unload(self) -> None:
        self.writer.close()

    async def stop(self) -> None:
        """Graceful stop: store what waits in the queue."""
        self.writer.close()
        await self.writer.flush()

    # -- preferences ------------------------------------------------------------------------

    async def prefs(self, localpart: str) -> ArchivePrefs:
        found = self._prefs.get(localpart)
        if found is None:
            stored = await self.ctx.stores.archive.get_prefs(self.ctx.domain, localpart)
            found = self._prefs[localpart] = stored or ArchivePrefs()
        return found

    def on_bound(self, event: SessionEvent) -> None:
        localpart = event.session.localpart
        if localpart and localpart not in self._prefs:
            self.ctx.spawn(self.prefs(localpart))

    def _in_roster(self, localpart: str, peer: str) -> bool | Awaitable[bool]:
        roster = self._roster
        if roster is None:
            return False
        cached = roster.cached(localpart)
        if cached is not None:
            return peer in cached.items

        async def load() -> bool:
            return peer in (await roster.roster(localpart)).items

        return load()

    def _wants(self, localpart: str, peer: str) -> bool | Awaitable[bool]:
        """Whether ``localpart``'s preferences archive a message with ``peer`` (bare)."""
        prefs = self._prefs.get(localpart)
        if prefs is None:

            async def later() -> bool:
                await self.prefs(localpart)
                decided = self._wants(localpart, peer)
                return decided if isinstance(decided, bool) else await decided

            return later()
        if peer in prefs.never:
            return False
        if peer in prefs.always:
            return True
        if prefs.default == "roster":
            return self._in_roster(localpart, peer)
        return prefs.default == "always"

    # -- archiving --------------------------------------------------------------------------

    def _serialize(self, stanza: Element) -> str:
        """The stanza's XML; the sender's copy and the recipient's are one serialisation (the
        same element, its children untouched in between)."""
        last = self._last_serialized
        children = stanza.children
        if (
            last is not None
            and last[0] is stanza
            and last[1] is children
            and last[2] == len(children)
        ):
            return last[3]
        xml = stanza.serialize(NS_CLIENT)
        self._last_serialized = (stanza, children, len(children), xml)
        return xml

    def _archive(
        self, localpart: str, peer: JID, stanza: Element, *, outgoing: bool
    ) -> ArchivedMessage:
        stamp = self.ctx.clock.now()
        message = ArchivedMessage(
            id=new_archive_id(stamp),
            domain=self.ctx.domain,
            localpart=localpart,
            with_jid=peer.bare,
            with_resource=peer.resource,
            stamp=stamp,
            outgoing=outgoing,
            stanza=self._serialize(stanza),
            text=stanza.find_text("body", NS_CLIENT) or "",
        )
        self.writer.add(message)
        return message

    def on_sent(self, event: StanzaEvent) -> Awaitable[None] | None:
        """The sender's copy (§5.1.2: outgoing messages are archived too)."""
        session = event.session
        to = event.to
        stanza = event.stanza
        if session is None or to is None or not session.localpart or not archivable(stanza):
            return None
        if to.bare == session.bare_str:
            return None  # to oneself: archived once, as received
        localpart = session.localpart
        wanted = self._wants(localpart, to.bare)
        if wanted is True:
            self._archive(localpart, to, stanza, outgoing=True)
            return None
        if wanted is False:
            return None
        return self._sent_later(wanted, localpart, to, stanza)

    async def _sent_later(
        self, wanted: Awaitable[bool], localpart: str, to: JID, stanza: Element
    ) -> None:
        if await wanted:
            self._archive(localpart, to, stanza, outgoing=True)

    def on_received(self, event: StanzaEvent) -> Awaitable[None] | None:
        """The recipient's copy, and its id as ``<stanza-id/>`` on the delivered message."""
        to = event.to
        stanza = event.stanza
        if to is None or not to.local:
            return None
        own = to.bare
        origin = event.session
        if origin is None and has_stanza_id(stanza, own):
            return None  # routed again by the server (XEP-0198 requeue): archived already
        strip_stanza_ids(stanza, own)
        if not archivable(stanza):
            return None
        if origin is not None and origin.jid is not None:
            peer = origin.jid  # the sender's session: its JID is the stamped 'from'
        else:
            sender = stanza.attrs.get("from")
            if not sender:
                return None
            try:
                peer = parse_jid(sender)
            except ValueError:
                return None
        wanted = self._wants(to.local, peer.bare)
        if wanted is True:
            self._received(to, peer, stanza)
            return None
        if wanted is False:
            return None
        return self._received_later(wanted, to, peer, stanza)

    async def _received_later(
        self, wanted: Awaitable[bool], to: JID, peer: JID, stanza: Element
    ) -> None:
        if await wanted:
            self._received(to, peer, stanza)

    def _received(self, to: JID, peer: JID, stanza: Element) -> None:
        message = self._archive(to.local, peer, stanza, outgoing=False)
        stanza.sub("stanza-id", NS_SID, {"by": to.bare, "id": message.id})

    # -- iq ---------------------------------------------------------------------------------

    @staticmethod
    def _own(event: StanzaEvent) -> C2SStream:
        session = event.session
        if session is None or event.to is None or event.to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only your own archive")
        return session

    def on_get(self, event: StanzaEvent) -> Element | Awaitable[Element]:
        session = self._own(event)
        payload = next(event.stanza.elements())
        if payload.name == "query":
            return self._form(event.stanza, payload)
        if payload.name == "prefs":
            return self._prefs_reply(event.stanza, session.localpart)
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "expected <query/> or <prefs/>")

    def on_set(self, event: StanzaEvent) -> Awaitable[Element]:
        session = self._own(event)
        payload = next(event.stanza.elements())
        if payload.name == "query":
            return self._query(event.stanza, payload, session)
        if payload.name == "prefs":
            return self._set_prefs(event.stanza, payload, session.localpart)
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "expected <query/> or <prefs/>")

    @staticmethod
    def _form(iq: Element, query: Element) -> Element:
        """§4.1.1: the query form."""
        reply = result_of(iq)
        out = reply.sub("query", NS_MAM)
        if query.get("queryid"):
            out.attrs["queryid"] = query.attrs["queryid"]
        form = out.sub("x", NS_DATA, {"type": "form"})
        form.sub("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).sub("value", text=NS_MAM)
        for var, type_ in (
            ("with", "jid-single"),
            ("start", "text-single"),
            ("end", "text-single"),
            ("after-id", "text-single"),
            ("before-id", "text-single"),
            ("ids", "text-multi"),
            (FULLTEXT_FIELD, "text-single"),
        ):
            form.sub("field", attrs={"var": var, "type": type_})
        return reply

    async def _prefs_reply(self, iq: Element, localpart: str) -> Element:
        prefs = await self.prefs(localpart)
        reply = result_of(iq)
        out = reply.sub("prefs", NS_MAM, {"default": prefs.default})
        for name, jids in (("always", prefs.always), ("never", prefs.never)):
            group = out.sub(name)
            for jid in sorted(jids):
                group.sub("jid", text=jid)
        return reply

    async def _set_prefs(self, iq: Element, payload: Element, localpart: str) -> Element:
        default = payload.get("default") or "always"
        if default not in POLICIES:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE, "default must be always, never or roster"
            )
        lists: dict[str, set[str]] = {"always": set(), "never": set()}
        for name, jids in lists.items():
            group = payload.find(name, NS_MAM)
            if group is None:
                continue
            for item in group.elements():
                if item.name != "jid":
                    continue
                try:
                    jids.add(parse_jid(item.text.strip()).bare)
                except ValueError as exc:
                    raise StanzaError(
                        StanzaErrorCondition.NOT_ACCEPTABLE, f"not a JID: {item.text!r}"
                    ) from exc
        prefs = ArchivePrefs(
            default=default,
            always=frozenset(lists["always"] - lists["never"]),
            never=frozenset(lists["never"]),
        )
        await self.ctx.stores.archive.set_prefs(self.ctx.domain, localpart, prefs)
        self._prefs[localpart] = prefs
        return await self._prefs_reply(iq, localpart)

    async def _query(self, iq: Element, query: Element, session: C2SStream) -> Element:
        """§4: send the page's results as messages, then the iq result with ``<fin/>``."""
        queryid = query.get("queryid") or ""
        archive_filter = read_filter(query)
        after, before, last, limit = read_rsm(query)
        await self.writer.flush()
        try:
            page = await self.ctx.stores.archive.query(
                self.ctx.domain,
                session.localpart,
                archive_filter,
                after=after,
                before=before,
                last=last,
                limit=limit,
            )
        except UnknownArchiveId as exc:
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, str(exc)) from exc
        flip = query.find("flip-page", NS_MAM) is not None
        messages = list(reversed(page.messages)) if flip else page.messages
        for message in messages:
            self.ctx.deliver(session, self._result(message, session, queryid))
        return self._fin(iq, page, queryid, messages)

    def _result(self, message: ArchivedMessage, session: C2SStream, queryid: str) -> Element:
        from ..core.parser import parse_fragment

        out = Element("message", NS_CLIENT, {"to": session.jid_str, "from": session.bare_str})
        attrs = {"id": message.id}
        if queryid:
            attrs["queryid"] = queryid
        forwarded = out.sub("result", NS_MAM, attrs).sub("forwarded", NS_FORWARD)
        forwarded.sub("delay", NS_DELAY, {"stamp": format_stamp(message.stamp)})
        try:
            forwarded.children.append(parse_fragment(message.stanza))
        except ValueError:
            log.warning("archived message %s of %s is unreadable", message.id, session.bare_str)
        return out

    @staticmethod
    def _fin(
        iq: Element, page: ArchivePage, queryid: str, messages: list[ArchivedMessage]
    ) -> Element:
        reply = result_of(iq)
        attrs = {"queryid": queryid} if queryid else {}
        if page.complete:
            attrs["complete"] = "true"
        rsm = reply.sub("fin", NS_MAM, attrs).sub("set", NS_RSM)
        if messages:
            rsm.sub("first", text=messages[0].id)
            rsm.sub("last", text=messages[-1].id)
        rsm.sub("count", text=str(page.count))
        return reply


def _field_values(field: Element) -> list[str]:
    return [v.text.strip() for v in field.elements() if v.name == "value"]


def read_filter(query: Element) -> ArchiveFilter:
    """The ``jabber:x:data`` form of a query (§4.1); ``not-acceptable`` when it is wrong."""
    form = query.find("x", NS_DATA)
    if form is None:
        return ArchiveFilter()

    def refuse(text: str) -> StanzaError:
        return StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, text)

    if form.get("type", "submit") != "submit":
        raise refuse("the query form must be of type submit")
    values: dict[str, list[str]] = {}
    for field in form.elements():
        if field.name != "field":
            continue
        var = field.get("var") or ""
        if var not in QUERY_FIELDS and var != FULLTEXT_FIELD:
            raise refuse(f"this server does not know the field {var!r}")
        values[var] = _field_values(field)
    form_type = values.get("FORM_TYPE")
    if form_type is not None and form_type != [NS_MAM]:
        raise refuse(f"the form must be of type {NS_MAM}")

    def one(var: str) -> str | None:
        found = values.get(var)
        if not found or not found[0]:
            return None
        if len(found) > 1:
            raise refuse(f"the field {var!r} takes one value")
        return found[0]

    with_jid = one("with")
    if with_jid is not None:
        try:
            with_jid = str(parse_jid(with_jid))
        except ValueError as exc:
            raise refuse(f"'with' is not a JID: {exc}") from exc
    stamps: dict[str, datetime | None] = {}
    for var in ("start", "end"):
        text = one(var)
        try:
            stamps[var] = parse_stamp(text) if text is not None else None
        except ValueError as exc:
            raise refuse(f"'{var}' is not a date and time (XEP-0082): {text!r}") from exc
    start, end = stamps["start"], stamps["end"]
    if start is not None and end is not None and start > end:
        raise refuse("'start' is after 'end'")
    text = one(FULLTEXT_FIELD)
    return ArchiveFilter(
        with_jid=with_jid,
        start=start,
        end=end,
        after_id=one("after-id"),
        before_id=one("before-id"),
        ids=tuple(i for i in values.get("ids", []) if i),
        text=text.strip() if text and text.strip() else None,
    )


def read_rsm(query: Element) -> tuple[str | None, str | None, bool, int]:
    """XEP-0059 ``<set/>``: (after, before, last page, max)."""
    rsm = query.find("set", NS_RSM)
    if rsm is None:
        return None, None, False, DEFAULT_PAGE
    limit = DEFAULT_PAGE
    max_el = rsm.find("max", NS_RSM)
    if max_el is not None:
        try:
            limit = int(max_el.text.strip())
        except ValueError as exc:
            raise StanzaError(
                StanzaErrorCondition.BAD_REQUEST, "<max/> must be a whole number"
            ) from exc
        if limit < 0:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "<max/> must not be negative")
        if limit > MAX_PAGE:
            raise StanzaError(
                StanzaErrorCondition.POLICY_VIOLATION,
                f"at most {MAX_PAGE} results per page; ask for fewer",
            )
    if rsm.find("index", NS_RSM) is not None:
        raise StanzaError(
            StanzaErrorCondition.FEATURE_NOT_IMPLEMENTED, "paging by index is not supported"
        )
    after_el = rsm.find("after", NS_RSM)
    before_el = rsm.find("before", NS_RSM)
    after = after_el.text.strip() or None if after_el is not None else None
    before = before_el.text.strip() if before_el is not None else None
    last = before_el is not None and not before
    return after, (before or None), last, limit
