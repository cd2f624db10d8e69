"""XEP-0045 conversations with the conference service: every rule and error case, XML in and
XML out, through the in-process harness."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imhost.kit.clock import FrozenClock
from imhost.xmpp.core.xml import NS_SM, Element
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.disco import DiscoModule
from imhost.xmpp.modules.muc import MucModule
from imhost.xmpp.modules.muc.service import (
    NS_ADMIN,
    NS_MUC,
    NS_OCCUPANT_ID,
    NS_OWNER,
    NS_SID,
    NS_USER,
)
from imhost.xmpp.ports import HostLimits, StoredRoom

from ..harness import DOMAIN
from .conv import Client, Harness, error_of, error_text, exchange, named

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [DiscoModule, MucModule]
SERVICE = "conference.example.test"
ROOM = f"team@{SERVICE}"
NS_DATA = "jabber:x:data"


def codes(el: Element) -> set[str]:
    x = el.find("x", NS_USER)
    return {s.get("code", "") for s in x.elements() if s.name == "status"} if x else set()


def item_of(el: Element) -> Element:
    x = el.find("x", NS_USER)
    assert x is not None, el
    item = x.find("item", NS_USER)
    assert item is not None, el
    return item


def join_xml(nick: str, room: str = ROOM, extra: str = "") -> str:
    return f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{extra}</x></presence>"


def submit(fields: dict[str, str] | None = None, room: str = ROOM, id_: str = "cfg") -> str:
    pairs = (fields or {}).items()
    inner = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in pairs)
    return (
        f"<iq type='set' id='{id_}' to='{room}'><query xmlns='{NS_OWNER}'>"
        f"<x xmlns='{NS_DATA}' type='submit'>{inner}</x></query></iq>"
    )


async def create(
    h: Harness, owner: Client, nick: str = "alice", fields: dict[str, str] | None = None
) -> list[Element]:
    """``owner`` creates the room (locked), then configures it (instant room if no fields)."""
    owner.send(join_xml(nick))
    got = [await owner.wait_for("presence")]
    assert {"110", "201"} <= codes(got[0]), got
    reply, more = await exchange(owner, submit(fields))
    assert reply.get("type") == "result", reply
    return got + more


async def joined(c: Client, nick: str, room: str = ROOM, extra: str = "") -> list[Element]:
    """Join and return everything up to and including the subject."""
    c.send(join_xml(nick, room, extra))
    out: list[Element] = []
    for _ in range(100):
        for el in await c.recv():
            out.append(el)
            if el.name == "message" and el.find("subject") is not None:
                return out
            if el.get("type") == "error":
                return out
    raise AssertionError(out)


async def test_service_is_listed_and_described() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        reply, _ = await exchange(
            alice,
            "<iq type='get' id='i1' to='example.test'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )
        items = [i.get("jid") for i in next(reply.elements()).elements()]
        assert items == [SERVICE]
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='i2' to='{SERVICE}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        query = next(reply.elements())
        identity = query.find("identity")
        assert identity is not None and identity.get("category") == "conference"
        features = {f.get("var") for f in query.elements() if f.name == "feature"}
        assert NS_MUC in features and NS_OCCUPANT_ID in features and NS_SID in features


async def test_create_locked_room_then_instant_room_and_join() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        alice.send(join_xml("Alice"))
        self_presence = await alice.wait_for("presence")
        assert self_presence.get("from") == f"{ROOM}/Alice"
        assert codes(self_presence) == {"110", "201"}
        item = item_of(self_presence)
        assert (item.get("affiliation"), item.get("role")) == ("owner", "moderator")
        assert self_presence.find("occupant-id", NS_OCCUPANT_ID) is not None
        # locked until configured: others get item-not-found
        bob.send(join_xml("Bob"))
        refused = await bob.wait_for("presence")
        assert error_of(refused) == "item-not-found"
        # the owner gets the form, then accepts the defaults (instant room)
        reply, _ = await exchange(
            alice, f"<iq type='get' id='f1' to='{ROOM}'><query xmlns='{NS_OWNER}'/></iq>"
        )
        form = next(reply.elements()).find("x", NS_DATA)
        assert form is not None and form.get("type") == "form"
        assert "muc#roomconfig_persistentroom" in {f.get("var") for f in form.elements()}
        reply, _ = await exchange(alice, submit())
        assert reply.get("type") == "result"
        got = await joined(bob, "Bob")
        presences = named(got, "presence")
        assert [p.get("from") for p in presences] == [f"{ROOM}/Alice", f"{ROOM}/Bob"]
        assert codes(presences[-1]) == {"110"}
        assert item_of(presences[-1]).get("jid") is None  # semi-anonymous to a participant
        assert item_of(presences[-1]).get("role") == "participant"
        subject = got[-1]
        assert subject.get("type") == "groupchat" and subject.find("subject") is not None
        # alice (moderator) sees bob's real JID
        seen = await alice.wait_for("presence")
        assert seen.get("from") == f"{ROOM}/Bob"
        assert item_of(seen).get("jid") == "bob@example.test/res"


async def test_groupchat_is_reflected_with_ids_and_counted_once() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        carol = await h.online("carol")
        await create(h, alice)
        await joined(bob, "bob")
        await joined(carol, "carol")
        await alice.recv()
        await bob.recv()
        bob.send(
            f"<message to='{ROOM}' type='groupchat' id='m1'><body>hello</body>"
            f"<stanza-id xmlns='{NS_SID}' id='forged' by='{ROOM}'/></message>"
        )
        copies = [await c.wait_for("message") for c in (alice, bob, carol)]
        ids = set()
        for copy in copies:
            assert copy.get("from") == f"{ROOM}/bob" and copy.get("id") == "m1"
            [sid] = [e for e in copy.elements() if e.name == "stanza-id"]
            assert sid.get("by") == ROOM and sid.get("id") != "forged"
            ids.add(sid.get("id"))
            occ = copy.find("occupant-id", NS_OCCUPANT_ID)
            assert occ is not None
        assert len(ids) == 1  # one stable id for every copy
        assert {c.get("to") for c in copies} == {
            "alice@example.test/res",
            "bob@example.test/res",
            "carol@example.test/res",
        }
        counters = h.server.router.hosts[DOMAIN].counters
        assert (counters.room_messages, counters.room_deliveries) == (1, 3)
        assert counters.messages == 1
        await h.server.meter.flush()
        assert h.backend.usage_total(DOMAIN, "room_messages") == 1
        assert h.backend.usage_total(DOMAIN, "room_deliveries") == 3
        assert h.backend.usage_total(DOMAIN, "messages") == 1


async def test_occupant_id_is_stable_per_person_and_distinct_between_people() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice)
        first = named(await joined(bob, "bob"), "presence")
        bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
        await bob.wait_for("presence")
        second = named(await joined(bob, "bobby"), "presence")

        def occ(p: Element) -> str:
            el = p.find("occupant-id", NS_OCCUPANT_ID)
            assert el is not None
            return el.get("id", "")

        assert occ(first[-1]) == occ(second[-1])
        assert occ(first[0]) != occ(first[-1])


async def test_nick_conflict_and_reserved_nick() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        carol = await h.online("carol")
        await create(h, alice)
        got = await joined(bob, "alice")
        assert error_of(got[-1]) == "conflict"
        assert got[-1].find("x", NS_MUC) is not None
        # carol registers "carol"; bob may not take it
        reply, _ = await exchange(
            carol,
            f"<iq type='set' id='r1' to='{ROOM}'><query xmlns='jabber:iq:register'>"
            f"<x xmlns='{NS_DATA}' type='submit'><field var='muc#register_roomnick'>"
            "<value>carol</value></field></x></query></iq>",
        )
        assert reply.get("type") == "result"
        got = await joined(bob, "carol")
        assert error_of(got[-1]) == "conflict"
        # registration made carol a member, and her nick is listed
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='l1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item affiliation='member'/></query></iq>",
        )
        [member] = list(next(reply.elements()).elements())
        assert (member.get("jid"), member.get("nick")) == ("carol@example.test", "carol")
        reply, _ = await exchange(
            carol,
            f"<iq type='get' id='r2' to='{ROOM}'><query xmlns='jabber:iq:register'/></iq>",
        )
        query = next(reply.elements())
        assert query.find("registered") is not None and query.find_text("username") == "carol"


async def test_history_on_join_honours_maxstanzas_maxchars_seconds_since() -> None:
    clock = FrozenClock()
    async with Harness(modules=MODULES, clock=clock) as h:
        alice = await h.online("alice")
        await create(h, alice)
        for n in range(5):
            alice.send(f"<message to='{ROOM}' type='groupchat'><body>m{n}</body></message>")
            await alice.wait_for("message")
            clock.advance(timedelta(minutes=10))
        bob = await h.online("bob")

        async def history(extra: str) -> list[str]:
            got = await joined(bob, "bob", extra=extra)
            bodies = [m.find_text("body") or "" for m in named(got, "message") if m.find("body")]
            for m in named(got, "message"):
                if m.find("body") is not None:
                    delay = m.find("delay", "urn:xmpp:delay")
                    assert delay is not None and delay.get("from") == ROOM
            bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
            await bob.wait_for("presence")
            return bodies

        assert await history("") == ["m0", "m1", "m2", "m3", "m4"]
        assert await history("<history maxstanzas='2'/>") == ["m3", "m4"]
        assert await history("<history maxstanzas='0'/>") == []
        assert await history("<history seconds='1500'/>") == ["m3", "m4"]
        since = (clock.now() - timedelta(minutes=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert await history(f"<history since='{since}'/>") == ["m3", "m4"]
        module = h.server.router.hosts[DOMAIN].modules[-1]
        assert isinstance(module, MucModule)
        one = module.rooms["team"].history[-1].chars
        assert await history(f"<history maxchars='{one + one // 2}'/>") == ["m4"]
        assert await history(f"<history maxchars='{2 * one + 5}'/>") == ["m3", "m4"]


async def test_private_messages_and_their_errors() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        carol = await h.online("carol")
        await create(h, alice)
        await joined(bob, "bob")
        await alice.recv()
        bob.send(f"<message to='{ROOM}/alice' type='chat' id='p1'><body>psst</body></message>")
        pm = await alice.wait_for("message")
        assert pm.get("from") == f"{ROOM}/bob" and pm.find_text("body") == "psst"
        assert pm.find("x", NS_USER) is not None
        bob.send(f"<message to='{ROOM}/nobody' type='chat' id='p2'><body>?</body></message>")
        assert error_of(await bob.wait_for("message")) == "item-not-found"
        bob.send(f"<message to='{ROOM}/alice' type='groupchat' id='p3'><body>x</body></message>")
        assert error_of(await bob.wait_for("message")) == "bad-request"
        carol.send(f"<message to='{ROOM}/alice' type='chat' id='p4'><body>hi</body></message>")
        assert error_of(await carol.wait_for("message")) == "not-acceptable"
        carol.send(f"<message to='{ROOM}' type='groupchat' id='p5'><body>hi</body></message>")
        assert error_of(await carol.wait_for("message")) == "not-acceptable"
        await exchange(alice, submit({"muc#roomconfig_allowpm": "none"}))
        await bob.recv()
        bob.send(f"<message to='{ROOM}/alice' type='chat' id='p6'><body>x</body></message>")
        assert error_of(await bob.wait_for("message")) == "forbidden"


async def test_subject_change_rules() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice)
        await joined(bob, "bob")
        await alice.recv()
        bob.send(f"<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>")
        assert error_of(await bob.wait_for("message")) == "forbidden"
        alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Plans</subject></message>")
        for c in (alice, bob):
            m = await c.wait_for("message")
            assert m.find_text("subject") == "Plans" and m.get("from") == f"{ROOM}/alice"
        carol = await h.online("carol")
        got = await joined(carol, "carol")
        assert got[-1].find_text("subject") == "Plans"
        assert got[-1].get("from") == f"{ROOM}/alice"


async def test_nick_change_and_presence_update() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice)
        await joined(bob, "bob")
        await alice.recv()
        bob.send(f"<presence to='{ROOM}/alice'/>")
        assert error_of(await bob.wait_for("presence")) == "conflict"
        bob.send(f"<presence to='{ROOM}/robert'/>")
        gone = await alice.wait_for("presence")
        assert gone.get("type") == "unavailable" and gone.get("from") == f"{ROOM}/bob"
        assert codes(gone) == {"303"} and item_of(gone).get("nick") == "robert"
        back = await alice.wait_for("presence")
        assert back.get("from") == f"{ROOM}/robert" and back.get("type") is None
        own = [await bob.wait_for("presence"), await bob.wait_for("presence")]
        assert codes(own[0]) == {"303", "110"} and codes(own[1]) == {"110"}
        bob.send(f"<presence to='{ROOM}/robert'><show>away</show></presence>")
        update = await alice.wait_for("presence")
        assert update.find_text("show") == "away"


async def test_leave_and_exit_on_disconnect_and_temporary_room_goes() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice)
        await joined(bob, "bob")
        await alice.recv()
        bob.send(f"<presence to='{ROOM}/bob' type='unavailable'><status>bye</status></presence>")
        own = await bob.wait_for("presence")
        assert own.get("type") == "unavailable" and codes(own) == {"110"}
        seen = await alice.wait_for("presence")
        assert seen.get("type") == "unavailable" and seen.find_text("status") == "bye"
        await joined(bob, "bob")
        await alice.recv()
        bob.send("<presence type='unavailable'/>")  # undirected unavailable leaves every room
        seen = await alice.wait_for("presence")
        assert seen.get("type") == "unavailable" and seen.get("from") == f"{ROOM}/bob"
        module = h.server.router.hosts[DOMAIN].modules[-1]
        assert isinstance(module, MucModule)
        alice.stream.connection_lost(None)  # the last occupant's session ends
        await alice.recv()
        assert "team" not in module.rooms


async def test_password_members_only_ban_full_and_room_limit() -> None:
    limits = HostLimits(message_rate=None, max_rooms=1, max_room_occupants=2)
    async with Harness(modules=MODULES, limits=limits) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        carol = await h.online("carol")
        await create(
            h,
            alice,
            fields={
                "muc#roomconfig_passwordprotectedroom": "1",
                "muc#roomconfig_roomsecret": "s3cret",
            },
        )
        got = await joined(bob, "bob")
        assert error_of(got[-1]) == "not-authorized"
        got = await joined(bob, "bob", extra="<password>s3cret</password>")
        assert got[-1].find("subject") is not None
        got = await joined(carol, "carol", extra="<password>s3cret</password>")
        assert error_of(got[-1]) == "service-unavailable"
        assert "2 people" in error_text(got[-1])
        # a second room is over the plan's limit
        carol.send(join_xml("carol", f"other@{SERVICE}"))
        refused = await carol.wait_for("presence")
        assert error_of(refused) == "resource-constraint"
        assert "1 rooms" in error_text(refused)
        # a room may not be configured above the plan
        reply, _ = await exchange(alice, submit({"muc#roomconfig_maxusers": "5"}))
        assert error_of(reply) == "not-acceptable"
        # members only: carol needs membership
        await exchange(
            alice,
            submit(
                {"muc#roomconfig_membersonly": "1", "muc#roomconfig_passwordprotectedroom": "0"}
            ),
        )
        got = await joined(carol, "carol")
        assert error_of(got[-1]) == "registration-required"
        # the whole form sent back with protection off (and the old secret) opens the room
        reply, _ = await exchange(
            alice,
            submit(
                {
                    "muc#roomconfig_membersonly": "0",
                    "muc#roomconfig_passwordprotectedroom": "0",
                    "muc#roomconfig_roomsecret": "s3cret",
                }
            ),
        )
        assert reply.get("type") == "result"
        bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
        await bob.wait_for("presence")
        got = await joined(bob, "bob")
        assert got[-1].find("subject") is not None
        # a secret alone switches protection on
        await exchange(alice, submit({"muc#roomconfig_roomsecret": "n3w"}))
        got = await joined(carol, "carol")
        assert error_of(got[-1]) == "not-authorized"


async def test_kick_ban_and_their_permissions() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        carol = await h.online("carol")
        await create(h, alice)
        await joined(bob, "bob")
        await joined(carol, "carol")
        await alice.recv()
        await bob.recv()
        # a participant may not kick
        reply, _ = await exchange(
            bob,
            f"<iq type='set' id='k0' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item nick='carol' role='none'/></query></iq>",
        )
        assert error_of(reply) == "forbidden"
        # nobody may kick the owner
        await exchange(
            alice,
            f"<iq type='set' id='a1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item jid='bob@example.test' affiliation='admin'/></query></iq>",
        )
        await bob.recv()
        reply, _ = await exchange(
            bob,
            f"<iq type='set' id='k1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item nick='alice' role='none'/></query></iq>",
        )
        assert error_of(reply) == "not-allowed"
        reply, _ = await exchange(
            bob,
            f"<iq type='set' id='k2' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item nick='carol' role='none'><reason>spam</reason></item></query></iq>",
        )
        assert reply.get("type") == "result"
        kicked = await carol.wait_for("presence")
        while kicked.get("from") != f"{ROOM}/carol":
            kicked = await carol.wait_for("presence")
        assert kicked.get("type") == "unavailable" and codes(kicked) == {"110", "307"}
        assert item_of(kicked).find_text("reason") == "spam"
        # ban: carol may not come back
        reply, _ = await exchange(
            bob,
            f"<iq type='set' id='b1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item jid='carol@example.test' affiliation='outcast'/></query></iq>",
        )
        assert reply.get("type") == "result"
        got = await joined(carol, "carol")
        assert error_of(got[-1]) == "forbidden"
        # an admin may not make owners; the last owner may not step down
        reply, _ = await exchange(
            bob,
            f"<iq type='set' id='o1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item jid='carol@example.test' affiliation='owner'/></query></iq>",
        )
        assert error_of(reply) == "not-allowed"
        reply, _ = await exchange(
            alice,
            f"<iq type='set' id='o2' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item jid='alice@example.test' affiliation='member'/></query></iq>",
        )
        assert error_of(reply) == "conflict"
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='o3' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item affiliation='outcast'/></query></iq>",
        )
        assert [i.get("jid") for i in next(reply.elements()).elements()] == ["carol@example.test"]


async def test_moderated_room_voice() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice, fields={"muc#roomconfig_moderatedroom": "1"})
        got = await joined(bob, "bob")
        assert item_of(named(got, "presence")[-1]).get("role") == "visitor"
        bob.send(f"<message to='{ROOM}' type='groupchat'><body>hi</body></message>")
        assert error_of(await bob.wait_for("message")) == "forbidden"
        await alice.recv()
        reply, _ = await exchange(
            alice,
            f"<iq type='set' id='v1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item nick='bob' role='participant'/></query></iq>",
        )
        assert reply.get("type") == "result"
        await bob.recv()
        bob.send(f"<message to='{ROOM}' type='groupchat'><body>hi</body></message>")
        m = await alice.wait_for("message")
        assert m.find_text("body") == "hi"


async def test_mediated_invitation_decline_and_direct_invitation() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice, fields={"muc#roomconfig_membersonly": "1"})
        alice.send(
            f"<message to='{ROOM}'><x xmlns='{NS_USER}'><invite to='bob@example.test'>"
            "<reason>join us</reason></invite></x></message>"
        )
        invite = await bob.wait_for("message")
        assert invite.get("from") == ROOM
        x = invite.find("x", NS_USER)
        assert x is not None
        inv = x.find("invite", NS_USER)
        assert inv is not None and inv.get("from") == "alice@example.test"
        assert inv.find_text("reason", NS_USER) == "join us"
        # members-only: the invitation made bob a member, so he can enter
        got = await joined(bob, "bob")
        assert got[-1].find("subject") is not None
        bob.send(
            f"<message to='{ROOM}'><x xmlns='{NS_USER}'><decline to='alice@example.test'>"
            "<reason>busy</reason></decline></x></message>"
        )
        declined = await alice.wait_for_any(["message"])
        while declined.find("x", NS_USER) is None:
            declined = await alice.wait_for("message")
        dx = declined.find("x", NS_USER)
        assert dx is not None
        decline = dx.find("decline", NS_USER)
        assert decline is not None and decline.get("from") == "bob@example.test"
        # XEP-0249: a direct invitation passes from client to client unchanged
        alice.send(
            "<message to='bob@example.test'>"
            f"<x xmlns='jabber:x:conference' jid='{ROOM}' reason='hello'/></message>"
        )
        direct = await bob.wait_for("message")
        conf = direct.find("x", "jabber:x:conference")
        assert conf is not None and conf.get("jid") == ROOM
        # a participant may not invite to a members-only room
        bob.send(
            f"<message to='{ROOM}'><x xmlns='{NS_USER}'><invite to='carol@example.test'/>"
            "</x></message>"
        )
        assert error_of(await bob.wait_for("message")) == "forbidden"


async def test_self_ping() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice)
        ping = "<iq type='get' id='{id}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"
        reply, _ = await exchange(alice, ping.format(id="s1", to=f"{ROOM}/alice"))
        assert reply.get("type") == "result"
        reply, _ = await exchange(bob, ping.format(id="s2", to=f"{ROOM}/alice"))
        assert error_of(reply) == "not-acceptable"
        reply, _ = await exchange(bob, ping.format(id="s3", to=f"{ROOM}/bob"))
        assert error_of(reply) == "not-acceptable"


async def test_room_disco_reflects_configuration_and_hidden_rooms_are_not_listed() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await create(
            h,
            alice,
            fields={
                "muc#roomconfig_roomname": "The Team",
                "muc#roomconfig_whois": "anyone",
                "muc#roomconfig_publicroom": "0",
            },
        )
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='d1' to='{ROOM}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        query = next(reply.elements())
        features = {f.get("var") for f in query.elements() if f.name == "feature"}
        assert {"muc_hidden", "muc_nonanonymous", "muc_temporary", "muc_open"} <= features
        assert "http://jabber.org/protocol/muc#stable_id" in features
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='d2' to='{SERVICE}'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )
        assert list(next(reply.elements()).elements()) == []
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='d3' to='nothing@{SERVICE}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        assert error_of(reply) == "item-not-found"
        await exchange(alice, submit({"muc#roomconfig_publicroom": "1"}))
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='d4' to='{SERVICE}'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )
        [item] = list(next(reply.elements()).elements())
        assert (item.get("jid"), item.get("name")) == (ROOM, "The Team")


async def test_configuration_change_notice_and_bad_values() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice)
        await joined(bob, "bob")
        reply, _ = await exchange(alice, submit({"muc#roomconfig_whois": "everyone"}))
        assert error_of(reply) == "not-acceptable"
        reply, _ = await exchange(bob, submit({"muc#roomconfig_whois": "anyone"}))
        assert error_of(reply) == "forbidden"
        reply, _ = await exchange(alice, submit({"muc#roomconfig_whois": "anyone"}))
        assert reply.get("type") == "result"
        notice = await bob.wait_for("message")
        assert codes(notice) == {"104", "172"}
        # making the room members-only removes bob (322)
        await exchange(alice, submit({"muc#roomconfig_membersonly": "1"}))
        removed = await bob.wait_for("presence")
        while removed.get("type") != "unavailable":
            removed = await bob.wait_for("presence")
        assert "322" in codes(removed)


async def test_destroy_and_persistence_through_the_store() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(
            h, alice, fields={"muc#roomconfig_persistentroom": "1", "muc#roomconfig_roomname": "T"}
        )
        alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Kept</subject></message>")
        await alice.wait_for("message")
        await exchange(
            alice,
            f"<iq type='set' id='m1' to='{ROOM}'><query xmlns='{NS_ADMIN}'>"
            "<item jid='bob@example.test' affiliation='member'/></query></iq>",
        )
        stored = h.backend.rooms[DOMAIN]["team"]
        assert stored.config["muc#roomconfig_roomname"] == "T"
        assert stored.affiliations == {
            "alice@example.test": "owner",
            "bob@example.test": "member",
        }
        assert stored.subject == "Kept"
        # the last occupant leaves: a persistent room stays
        alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
        await alice.wait_for("presence")
        got = await joined(bob, "bob")
        assert got[-1].find_text("subject") == "Kept"
        # only an owner destroys
        destroy = (
            f"<iq type='set' id='x1' to='{ROOM}'><query xmlns='{NS_OWNER}'>"
            f"<destroy jid='new@{SERVICE}'><reason>moved</reason></destroy></query></iq>"
        )
        reply, _ = await exchange(bob, destroy.replace("x1", "x0"))
        assert error_of(reply) == "forbidden"
        reply, _ = await exchange(alice, destroy)
        assert reply.get("type") == "result"
        gone = await bob.wait_for("presence")
        x = gone.find("x", NS_USER)
        assert gone.get("type") == "unavailable" and x is not None
        d = x.find("destroy", NS_USER)
        assert d is not None and d.get("jid") == f"new@{SERVICE}"
        assert "team" not in h.backend.rooms[DOMAIN]


async def test_persistent_rooms_are_loaded_with_the_host() -> None:
    h = Harness(modules=MODULES)
    await h.backend.save_room(
        DOMAIN,
        StoredRoom(
            name="lobby",
            config={"muc#roomconfig_roomname": "Lobby", "muc#roomconfig_membersonly": "1"},
            affiliations={"alice@example.test": "owner", "carol@example.test": "outcast"},
            subject="Welcome",
            subject_by="alice",
        ),
    )
    async with h:
        bob = await h.online("bob")
        carol = await h.online("carol")
        alice = await h.online("alice")
        lobby = f"lobby@{SERVICE}"
        got = await joined(bob, "bob", room=lobby)
        assert error_of(got[-1]) == "registration-required"
        got = await joined(carol, "carol", room=lobby)
        assert error_of(got[-1]) == "forbidden"
        got = await joined(alice, "alice", room=lobby)
        assert got[-1].find_text("subject") == "Welcome"
        assert item_of(named(got, "presence")[-1]).get("affiliation") == "owner"


async def test_join_errors_without_nick_and_unknown_requests() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send(f"<presence to='{ROOM}'/>")
        assert error_of(await alice.wait_for("presence")) == "jid-malformed"
        alice.send(f"<message to='{ROOM}' type='groupchat'><body>x</body></message>")
        assert error_of(await alice.wait_for("message")) == "item-not-found"
        reply, _ = await exchange(
            alice, f"<iq type='get' id='u1' to='{SERVICE}'><query xmlns='urn:example'/></iq>"
        )
        assert error_of(reply) == "service-unavailable"


async def test_staff_destroy_tells_the_occupants_and_forgets_the_room() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")
        await create(h, alice, fields={"muc#roomconfig_persistentroom": "1"})
        await joined(bob, "bob")
        assert "team" in h.backend.rooms[DOMAIN]
        h.backend.destroy_room(DOMAIN, "team", "closed by the provider")
        for c in (alice, bob):
            gone = await c.wait_for("presence")
            while gone.get("type") != "unavailable":
                gone = await c.wait_for("presence")
            x = gone.find("x", NS_USER)
            assert x is not None
            d = x.find("destroy", NS_USER)
            assert d is not None and d.find_text("reason", NS_USER) == "closed by the provider"
        module = h.server.router.hosts[DOMAIN].modules[-1]
        assert isinstance(module, MucModule) and "team" not in module.rooms
        assert [r.name for r in h.server.rooms(DOMAIN)] == []
        alice.send(f"<message to='{ROOM}' type='groupchat'><body>x</body></message>")
        assert error_of(await alice.wait_for("message")) == "item-not-found"


async def test_an_occupant_resumed_on_a_new_connection_keeps_getting_the_room() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob = await h.online("bob", "phone")
        await create(h, alice)
        bob.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        [enabled] = await bob.recv()
        await joined(bob, "bob")
        await alice.recv()
        bob.stream.connection_lost(ConnectionResetError())  # the network drops: hibernation
        alice.send(f"<message to='{ROOM}' type='groupchat'><body>while away</body></message>")
        await alice.wait_for("message")
        again = h.client()
        await again.login_plain("bob")
        again.restart()
        await again.open()
        again.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
        got = await again.recv()
        assert got[0].name == "resumed"
        assert "while away" in [e.find_text("body") for e in got if e.name == "message"]
        alice.send(f"<message to='{ROOM}' type='groupchat'><body>after</body></message>")
        after = await again.wait_for("message")
        while after.find_text("body") != "after":
            after = await again.wait_for("message")
        assert after.get("to") == "bob@example.test/phone"


async def test_another_tenant_cannot_reach_the_conference_service() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await create(h, alice)
        mallory = h.client()
        ok = await mallory.login_scram("mallory", mech="SCRAM-SHA-1", to="other.test")
        assert ok.name == "success"
        assert (await mallory.bind()).get("type") == "result"
        assert mallory.stream.domain == "other.test"
        mallory.send(f"<message to='{ROOM}' type='groupchat'><body>hi</body></message>")
        assert error_of(await mallory.wait_for("message")) == "remote-server-not-found"
        mallory.send(join_xml("mallory"))
        reply, _ = await exchange(
            mallory,
            f"<iq type='get' id='x1' to='{SERVICE}'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )
        assert error_of(reply) == "remote-server-not-found"
        module = h.server.router.hosts[DOMAIN].modules[-1]
        assert isinstance(module, MucModule)
        assert list(module.rooms["team"].occupants) == ["alice"]
        # its own service is its own: conference.other.test
        reply, _ = await exchange(
            mallory,
            "<iq type='get' id='x2' to='conference.other.test'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )
        assert reply.get("type") == "result"
