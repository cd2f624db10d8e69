"""Persistent XEP-0045 rooms through the database: the ``MucStore`` adapter, a room kept
across an engine restart, and the plan's room limits reaching the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from imhost.catalog.models import PlanLimits
from imhost.hosting import service as hosting
from imhost.hosting.ports import DbBackend
from imhost.kit.clock import FrozenClock
from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.disco import DiscoModule
from imhost.xmpp.modules.muc import MucModule
from imhost.xmpp.ports import StoredRoom
from imhost.xmpp.server import XmppServer
from tests.xmpp.harness import Client, settings
from tests.xmpp.modules.conv import error_of

from .factories import PASSWORD, SECURITY, make_account, make_service

pytestmark = pytest.mark.anyio

A = "a.example"
ROOM = f"team@conference.{A}"


@pytest.fixture
async def services(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> AsyncIterator[tuple[str, str]]:
    with session_factory() as session:
        a = make_service(session, clock, domain=A)
        b = make_service(session, clock, domain="b.example")
        for user in ("alice", "bob"):
            make_account(session, clock, a, user)
        session.commit()
        yield a.id, b.id


def new_backend(factory: sessionmaker[Session], clock: FrozenClock) -> DbBackend:
    return DbBackend(factory, clock, SECURITY, host_refresh_seconds=3600)


async def test_rooms_are_stored_per_service_and_replaced_and_deleted(
    session_factory: sessionmaker[Session], clock: FrozenClock, services: tuple[str, str]
) -> None:
    backend = new_backend(session_factory, clock)
    await backend.start()
    try:
        store = backend.rooms
        room = StoredRoom(
            name="team",
            config={"muc#roomconfig_roomname": "Team"},
            affiliations={"alice@a.example": "owner"},
            nicks={"alice@a.example": "Alice"},
            subject="Hello",
            subject_by="Alice",
        )
        await store.save_room(A, room)
        assert await store.load_rooms(A) == [room]
        assert await store.load_rooms("b.example") == []
        assert await store.load_rooms("nowhere.example") == []
        changed = StoredRoom(name="team", config={}, affiliations={"bob@a.example": "owner"})
        await store.save_room(A, changed)
        assert await store.load_rooms(A) == [changed]
        await store.delete_room("b.example", "team")  # another tenant's name: nothing
        assert len(await store.load_rooms(A)) == 1
        await store.delete_room(A, "team")
        assert await store.load_rooms(A) == []
    finally:
        await backend.close()


def server_on(backend: DbBackend) -> XmppServer:
    return XmppServer(
        settings(),
        directory=backend.directory,
        auth=backend.auth,
        roster=backend.roster,
        offline=backend.storage,
        private=backend.private,
        vcard=backend.vcards,
        blocklist=backend.blocklist,
        usage=None,
        muc=backend.rooms,
        modules=[DiscoModule, MucModule],
    )


async def exchange(client: Client, xml: str) -> tuple[Element, None]:
    """Send an iq and wait (in real time: the store writes on a thread) for its answer."""
    client.send(xml)
    iq_id = xml.split("id='", 1)[1].split("'", 1)[0]
    while True:
        el = await client.wait_for("iq", timeout=10)
        if el.get("id") == iq_id:
            return el, None


async def online(server: XmppServer, user: str) -> Client:
    client = Client(server)
    result = await client.login_scram(user, PASSWORD, mech="SCRAM-SHA-1", to=A)
    assert result.name == "success", result
    assert (await client.bind("res")).get("type") == "result"
    client.send("<presence/>")
    await client.recv()
    return client


async def test_a_persistent_room_survives_an_engine_restart(
    session_factory: sessionmaker[Session], clock: FrozenClock, services: tuple[str, str]
) -> None:
    backend = new_backend(session_factory, clock)
    await backend.start()
    server = server_on(backend)
    await server.start(listen=False)
    alice = await online(server, "alice")
    alice.send(
        f"<presence to='{ROOM}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    await alice.wait_for("presence")
    reply, _ = await exchange(
        alice,
        f"<iq type='set' id='c1' to='{ROOM}'>"
        "<query xmlns='http://jabber.org/protocol/muc#owner'>"
        "<x xmlns='jabber:x:data' type='submit'>"
        "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
        "<field var='muc#roomconfig_roomname'><value>Team</value></field>"
        "</x></query></iq>",
    )
    assert reply.get("type") == "result"
    alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Kept</subject></message>")
    await alice.wait_for("message")
    reply, _ = await exchange(
        alice,
        f"<iq type='set' id='b1' to='{ROOM}'>"
        "<query xmlns='http://jabber.org/protocol/muc#admin'>"
        "<item jid='bob@a.example' affiliation='outcast'/></query></iq>",
    )
    assert reply.get("type") == "result"
    await server.stop()
    await backend.close()

    backend = new_backend(session_factory, clock)
    await backend.start()
    server = server_on(backend)
    await server.start(listen=False)
    try:
        bob = await online(server, "bob")
        bob.send(
            f"<presence to='{ROOM}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )
        assert error_of(await bob.wait_for("presence")) == "forbidden"
        alice = await online(server, "alice")
        alice.send(
            f"<presence to='{ROOM}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        )
        subject = await alice.wait_for("message")
        assert subject.find_text("subject") == "Kept"
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='i1' to='conference.{A}'>"
            "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
        )
        [item] = list(next(reply.elements()).elements())
        assert (item.get("jid"), item.get("name")) == (ROOM, "Team")
    finally:
        await server.stop()
        await backend.close()


async def test_the_plans_room_limits_reach_the_engine(
    session_factory: sessionmaker[Session], clock: FrozenClock, services: tuple[str, str]
) -> None:
    backend = new_backend(session_factory, clock)
    await backend.start()
    try:
        with session_factory() as session:
            service = hosting.get_service(session, services[0])
            limits = PlanLimits(max_rooms=3, max_room_occupants=40)
            hosting.change_plan_limits(session, clock, service, limits)
            session.commit()
        host = await backend.directory.get_host(A)
        assert host is not None
        assert (host.limits.max_rooms, host.limits.max_room_occupants) == (3, 40)
        with session_factory() as session:
            service = hosting.get_service(session, services[0])
            hosting.set_limits(session, clock, service, {"max_rooms": None})
            session.commit()
        host = await backend.directory.get_host(A)
        assert host is not None and host.limits.max_rooms is None
    finally:
        await backend.close()
