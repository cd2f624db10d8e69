"""XEP-0045 Multi-User Chat: the conference service of a virtual host."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from imhost.kit.jid import JID, parse_jid

from ..api import (
    NS_CLIENT,
    Element,
    Hook,
    Module,
    SessionEvent,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    error_reply,
    result_of,
)
from .room import (
    NS_DATA,
    NS_ROOMCONFIG,
    RANK,
    HistoryEntry,
    Occupant,
    Room,
    RoomConfig,
    apply_form,
    config_form,
    form_values,
)

if TYPE_CHECKING:
    from ..api import C2SStream

log = logging.getLogger("imhost.xmpp.muc")

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
NS_ROOMINFO = NS_MUC + "#roominfo"
NS_REGISTER_FORM = NS_MUC + "#register"
NS_REGISTER = "jabber:iq:register"
NS_SID = "urn:xmpp:sid:0"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_CONFERENCE = "jabber:x:conference"
NS_PING = "urn:xmpp:ping"
NS_DELAY = "urn:xmpp:delay"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
FEATURE_STABLE_ID = NS_MUC + "#stable_id"
FEATURE_SELF_PING = NS_MUC + "#self-ping-optimization"

SERVICE_FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, NS_OCCUPANT_ID, NS_SID)
"""What the service's disco#info lists (XEP-0030 §3): exactly what is implemented."""

SERVICE_NAME = "Chatrooms"
ROOM_CEILING = 10_000
"""Rooms of one service at once when its plan sets no limit (a safety ceiling: each room
holds its history in memory)."""
MAX_NICK = 100
"""Characters of a nickname (a resourcepart may be 1023 bytes; a nick that long is noise)."""


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class MucModule(Module):
    """XEP-0045 Multi-User Chat at ``conference.<domain>``, for the host's own accounts.

    - §6 discovery: the service (identity ``conference/text``, public rooms as items) and each
      room (features from its configuration, the ``muc#roominfo`` form);
    - §7 occupants: join (presence to ``room@service/nick`` with ``<x xmlns='…muc'/>``),
      self-presence with status codes 110 (self), 100 (non-anonymous), 201 (created), the
      occupant list first, then the history (``<history maxstanzas maxchars seconds since/>``,
      XEP-0203 delay stamps) and the subject; groupchat messages reflected to every occupant
      with a XEP-0359 ``<stanza-id by='room@service'/>`` and a XEP-0421 ``<occupant-id/>``;
      private messages; nick change (303); presence updates; leave and exit when the session
      ends or sends unavailable; join errors ``conflict`` (nick taken or reserved),
      ``not-authorized`` (password), ``registration-required`` (members only), ``forbidden``
      (banned), ``service-unavailable`` (full), ``item-not-found`` (locked room),
      ``jid-malformed`` (no nick);
    - §8 moderators: kick (307), voice (participant/visitor), role lists; §9 admins: ban (301),
      members, affiliation lists, removal from a members-only room (321); §10 owners: room
      creation (locked until the instant or configured room, §10.1), the ``muc#roomconfig``
      form (configuration change 104, non-members removed 322), owner/admin grants, destroy;
    - §7.10 registration (``muc#register``: a reserved nick and membership), §7.8 mediated
      invitations and declines (XEP-0249 direct invitations pass between clients unchanged);
    - XEP-0410 self-ping: a ping to one's own occupant JID is answered; from someone not in
      the room (with that nick) it is ``not-acceptable``.

    Plan limits: ``max_rooms`` per service (``resource-constraint``) and
    ``max_room_occupants`` per room (``service-unavailable``). Persistent rooms (their
    configuration, affiliations, reserved nicks and subject) are kept through the host's
    :class:`~imhost.xmpp.ports.MucStore` and loaded with the host; history is kept in memory
    for the room's life. Each accepted groupchat message with a body is metered once
    (``room_messages``) and its copies to occupants separately (``room_deliveries``).
    """

    name = "muc"

    def load(self) -> None:
        ctx = self.ctx
        self.service = f"conference.{ctx.domain}"
        self.rooms: dict[str, Room] = {}
        self._joined: dict[str, set[str]] = {}
        """Real full JID -> names of the rooms it is in (exit on disconnect)."""
        self._loaded = False
        ctx.add_component(self.service, self.on_stanza)
        ctx.add_item(self.service, SERVICE_NAME)
        ctx.hook(Hook.SESSION_CLOSED, self.on_session_closed)
        ctx.hook(Hook.PRESENCE_OUT, self.on_presence_out)
        self._loading: asyncio.Task[None] | None = ctx.spawn(self._load_rooms())

    def unload(self) -> None:
        self.ctx.remove_component(self.service)
        self.ctx.remove_item(self.service)

    async def _load_rooms(self) -> None:
        try:
            stored = await self.ctx.stores.muc.load_rooms(self.ctx.domain)
        except Exception:
            log.exception("loading the rooms of %s failed", self.ctx.domain)
            stored = []
        for item in stored:
            if item.name not in self.rooms:
                self.rooms[item.name] = Room.from_stored(item, f"{item.name}@{self.service}")
        self._loaded = True
        self._loading = None

    # -- entry -------------------------------------------------------------------------------

    def on_stanza(self, session: C2SStream, el: Element, to: JID) -> Awaitable[None] | None:
        if not self._loaded:
            return self._after_load(session, el, to)
        try:
            result = self._dispatch(session, el, to)
        except StanzaError as exc:
            self._error(session, el, exc.condition, exc.text, exc.type)
            return None
        if result is None:
            return None
        return self._guard(session, el, result)

    async def _after_load(self, session: C2SStream, el: Element, to: JID) -> None:
        if self._loading is not None:
            await asyncio.shield(self._loading)
        pending = self.on_stanza(session, el, to)
        if pending is not None:
            await pending

    async def _guard(self, session: C2SStream, el: Element, pending: Awaitable[None]) -> None:
        try:
            await pending
        except StanzaError as exc:
            self._error(session, el, exc.condition, exc.text, exc.type)
        except Exception:
            log.exception("muc: handling a stanza failed")
            self._error(session, el, StanzaErrorCondition.INTERNAL_SERVER_ERROR, "", None)

    def _error(
        self,
        session: C2SStream,
        el: Element,
        condition: StanzaErrorCondition,
        text: str,
        type_: str | None,
    ) -> None:
        if el.get("type") == "error" or (el.name == "iq" and el.get("type") == "result"):
            return
        reply = error_reply(el, condition, text)
        if type_:
            err = reply.find("error")
            if err is not None:
                err.attrs["type"] = type_
        if el.name == "presence":
            # §7.2: the error carries an empty <x xmlns='…muc'/>, never the password sent
            kept: list[Element | str] = [Element("x", NS_MUC)]
            kept.extend(c for c in reply.children if isinstance(c, Element) and c.name == "error")
            reply.children = kept
        session.deliver(reply)

    def _dispatch(self, session: C2SStream, el: Element, to: JID) -> Awaitable[None] | None:
        if el.name == "iq":
            return self._iq(session, el, to)
        if not to.local:
            if el.name == "message" and el.get("type") != "error":
                raise StanzaError(
                    StanzaErrorCondition.SERVICE_UNAVAILABLE, "send messages to a room"
                )
            return None
        if el.name == "presence":
            if not to.resource:
                if el.get("type") in (None, "unavailable"):
                    raise StanzaError(
                        StanzaErrorCondition.JID_MALFORMED, "join a room as room@service/nick"
                    )
                return None
            return self._presence(session, el, to)
        if to.resource:
            self._private_message(session, el, to)
            return None
        return self._to_room(session, el, to)

    # -- sending -----------------------------------------------------------------------------

    def _send(self, occupant: Occupant, stanza: Element) -> None:
        stanza.attrs["to"] = occupant.jid
        session = self.ctx.session(occupant.address)
        if session is not None and not session.closed:
            session.deliver(stanza)

    def _presence_of(
        self,
        room: Room,
        occupant: Occupant,
        viewer: Occupant,
        codes: tuple[str, ...] = (),
        *,
        type_: str | None = None,
        item_extra: dict[str, str] | None = None,
        reason: str = "",
        children: list[Element | str] | None = None,
    ) -> Element:
        """``occupant``'s presence as ``viewer`` gets it (§7.2.3)."""
        attrs = {"from": f"{room.jid}/{occupant.nick}"}
        if type_:
            attrs["type"] = type_
        kids = list(occupant.presence if children is None else children)
        el = Element("presence", NS_CLIENT, attrs, kids)
        x = el.sub("x", NS_USER)
        item_attrs = {
            "affiliation": room.affiliation(occupant.bare),
            "role": "none" if type_ == "unavailable" else occupant.role,
        }
        if room.sees_jids(viewer):
            item_attrs["jid"] = occupant.jid
        if item_extra:
            item_attrs.update(item_extra)
        item = x.sub("item", attrs=item_attrs)
        if reason:
            item.sub("reason", text=reason)
        own = viewer is occupant
        if own:
            x.sub("status", attrs={"code": "110"})
        for code in codes:
            x.sub("status", attrs={"code": code})
        el.sub("occupant-id", NS_OCCUPANT_ID, {"id": room.occupant_id(occupant.bare)})
        return el

    def _broadcast_presence(
        self,
        room: Room,
        occupant: Occupant,
        codes: tuple[str, ...] = (),
        *,
        self_codes: tuple[str, ...] = (),
        type_: str | None = None,
        item_extra: dict[str, str] | None = None,
        reason: str = "",
        children: list[Element | str] | None = None,
    ) -> None:
        for viewer in list(room.occupants.values()):
            extra = codes + (self_codes if viewer is occupant else ())
            self._send(
                viewer,
                self._presence_of(
                    room,
                    occupant,
                    viewer,
                    extra,
                    type_=type_,
                    item_extra=item_extra,
                    reason=reason,
                    children=children,
                ),
            )
        if occupant.nick not in room.occupants:  # a leaving occupant gets its own presence
            self._send(
                occupant,
                self._presence_of(
                    room,
                    occupant,
                    occupant,
                    codes + self_codes,
                    type_=type_,
                    item_extra=item_extra,
                    reason=reason,
                    children=children,
                ),
            )

    def _from_room(self, room: Room, *children: Element) -> Element:
        el = Element("message", NS_CLIENT, {"from": room.jid, "type": "groupchat"})
        el.children.extend(children)
        return el

    def _status_message(self, room: Room, *codes: str) -> None:
        """§10.2.1: a message from the room with status codes (e.g. 104)."""
        for occupant in list(room.occupants.values()):
            x = Element("x", NS_USER)
            for code in codes:
                x.sub("status", attrs={"code": code})
            self._send(occupant, self._from_room(room, x))

    # -- presence: join, change, leave ---------------------------------------------------------

    def _presence(self, session: C2SStream, el: Element, to: JID) -> Awaitable[None] | None:
        ptype = el.get("type")
        name = to.local
        nick = to.resource
        room = self.rooms.get(name)
        if ptype == "unavailable":
            if room is not None:
                occupant = room.occupant_of(session.jid_str)
                if occupant is not None:
                    self._leave(room, occupant, _status_children(el))
            return None
        if ptype is not None:
            return None  # subscriptions, probes and errors mean nothing to a room
        if len(nick) > MAX_NICK:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE, f"a nickname has at most {MAX_NICK} letters"
            )
        if room is not None:
            current = room.occupant_of(session.jid_str)
            if current is not None:
                if current.nick == nick:
                    current.presence = _presence_children(el)
                    self._broadcast_presence(room, current)
                    return None
                self._change_nick(room, current, nick, el)
                return None
            self._join(session, room, el, nick, created=False)
            return None
        return self._create(session, el, name, nick)

    def _create(
        self, session: C2SStream, el: Element, name: str, nick: str
    ) -> Awaitable[None] | None:
        limit = self.ctx.host.limits.max_rooms
        if limit is None:
            limit = ROOM_CEILING
        if len(self.rooms) >= limit:
            raise StanzaError(
                StanzaErrorCondition.RESOURCE_CONSTRAINT,
                f"this service's plan allows {limit} rooms at once; remove one first",
            )
        room = Room(name=name, jid=f"{name}@{self.service}")
        room.affiliations[session.bare_str] = "owner"
        # §10.1.1: a room created with the MUC protocol stays locked until it is configured;
        # an old groupchat 1.0 join (no <x/>) gets an instant room
        room.locked = el.find("x", NS_MUC) is not None
        self.rooms[name] = room
        self._join(session, room, el, nick, created=True)
        return None

    def _join(
        self, session: C2SStream, room: Room, el: Element, nick: str, *, created: bool
    ) -> None:
        bare = session.bare_str
        affiliation = room.affiliation(bare)
        muc = el.find("x", NS_MUC)
        if not created:
            if room.locked and affiliation != "owner":
                raise StanzaError(
                    StanzaErrorCondition.ITEM_NOT_FOUND,
                    "this room is being set up; try again when its owner has configured it",
                )
            if affiliation == "outcast":
                raise StanzaError(StanzaErrorCondition.FORBIDDEN, "you are banned from this room")
            if room.config.members_only and RANK[affiliation] < RANK["member"]:
                raise StanzaError(
                    StanzaErrorCondition.REGISTRATION_REQUIRED, "this room is for members only"
                )
            holder = room.occupants.get(nick)
            if holder is not None and holder.bare != bare:
                raise StanzaError(StanzaErrorCondition.CONFLICT, "that nickname is in use")
            if holder is not None:
                raise StanzaError(
                    StanzaErrorCondition.CONFLICT,
                    "you are already in this room with that nickname from another device",
                )
            reserved = room.nick_owner(nick)
            if reserved is not None and reserved != bare:
                raise StanzaError(
                    StanzaErrorCondition.CONFLICT, "that nickname is registered to someone else"
                )
            if room.config.password_protected and affiliation != "owner":
                given = muc.find_text("password") if muc is not None else None
                if given != room.config.password:
                    raise StanzaError(
                        StanzaErrorCondition.NOT_AUTHORIZED, "this room needs the right password"
                    )
            cap = self._max_occupants(room)
            if cap is not None and len(room.occupants) >= cap:
                raise StanzaError(
                    StanzaErrorCondition.SERVICE_UNAVAILABLE,
                    f"this room is full ({cap} people at most)",
                )
        occupant = Occupant(
            nick=nick,
            address=session.jid or parse_jid(session.jid_str),
            jid=session.jid_str,
            bare=bare,
            role=room.default_role(bare),
            presence=_presence_children(el),
        )
        # §7.2.3: first the presence of everyone already there
        for other in list(room.occupants.values()):
            self._send(occupant, self._presence_of(room, other, occupant))
        room.occupants[nick] = occupant
        room.by_jid[occupant.jid] = nick
        self._joined.setdefault(occupant.jid, set()).add(room.name)
        codes: tuple[str, ...] = ()
        if room.config.whois == "anyone":
            codes += ("100",)
        self_codes = ("201",) if created else ()
        self._broadcast_presence(room, occupant, self_codes=codes + self_codes)
        if created and room.locked:
            return  # §10.1.2: nothing more until the owner configures the room
        self._send_history(room, occupant, muc)
        subject = self._from_room(room, Element("subject", NS_CLIENT, None, [room.subject]))
        if room.subject_by:
            subject.attrs["from"] = f"{room.jid}/{room.subject_by}"
        self._send(occupant, subject)

    def _max_occupants(self, room: Room) -> int | None:
        plan = self.ctx.host.limits.max_room_occupants
        own = room.config.max_users or None
        if plan is None:
            return own
        return plan if own is None else min(plan, own)

    def _send_history(self, room: Room, occupant: Occupant, muc: Element | None) -> None:
        """§7.2.15: the history the joiner asked for, oldest first, with delay stamps."""
        history = muc.find("history", NS_MUC) if muc is not None else None
        entries = list(room.history)[-room.config.history_length :] if room.history else []
        if room.config.history_length == 0:
            entries = []
        if history is not None:
            maxstanzas = _non_negative(history.get("maxstanzas"))
            if maxstanzas is not None:
                entries = entries[-maxstanzas:] if maxstanzas else []
            seconds = _non_negative(history.get("seconds"))
            now = self.ctx.clock.now()
            if seconds is not None:
                since = now - timedelta(seconds=seconds)
                entries = [e for e in entries if e.stamp >= since]
            since_attr = history.get("since")
            if since_attr:
                since_at = _parse_stamp(since_attr)
                if since_at is not None:
                    entries = [e for e in entries if e.stamp > since_at]
            maxchars = _non_negative(history.get("maxchars"))
            if maxchars is not None:
                kept: list[HistoryEntry] = []
                total = 0
                for entry in reversed(entries):
                    total += entry.chars
                    if total > maxchars:
                        break
                    kept.append(entry)
                entries = list(reversed(kept))
        for entry in entries:
            el = entry.stanza.copy()
            el.sub("delay", NS_DELAY, {"from": room.jid, "stamp": _stamp(entry.stamp)})
            self._send(occupant, el)

    def _change_nick(self, room: Room, occupant: Occupant, nick: str, el: Element) -> None:
        """§7.6: unavailable with 303 and the new nick, then available as the new nick."""
        holder = room.occupants.get(nick)
        if holder is not None:
            raise StanzaError(StanzaErrorCondition.CONFLICT, "that nickname is in use")
        reserved = room.nick_owner(nick)
        if reserved is not None and reserved != occupant.bare:
            raise StanzaError(
                StanzaErrorCondition.CONFLICT, "that nickname is registered to someone else"
            )
        self._broadcast_presence(
            room, occupant, ("303",), type_="unavailable", item_extra={"nick": nick}, children=[]
        )
        del room.occupants[occupant.nick]
        occupant.nick = nick
        occupant.presence = _presence_children(el)
        room.occupants[nick] = occupant
        room.by_jid[occupant.jid] = nick
        self._broadcast_presence(room, occupant)

    def _leave(
        self,
        room: Room,
        occupant: Occupant,
        children: list[Element | str],
        codes: tuple[str, ...] = (),
        *,
        reason: str = "",
    ) -> None:
        """Remove an occupant; everyone (and the occupant) gets its unavailable presence."""
        self._remove(room, occupant)
        self._broadcast_presence(
            room, occupant, codes, type_="unavailable", reason=reason, children=children
        )
        self._maybe_discard(room)

    def _remove(self, room: Room, occupant: Occupant) -> None:
        room.occupants.pop(occupant.nick, None)
        room.by_jid.pop(occupant.jid, None)
        joined = self._joined.get(occupant.jid)
        if joined is not None:
            joined.discard(room.name)
            if not joined:
                del self._joined[occupant.jid]

    def _maybe_discard(self, room: Room) -> None:
        """A temporary room goes when its last occupant leaves (§10.1.1 for locked ones)."""
        gone = not room.occupants and (not room.persistent or room.locked)
        if gone and self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    def on_session_closed(self, event: SessionEvent) -> None:
        self._exit_all(event.session)

    def on_presence_out(self, event: StanzaEvent) -> None:
        if event.to is None and event.stanza.get("type") == "unavailable" and event.session:
            self._exit_all(event.session, _status_children(event.stanza))

    def _exit_all(self, session: C2SStream, children: list[Element | str] | None = None) -> None:
        for name in sorted(self._joined.get(session.jid_str, ())):
            room = self.rooms.get(name)
            occupant = room.occupant_of(session.jid_str) if room is not None else None
            if room is not None and occupant is not None:
                self._leave(room, occupant, children or [])
        self._joined.pop(session.jid_str, None)

    # -- messages ----------------------------------------------------------------------------

    def _room(self, to: JID) -> Room:
        room = self.rooms.get(to.local)
        if room is None:
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "there is no such room")
        return room

    def _to_room(self, session: C2SStream, el: Element, to: JID) -> Awaitable[None] | None:
        mtype = el.get("type", "normal")
        if mtype == "error":
            return None
        room = self._room(to)
        if mtype == "groupchat":
            return self._groupchat(session, room, el)
        x = el.find("x", NS_USER)
        if x is not None:
            invites = [c for c in x.elements() if c.name == "invite"]
            decline = x.find("decline", NS_USER)
            if invites:
                return self._invite(session, room, invites)
            if decline is not None:
                self._decline(session, room, decline)
                return None
        raise StanzaError(
            StanzaErrorCondition.BAD_REQUEST, "a message to a room must be of type groupchat"
        )

    def _groupchat(self, session: C2SStream, room: Room, el: Element) -> Awaitable[None] | None:
        """§7.4 (messages) and §8.1 (subject)."""
        sender = room.occupant_of(session.jid_str)
        if sender is None:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "you are not in this room")
        if sender.role == "visitor":
            raise StanzaError(
                StanzaErrorCondition.FORBIDDEN, "you have no voice in this moderated room"
            )
        subject = el.find("subject")
        body = el.find("body")
        pending: Awaitable[None] | None = None
        if subject is not None and body is None:
            if sender.role != "moderator" and not room.config.change_subject:
                raise StanzaError(
                    StanzaErrorCondition.FORBIDDEN, "only moderators may change the subject"
                )
            room.subject = subject.text
            room.subject_by = sender.nick
            pending = self._save(room)
        # what the room reflects: the sender's payload, never ids it claims for the room
        children: list[Element | str] = []
        for child in el.children:
            if not isinstance(child, Element):
                continue
            if child.ns == NS_SID and child.name == "stanza-id" and child.get("by") == room.jid:
                continue
            if child.ns == NS_OCCUPANT_ID or child.ns == NS_DELAY:
                continue
            children.append(child)
        attrs = {"from": f"{room.jid}/{sender.nick}", "type": "groupchat"}
        if el.get("id"):
            attrs["id"] = el.get("id", "")
        stanza_id = secrets.token_urlsafe(12)
        out = Element("message", NS_CLIENT, attrs, children)
        out.sub("stanza-id", NS_SID, {"id": stanza_id, "by": room.jid})
        out.sub("occupant-id", NS_OCCUPANT_ID, {"id": room.occupant_id(sender.bare)})
        delivered = 0
        for occupant in list(room.occupants.values()):
            copy = Element("message", NS_CLIENT, dict(out.attrs), out.children)
            self._send(occupant, copy)
            delivered += 1
        if body is not None:
            text = out.serialize(NS_CLIENT)
            room.history.append(HistoryEntry(out, self.ctx.clock.now(), len(text)))
            self.ctx.count_room_message(delivered)
        return pending

    def _private_message(self, session: C2SStream, el: Element, to: JID) -> None:
        """§7.5: a message to an occupant, relayed from the sender's occupant JID."""
        mtype = el.get("type", "normal")
        if mtype == "error":
            return
        room = self._room(to)
        sender = room.occupant_of(session.jid_str)
        if sender is None:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "you are not in this room")
        if mtype == "groupchat":
            raise StanzaError(
                StanzaErrorCondition.BAD_REQUEST, "send groupchat messages to the room itself"
            )
        policy = room.config.allow_pm
        allowed = (
            policy == "anyone"
            or (policy == "participants" and sender.role in ("participant", "moderator"))
            or (policy == "moderators" and sender.role == "moderator")
        )
        if not allowed:
            raise StanzaError(
                StanzaErrorCondition.FORBIDDEN, "private messages are not allowed in this room"
            )
        target = room.occupants.get(to.resource)
        if target is None:
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "nobody has that nickname")
        children = [
            c
            for c in el.children
            if isinstance(c, Element) and c.ns not in (NS_USER, NS_OCCUPANT_ID)
        ]
        attrs = {"from": f"{room.jid}/{sender.nick}", "type": mtype}
        if el.get("id"):
            attrs["id"] = el.get("id", "")
        out = Element("message", NS_CLIENT, attrs, list(children))
        out.sub("x", NS_USER)
        out.sub("occupant-id", NS_OCCUPANT_ID, {"id": room.occupant_id(sender.bare)})
        self._send(target, out)

    async def _invite(self, session: C2SStream, room: Room, invites: list[Element]) -> None:
        """§7.8.2 mediated invitations; in a members-only room the invitee becomes a member."""
        inviter = room.occupant_of(session.jid_str)
        if inviter is None:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "you are not in this room")
        affiliation = room.affiliation(inviter.bare)
        if (
            room.config.members_only
            and RANK[affiliation] < RANK["admin"]
            and not room.config.allow_invites
        ):
            raise StanzaError(
                StanzaErrorCondition.FORBIDDEN, "only admins may invite people to this room"
            )
        targets: list[tuple[JID, str]] = []
        for invite in invites:
            try:
                target = parse_jid(invite.get("to", ""))
            except ValueError:
                raise StanzaError(
                    StanzaErrorCondition.JID_MALFORMED, "an invitation needs a valid 'to'"
                ) from None
            targets.append((target.to_bare(), invite.find_text("reason", NS_USER) or ""))
        changed = False
        for target, reason in targets:
            if room.config.members_only and room.affiliation(target.bare) == "none":
                room.affiliations[target.bare] = "member"
                changed = True
            x = Element("x", NS_USER)
            inv = x.sub("invite", attrs={"from": inviter.bare})
            if reason:
                inv.sub("reason", text=reason)
            if room.config.password_protected:
                x.sub("password", text=room.config.password)
            who = room.config.name or room.name
            body = f"{inviter.bare} invites you to the room {who} ({room.jid})"
            if reason:
                body += f": {reason}"
            message = Element(
                "message",
                NS_CLIENT,
                {"from": room.jid, "to": target.bare},
                [x, Element("body", NS_CLIENT, None, [body])],
            )
            conference = message.sub("x", NS_CONFERENCE, {"jid": room.jid})
            if reason:
                conference.attrs["reason"] = reason
            pending = self.ctx.route(message)
            if pending is not None:
                await pending
        if changed:
            await self._save(room)

    def _decline(self, session: C2SStream, room: Room, decline: Element) -> None:
        """§7.8.2: the invitee declines; the room passes it on to the inviter."""
        try:
            inviter = parse_jid(decline.get("to", ""))
        except ValueError:
            raise StanzaError(
                StanzaErrorCondition.JID_MALFORMED, "a decline needs a valid 'to'"
            ) from None
        x = Element("x", NS_USER)
        out = x.sub("decline", attrs={"from": session.bare_str})
        reason = decline.find_text("reason", NS_USER)
        if reason:
            out.sub("reason", text=reason)
        message = Element("message", NS_CLIENT, {"from": room.jid, "to": str(inviter)}, [x])
        pending = self.ctx.route(message)
        if pending is not None:
            self.ctx.spawn(_wait(pending))

    # -- iq ----------------------------------------------------------------------------------

    def _iq(self, session: C2SStream, el: Element, to: JID) -> Awaitable[None] | None:
        itype = el.get("type")
        if itype in ("result", "error"):
            return None
        payload = next(el.elements())
        key = (payload.ns, itype)
        if not to.local:
            if key == (NS_DISCO_INFO, "get"):
                self._reply(session, el, self._service_info(payload))
                return None
            if key == (NS_DISCO_ITEMS, "get"):
                self._reply(session, el, self._service_items(payload))
                return None
            if key == (NS_PING, "get"):
                self._reply(session, el, None)
                return None
            raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        if to.resource:
            self._iq_to_occupant(session, el, to, payload)
            return None
        room = self._room(to)
        if key == (NS_DISCO_INFO, "get"):
            self._reply(session, el, self._room_info(session, room, payload))
            return None
        if key == (NS_DISCO_ITEMS, "get"):
            self._hidden_check(session, room)
            self._reply(session, el, Element("query", NS_DISCO_ITEMS))
            return None
        if key == (NS_PING, "get"):
            self._reply(session, el, None)
            return None
        if payload.ns == NS_ADMIN:
            return self._admin(session, el, room, payload, itype == "set")
        if payload.ns == NS_OWNER:
            return self._owner(session, el, room, payload, itype == "set")
        if payload.ns == NS_REGISTER:
            return self._register(session, el, room, payload, itype == "set")
        raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)

    def _reply(self, session: C2SStream, iq: Element, payload: Element | None) -> None:
        reply = result_of(iq)
        if payload is not None:
            reply.children.append(payload)
        session.deliver(reply)

    def _iq_to_occupant(self, session: C2SStream, el: Element, to: JID, payload: Element) -> None:
        """XEP-0410: a ping to one's own occupant JID is answered by the room; iq to other
        occupants is not relayed."""
        room = self.rooms.get(to.local)
        me = room.occupant_of(session.jid_str) if room is not None else None
        if payload.ns == NS_PING and payload.name == "ping" and el.get("type") == "get":
            if me is None or me.nick != to.resource:
                raise StanzaError(
                    StanzaErrorCondition.NOT_ACCEPTABLE, "you are not in this room with that nick"
                )
            self._reply(session, el, None)
            return
        if me is None:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "you are not in this room")
        raise StanzaError(
            StanzaErrorCondition.SERVICE_UNAVAILABLE, "requests to occupants are not relayed"
        )

    def _hidden_check(self, session: C2SStream, room: Room) -> None:
        if room.locked and room.affiliation(session.bare_str) != "owner":
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "there is no such room")

    # -- disco -------------------------------------------------------------------------------

    def _service_info(self, payload: Element) -> Element:
        if payload.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
        query = Element("query", NS_DISCO_INFO)
        identity = {"category": "conference", "type": "text", "name": SERVICE_NAME}
        query.sub("identity", attrs=identity)
        for var in sorted(SERVICE_FEATURES):
            query.sub("feature", attrs={"var": var})
        return query

    def _service_items(self, payload: Element) -> Element:
        if payload.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
        query = Element("query", NS_DISCO_ITEMS)
        for name in sorted(self.rooms):
            room = self.rooms[name]
            if room.config.public and not room.locked:
                query.sub("item", attrs={"jid": room.jid, "name": room.config.name or name})
        return query

    def room_features(self, room: Room) -> list[str]:
        """§6.4: the room's features, from its configuration."""
        c = room.config
        features = [
            NS_MUC,
            NS_DISCO_INFO,
            NS_DISCO_ITEMS,
            NS_REGISTER,
            NS_SID,
            FEATURE_STABLE_ID,
            FEATURE_SELF_PING,
            NS_OCCUPANT_ID,
            NS_PING,
            "muc_persistent" if c.persistent else "muc_temporary",
            "muc_public" if c.public else "muc_hidden",
            "muc_membersonly" if c.members_only else "muc_open",
            "muc_moderated" if c.moderated else "muc_unmoderated",
            "muc_passwordprotected" if c.password_protected else "muc_unsecured",
            "muc_nonanonymous" if c.whois == "anyone" else "muc_semianonymous",
        ]
        return sorted(features)

    def _room_info(self, session: C2SStream, room: Room, payload: Element) -> Element:
        self._hidden_check(session, room)
        if payload.get("node"):
            raise StanzaError(StanzaErrorCondition.ITEM_NOT_FOUND, "no such node")
        query = Element("query", NS_DISCO_INFO)
        query.sub(
            "identity",
            attrs={"category": "conference", "type": "text", "name": room.config.name or room.name},
        )
        for var in self.room_features(room):
            query.sub("feature", attrs={"var": var})
        x = query.sub("x", NS_DATA, {"type": "result"})
        for var, value in (
            ("FORM_TYPE", NS_ROOMINFO),
            ("muc#roominfo_description", room.config.description),
            ("muc#roominfo_occupants", str(len(room.occupants))),
            ("muc#roominfo_subject", room.subject),
            ("muc#roomconfig_roomname", room.config.name),
        ):
            attrs = {"var": var}
            if var == "FORM_TYPE":
                attrs["type"] = "hidden"
            x.sub("field", attrs=attrs).sub("value", text=value)
        return query

    # -- persistence -------------------------------------------------------------------------

    async def _save(self, room: Room) -> None:
        if not room.persistent or room.locked:
            return
        await self.ctx.stores.muc.save_room(self.ctx.domain, room.stored())

    async def _forget(self, room: Room) -> None:
        await self.ctx.stores.muc.delete_room(self.ctx.domain, room.name)

    # -- §8 and §9: muc#admin ------------------------------------------------------------------

    def _admin(
        self, session: C2SStream, el: Element, room: Room, payload: Element, is_set: bool
    ) -> Awaitable[None] | None:
        me = session.bare_str
        my_affiliation = room.affiliation(me)
        occupant = room.occupant_of(session.jid_str)
        my_role = occupant.role if occupant is not None else "none"
        items = [c for c in payload.elements() if c.name == "item" and c.ns == NS_ADMIN]
        if not items:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "name at least one item")
        if not is_set:
            self._reply(session, el, self._admin_list(room, items[0], my_affiliation, my_role))
            return None
        return self._admin_set(session, el, room, items, my_affiliation, my_role)

    def _admin_list(self, room: Room, item: Element, my_affiliation: str, my_role: str) -> Element:
        query = Element("query", NS_ADMIN)
        affiliation = item.get("affiliation")
        role = item.get("role")
        if affiliation is not None:
            if affiliation not in ("owner", "admin", "member", "outcast"):
                raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "no such affiliation list")
            if RANK[my_affiliation] < RANK["admin"]:
                raise StanzaError(
                    StanzaErrorCondition.FORBIDDEN, "only admins and owners see this list"
                )
            for bare in sorted(b for b, a in room.affiliations.items() if a == affiliation):
                attrs = {"affiliation": affiliation, "jid": bare}
                if bare in room.nicks:
                    attrs["nick"] = room.nicks[bare]
                query.sub("item", attrs=attrs)
            return query
        if role in ("moderator", "participant", "visitor"):
            if my_role != "moderator":
                raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only moderators see this list")
            for nick in sorted(room.occupants):
                occ = room.occupants[nick]
                if occ.role == role:
                    query.sub(
                        "item",
                        attrs={
                            "affiliation": room.affiliation(occ.bare),
                            "jid": occ.jid,
                            "nick": nick,
                            "role": role,
                        },
                    )
            return query
        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "ask for an affiliation or a role")

    async def _admin_set(
        self,
        session: C2SStream,
        el: Element,
        room: Room,
        items: list[Element],
        my_affiliation: str,
        my_role: str,
    ) -> None:
        # check every item first: one refused item refuses the whole set (§9.5)
        changes: list[tuple[str, str, str, str]] = []
        for item in items:
            reason = item.find_text("reason", NS_ADMIN) or ""
            role = item.get("role")
            affiliation = item.get("affiliation")
            if role is not None:
                nick = item.get("nick")
                target = room.occupants.get(nick or "")
                if target is None:
                    raise StanzaError(
                        StanzaErrorCondition.ITEM_NOT_FOUND, "nobody has that nickname"
                    )
                self._check_role_change(room, target, role, my_affiliation, my_role)
                changes.append(("role", nick or "", role, reason))
            elif affiliation is not None:
                jid_text = item.get("jid")
                if not jid_text:
                    nick_target = room.occupants.get(item.get("nick") or "")
                    if nick_target is None:
                        raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "name a jid")
                    jid_text = nick_target.bare
                try:
                    bare = parse_jid(jid_text).bare
                except ValueError:
                    raise StanzaError(StanzaErrorCondition.JID_MALFORMED, "bad jid") from None
                self._check_affiliation_change(room, bare, affiliation, my_affiliation)
                changes.append(("affiliation", bare, affiliation, reason))
            else:
                raise StanzaError(
                    StanzaErrorCondition.BAD_REQUEST, "an item needs a role or affiliation"
                )
        for kind, who, value, reason in changes:
            if kind == "role":
                self._set_role(room, who, value, reason)
            else:
                self._set_affiliation(room, who, value, reason)
        await self._save(room)
        self._reply(session, el, None)

    def _check_role_change(
        self, room: Room, target: Occupant, role: str, my_affiliation: str, my_role: str
    ) -> None:
        if role not in ROLE_NAMES:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "no such role")
        if my_role != "moderator":
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only moderators may do that")
        target_affiliation = room.affiliation(target.bare)
        moderation = role == "moderator" or target.role == "moderator"
        if moderation and RANK[my_affiliation] < RANK["admin"]:
            # granting or taking moderation is for admins and owners (§9.6, §9.7)
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only admins may do that")
        if role in ("none", "visitor") and RANK[target_affiliation] >= RANK["admin"]:
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED, "admins and owners cannot be kicked or muted"
            )

    def _check_affiliation_change(
        self, room: Room, bare: str, affiliation: str, my_affiliation: str
    ) -> None:
        if affiliation not in ("owner", "admin", "member", "none", "outcast"):
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "no such affiliation")
        current = room.affiliation(bare)
        if RANK[my_affiliation] < RANK["admin"]:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only admins and owners may do that")
        if my_affiliation != "owner" and (
            affiliation in ("owner", "admin") or current in ("owner", "admin")
        ):
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED, "only owners may change admins and owners"
            )
        if current == "owner" and affiliation != "owner" and room.owners() == [bare]:
            raise StanzaError(StanzaErrorCondition.CONFLICT, "a room needs at least one owner")

    def _set_role(self, room: Room, nick: str, role: str, reason: str) -> None:
        target = room.occupants.get(nick)
        if target is None:
            return
        if role == "none":  # kick (§8.2)
            self._remove(room, target)
            self._broadcast_presence(
                room, target, ("307",), type_="unavailable", reason=reason, children=[]
            )
            self._maybe_discard(room)
            return
        target.role = role
        self._broadcast_presence(room, target, reason=reason)

    def _set_affiliation(self, room: Room, bare: str, affiliation: str, reason: str) -> None:
        if affiliation == "none":
            room.affiliations.pop(bare, None)
        else:
            room.affiliations[bare] = affiliation
        for occupant in room.occupants_of_bare(bare):
            if affiliation == "outcast":  # ban (§9.1)
                self._remove(room, occupant)
                self._broadcast_presence(
                    room, occupant, ("301",), type_="unavailable", reason=reason, children=[]
                )
            elif affiliation == "none" and room.config.members_only:  # §9.4
                self._remove(room, occupant)
                self._broadcast_presence(
                    room, occupant, ("321",), type_="unavailable", reason=reason, children=[]
                )
            else:
                occupant.role = room.default_role(bare)
                self._broadcast_presence(room, occupant, reason=reason)
        self._maybe_discard(room)

    # -- §10: muc#owner ----------------------------------------------------------------------

    def _owner(
        self, session: C2SStream, el: Element, room: Room, payload: Element, is_set: bool
    ) -> Awaitable[None] | None:
        if room.affiliation(session.bare_str) != "owner":
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "only owners may do that")
        if not is_set:
            query = Element("query", NS_OWNER)
            query.children.append(config_form(room.config))
            self._reply(session, el, query)
            return None
        destroy = payload.find("destroy", NS_OWNER)
        if destroy is not None:
            return self._destroy_iq(session, el, room, destroy)
        x = payload.find("x", NS_DATA)
        if x is None:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "send a form or <destroy/>")
        if x.get("type") == "cancel":
            if room.locked:  # §10.1.3: cancelling the first configuration destroys the room
                self.destroy(room.name, "")
            self._reply(session, el, None)
            return None
        if x.get("type") != "submit":
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "submit or cancel the form")
        return self._configure(session, el, room, x)

    async def _configure(self, session: C2SStream, el: Element, room: Room, x: Element) -> None:
        new = apply_form(room.config, x)
        plan = self.ctx.host.limits.max_room_occupants
        if plan is not None and new.max_users > plan:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE,
                f"this service's plan allows at most {plan} people in a room",
            )
        old = room.config
        was_locked = room.locked
        room.config = new
        room.locked = False
        if new.persistent:
            await self._save(room)
        elif old.persistent:
            await self._forget(room)
        self._reply(session, el, None)
        if was_locked:
            # the owner is now in an unlocked room: send what a joiner gets after presences
            for occupant in list(room.occupants.values()):
                self._send(
                    occupant, self._from_room(room, Element("subject", NS_CLIENT, None, [""]))
                )
            return
        codes: list[str] = ["104"]
        if new.whois != old.whois:
            codes.append("172" if new.whois == "anyone" else "173")
        self._status_message(room, *codes)
        if new.members_only and not old.members_only:  # §9.4: non-members leave (322)
            for occupant in list(room.occupants.values()):
                if RANK[room.affiliation(occupant.bare)] < RANK["member"]:
                    self._remove(room, occupant)
                    self._broadcast_presence(
                        room, occupant, ("322",), type_="unavailable", children=[]
                    )
        self._maybe_discard(room)

    async def _destroy_iq(
        self, session: C2SStream, el: Element, room: Room, destroy: Element
    ) -> None:
        reason = destroy.find_text("reason", NS_OWNER) or ""
        alternate = destroy.get("jid") or ""
        self.destroy(room.name, reason, alternate)
        await self._forget(room)
        self._reply(session, el, None)

    def destroy(self, name: str, reason: str, alternate: str = "") -> bool:
        """§10.9: every occupant leaves with ``<destroy/>``; the room is gone. The caller
        deletes a persistent room from the store. False if there was no such room."""
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        for occupant in list(room.occupants.values()):
            self._remove(room, occupant)
            el = self._presence_of(room, occupant, occupant, type_="unavailable", children=[])
            el.attrs["type"] = "unavailable"
            x = el.find("x", NS_USER)
            assert x is not None
            for item in x.elements():
                if item.name == "item":
                    item.attrs["affiliation"] = "none"
                    item.attrs["role"] = "none"
            d = Element("destroy", NS_USER, {"jid": alternate} if alternate else {})
            if reason:
                d.sub("reason", text=reason)
            x.children.append(d)
            self._send(occupant, el)
        return True

    async def destroy_room(self, name: str, reason: str) -> bool:
        """Destroy a room from outside XMPP (the provider's or the customer's staff): as the
        owner's ``<destroy/>``, then forget it in the store. False if it did not exist here."""
        existed = self.destroy(name, reason)
        await self.ctx.stores.muc.delete_room(self.ctx.domain, name)
        return existed

    # -- §7.10: registration -----------------------------------------------------------------

    def _register(
        self, session: C2SStream, el: Element, room: Room, payload: Element, is_set: bool
    ) -> Awaitable[None] | None:
        bare = session.bare_str
        if not is_set:
            query = Element("query", NS_REGISTER)
            if bare in room.nicks:
                query.sub("registered")
                query.sub("username", text=room.nicks[bare])
                self._reply(session, el, query)
                return None
            query.sub("instructions", text="Choose the nickname to keep in this room.")
            x = query.sub("x", NS_DATA, {"type": "form"})
            x.sub("title", text="Register in the room")
            x.sub("field", attrs={"var": "FORM_TYPE", "type": "hidden"}).sub(
                "value", text=NS_REGISTER_FORM
            )
            nick = x.sub(
                "field",
                attrs={"var": "muc#register_roomnick", "type": "text-single", "label": "Nickname"},
            )
            nick.sub("required")
            self._reply(session, el, query)
            return None
        return self._register_set(session, el, room, payload)

    async def _register_set(
        self, session: C2SStream, el: Element, room: Room, payload: Element
    ) -> None:
        bare = session.bare_str
        affiliation = room.affiliation(bare)
        if payload.find("remove", NS_REGISTER) is not None:
            room.nicks.pop(bare, None)
            if affiliation == "member":
                room.affiliations.pop(bare, None)
            await self._save(room)
            self._reply(session, el, None)
            return
        x = payload.find("x", NS_DATA)
        if x is None or x.get("type") == "cancel":
            self._reply(session, el, None)
            return
        if affiliation == "outcast":
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "you are banned from this room")
        if room.config.members_only and RANK[affiliation] < RANK["member"]:
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED,
                "this room is for members only; ask one of its admins to add you",
            )
        values = form_values(x)
        nick = (values.get("muc#register_roomnick") or [""])[0].strip()
        if not nick or len(nick) > MAX_NICK:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "choose a nickname")
        owner = room.nick_owner(nick)
        holder = room.occupants.get(nick)
        if (owner is not None and owner != bare) or (holder is not None and holder.bare != bare):
            raise StanzaError(StanzaErrorCondition.CONFLICT, "that nickname is taken")
        room.nicks[bare] = nick
        if affiliation == "none":
            room.affiliations[bare] = "member"
            for occupant in room.occupants_of_bare(bare):
                occupant.role = room.default_role(bare)
                self._broadcast_presence(room, occupant)
        await self._save(room)
        self._reply(session, el, None)

    # -- for the control plane ---------------------------------------------------------------

    def room_summaries(self) -> list[RoomSummary]:
        """Every room now, by name (for the provider's and the customer's staff)."""
        return [
            RoomSummary(
                name=name,
                jid=room.jid,
                title=room.config.name,
                occupants=len(room.occupants),
                persistent=room.persistent,
                public=room.config.public and not room.locked,
            )
            for name, room in sorted(self.rooms.items())
        ]


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """A room as the control plane lists it."""

    name: str
    jid: str
    title: str
    occupants: int
    persistent: bool
    public: bool


ROLE_NAMES = ("moderator", "participant", "visitor", "none")


def _presence_children(el: Element) -> list[Element | str]:
    """What an occupant's presence shows others: everything but the MUC payloads."""
    return [
        c
        for c in el.children
        if isinstance(c, Element)
        and c.ns not in (NS_MUC, NS_USER, NS_OCCUPANT_ID)
        and c.name != "error"
    ]


def _status_children(el: Element) -> list[Element | str]:
    return [c for c in el.children if isinstance(c, Element) and c.name == "status"]


def _non_negative(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


async def _wait(pending: Awaitable[None]) -> None:
    await pending


__all__ = [
    "NS_MUC",
    "NS_OWNER",
    "NS_ROOMCONFIG",
    "NS_USER",
    "MucModule",
    "RoomConfig",
    "RoomSummary",
]
