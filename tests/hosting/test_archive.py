"""XEP-0313 archives through the database: the ``ArchiveStore`` adapter (the same contract as
the in-memory one), an engine on it end to end, the retention job with time travel, and the
plan's ``archive_days`` reaching the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.catalog.models import PlanLimits
from imhost.hosting.models import HostedService, XmppArchivedMessage
from imhost.hosting.ports import DbBackend
from imhost.hosting.tasks import expire_archives
from imhost.kit.clock import FrozenClock
from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.mam import NS_MAM, NS_SID, MamModule
from imhost.xmpp.modules.roster import RosterModule
from imhost.xmpp.ports import (
    ArchivedMessage,
    ArchiveFilter,
    ArchivePrefs,
    ArchiveStore,
    UnknownArchiveId,
)
from imhost.xmpp.server import XmppServer
from tests.xmpp.harness import Client, settings

from .factories import PASSWORD, SECURITY, make_account, make_service

pytestmark = pytest.mark.anyio

A = "a.example"


@pytest.fixture
async def services(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> AsyncIterator[tuple[str, str]]:
    with session_factory() as session:
        a = make_service(session, clock, domain=A, limits=PlanLimits(archive_days=30))
        b = make_service(session, clock, domain="b.example")
        for user in ("alice", "bob"):
            make_account(session, clock, a, user)
        make_account(session, clock, b, "alice")
        session.commit()
        yield a.id, b.id


def new_backend(factory: sessionmaker[Session], clock: FrozenClock) -> DbBackend:
    return DbBackend(factory, clock, SECURITY, host_refresh_seconds=3600)


def message(
    clock: FrozenClock, n: int, *, domain: str = A, owner: str = "alice", peer: str = "bob"
) -> ArchivedMessage:
    return ArchivedMessage(
        id=f"id{n:04d}",
        domain=domain,
        localpart=owner,
        with_jid=f"{peer}@{A}",
        with_resource="phone" if n % 2 else "desk",
        stamp=clock.now() + timedelta(seconds=n),
        outgoing=n % 3 == 0,
        stanza=f"<message xmlns='jabber:client' type='chat'><body>note {n} Lunch</body></message>",
        text=f"note {n} Lunch" if n % 4 else f"note {n}",
    )


async def check_contract(store: ArchiveStore, clock: FrozenClock) -> None:
    """What both implementations must answer alike (memory is the reference)."""
    assert await store.archive_bytes_used(A) == 0  # then kept up to date by the appends
    batch = [message(clock, n) for n in range(10)]
    batch.append(message(clock, 10, peer="carol"))
    await store.append(batch)
    await store.append(batch[:3])  # a retried batch stores nothing twice
    await store.append([message(clock, 99, owner="nobody")])  # no such account: ignored

    def ids(page: object) -> list[str]:
        return [m.id for m in page.messages]  # type: ignore[attr-defined]

    page = await store.query(A, "alice", ArchiveFilter(), limit=4)
    assert ids(page) == ["id0000", "id0001", "id0002", "id0003"]
    assert page.count == 11 and not page.complete
    page = await store.query(A, "alice", ArchiveFilter(), after="id0007", limit=4)
    assert ids(page) == ["id0008", "id0009", "id0010"] and page.complete
    page = await store.query(A, "alice", ArchiveFilter(), last=True, limit=2)
    assert ids(page) == ["id0009", "id0010"] and not page.complete
    page = await store.query(A, "alice", ArchiveFilter(), before="id0002", limit=5)
    assert ids(page) == ["id0000", "id0001"] and page.complete
    bob = ArchiveFilter(with_jid=f"bob@{A}")
    assert (await store.query(A, "alice", bob)).count == 10
    phone = ArchiveFilter(with_jid=f"bob@{A}/phone")
    assert ids(await store.query(A, "alice", phone, limit=2)) == ["id0001", "id0003"]
    window = ArchiveFilter(
        start=clock.now() + timedelta(seconds=2), end=clock.now() + timedelta(seconds=4)
    )
    assert ids(await store.query(A, "alice", window)) == ["id0002", "id0003", "id0004"]
    by_id = ArchiveFilter(after_id="id0005", before_id="id0008")
    page = await store.query(A, "alice", by_id)
    assert ids(page) == ["id0006", "id0007"] and page.count == 2
    chosen = ArchiveFilter(ids=("id0004", "id0001"))
    assert ids(await store.query(A, "alice", chosen)) == ["id0001", "id0004"]
    text = ArchiveFilter(text="LUNCH 1")
    assert ids(await store.query(A, "alice", text)) == ["id0001", "id0010"]
    for bad in (
        {"after": "nope"},
        {"before": "nope"},
    ):
        with pytest.raises(UnknownArchiveId):
            await store.query(A, "alice", ArchiveFilter(), **bad)  # type: ignore[arg-type]
    for f in (ArchiveFilter(after_id="nope"), ArchiveFilter(ids=("id0001", "nope"))):
        with pytest.raises(UnknownArchiveId):
            await store.query(A, "alice", f)
    # bob's archive and the other tenant's alice are apart
    assert (await store.query(A, "bob", ArchiveFilter())).count == 0
    assert (await store.query("b.example", "alice", ArchiveFilter())).count == 0
    with pytest.raises(UnknownArchiveId):
        await store.query("b.example", "alice", ArchiveFilter(), after="id0001")
    assert await store.get_prefs(A, "alice") is None
    prefs = ArchivePrefs("roster", frozenset({f"carol@{A}"}), frozenset({f"bob@{A}"}))
    await store.set_prefs(A, "alice", prefs)
    assert await store.get_prefs(A, "alice") == prefs
    size = sum(m.size for m in batch)
    assert await store.archive_bytes_used(A) == size
    assert await store.archive_bytes_used("b.example") == 0


async def test_memory_store_meets_the_contract(clock: FrozenClock) -> None:
    backend = MemoryBackend(iterations=64)
    for user in ("alice", "bob"):
        backend.create_account(A, user, PASSWORD)
    backend.create_account("b.example", "alice", PASSWORD)
    await check_contract(backend, clock)


async def test_database_store_meets_the_contract(
    session_factory: sessionmaker[Session], clock: FrozenClock, services: tuple[str, str]
) -> None:
    backend = new_backend(session_factory, clock)
    await backend.start()
    try:
        await check_contract(backend.archive, clock)
    finally:
        await backend.close()


async def online(server: XmppServer, user: str) -> Client:
    client = Client(server)
    result = await client.login_scram(user, PASSWORD, mech="SCRAM-SHA-1", to=A)
    assert result.name == "success", result
    assert (await client.bind("res")).get("type") == "result"
    client.send("<presence/>")
    await client.recv()
    return client


async def answer(client: Client, iq_id: str) -> list[object]:
    """Everything up to the iq answer with this id (in real time: the store uses threads)."""
    got: list[object] = []
    while True:
        el = await client.wait_for_any(("iq", "message"), timeout=10)
        got.append(el)
        if el.name == "iq" and el.get("id") == iq_id:
            return got


async def test_an_engine_on_the_database_archives_and_pages(
    session_factory: sessionmaker[Session], clock: FrozenClock, services: tuple[str, str]
) -> None:
    backend = new_backend(session_factory, clock)
    await backend.start()
    server = XmppServer(
        settings(),
        directory=backend.directory,
        auth=backend.auth,
        roster=backend.roster,
        offline=backend.storage,
        private=backend.private,
        vcard=backend.vcards,
        blocklist=backend.blocklist,
        usage=None,
        archive=backend.archive,
        clock=clock,
        modules=[RosterModule, MamModule],
    )
    await server.start(listen=False)
    try:
        alice = await online(server, "alice")
        bob = await online(server, "bob")
        for i in range(5):
            clock.advance(1)
            bob.send(f"<message to='alice@{A}' type='chat'><body>m{i}</body></message>")
            delivered = await alice.wait_for("message", timeout=10)
            stanza_id = delivered.find("stanza-id", NS_SID)
            assert stanza_id is not None and stanza_id.get("by") == f"alice@{A}"
        alice.send(
            "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='a'>"
            "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>"
            "</query></iq>"
        )
        got = await answer(alice, "q1")
        bodies = []
        for el in got[:-1]:
            result = el.find("result", NS_MAM)  # type: ignore[attr-defined]
            bodies.append(result.find("forwarded").find("message").find_text("body"))
        assert bodies == ["m3", "m4"]
        fin = got[-1].find("fin", NS_MAM)  # type: ignore[attr-defined]
        assert fin is not None and fin.get("complete") is None
        assert fin.find("set").find_text("count") == "5"
        with session_factory() as session:
            rows = session.scalar(select(func.count()).select_from(XmppArchivedMessage))
        assert rows == 10  # alice's and bob's copies
        # preferences are stored and survive a new engine
        alice.send("<iq type='set' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>")
        await answer(alice, "p1")
        assert (await backend.archive.get_prefs(A, "alice")) == ArchivePrefs("never")
    finally:
        await server.stop()
        await backend.close()


async def test_retention_deletes_what_the_plan_no_longer_keeps(
    session_factory: sessionmaker[Session], clock: FrozenClock, services: tuple[str, str]
) -> None:
    backend = new_backend(session_factory, clock)
    await backend.start()
    try:
        old = [message(clock, n) for n in range(5)]
        await backend.archive.append(old)
        other = [message(clock, n, domain="b.example") for n in range(3)]
        await backend.archive.append(other)
        clock.advance(timedelta(days=20))
        recent = [message(clock, 100 + n) for n in range(2)]
        await backend.archive.append(recent)
        assert expire_archives(session_factory, clock, batch=2) == 0  # 20 days: all kept
        clock.advance(timedelta(days=11))  # the first five are now 31 days old
        assert expire_archives(session_factory, clock, batch=2) == 5  # in batches of 2
        assert expire_archives(session_factory, clock, batch=2) == 0  # idempotent
        page = await backend.archive.query(A, "alice", ArchiveFilter())
        assert [m.id for m in page.messages] == ["id0100", "id0101"]
        # b.example's plan keeps messages for ever
        assert (await backend.archive.query("b.example", "alice", ArchiveFilter())).count == 3
        # a plan change that shortens the history applies at the next run
        with session_factory() as session:
            service = session.scalars(
                select(HostedService).where(HostedService.domain == "b.example")
            ).one()
            service.archive_days = 7
            session.commit()
        assert expire_archives(session_factory, clock) == 3
    finally:
        await backend.close()


def test_default_plans_keep_30_to_365_days() -> None:
    from imhost.catalog.service import _default_plans

    days = sorted(p["version"]["limits"]["archive_days"] for p in _default_plans("EUR"))
    assert days == [30, 90, 365]


def test_staff_set_the_days_kept_within_bounds(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    from imhost.hosting import service as hosting
    from imhost.kit.errors import InvalidInput

    with session_factory() as session:
        service = make_service(session, clock, domain=A)
        hosting.set_limits(session, clock, service, {"archive_days": 7})
        assert service.archive_days == 7
        hosting.set_limits(session, clock, service, {"archive_days": None})
        assert service.archive_days is None
        for bad in (0, 40_000):
            with pytest.raises(InvalidInput, match="archive_days"):
                hosting.set_limits(session, clock, service, {"archive_days": bad})
