"""The database-backed ports: tenant isolation, caches, runtime changes, throttling, usage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.models import AuditEvent
from imhost.catalog.models import PlanLimits
from imhost.config import SecuritySettings
from imhost.hosting import service as hosting
from imhost.hosting.dataplane import storage as dataplane_storage
from imhost.hosting.models import HostedService, XmppAccount, XmppOfflineMessage, XmppPrivateXml
from imhost.hosting.ports import DbBackend, DbPrivateStore
from imhost.kit.clock import FrozenClock
from imhost.kit.scram import ScramHash, verify_plain
from imhost.metering.models import UsageRecord as MeteredUsage
from imhost.xmpp.ports import AuthAttempt, RosterItem, StorageFull, UsageRecord, VirtualHost

from .factories import ITERATIONS, PASSWORD, SECURITY, make_account, make_service

pytestmark = pytest.mark.anyio


@dataclass
class RecordingListener:
    changed: list[VirtualHost] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    disabled: list[tuple[str, str, str]] = field(default_factory=list)

    def on_host_changed(self, host: VirtualHost) -> None:
        self.changed.append(host)

    def on_host_removed(self, domain: str) -> None:
        self.removed.append(domain)

    def on_account_disabled(self, domain: str, localpart: str, reason: str) -> None:
        self.disabled.append((domain, localpart, reason))


@dataclass
class Setup:
    factory: sessionmaker[Session]
    clock: FrozenClock
    backend: DbBackend
    listener: RecordingListener
    a: HostedService
    b: HostedService


@pytest.fixture
async def setup(session_factory: sessionmaker[Session], clock: FrozenClock) -> AsyncIterator[Setup]:
    security = SecuritySettings(lockout_threshold=3)
    # Logins read their own account and states here (the path of an account not read at
    # start); the bulk reads are tested with _restarted below.
    backend = DbBackend(
        session_factory, clock, security, host_refresh_seconds=3600, bulk_reads=False
    )
    with session_factory() as session:
        a = make_service(session, clock, domain="a.example")
        b = make_service(session, clock, domain="b.example")
        for service in (a, b):
            make_account(session, clock, service, "alice")
        make_account(session, clock, a, "bob", password=PASSWORD[::-1])
        session.commit()
    await backend.start()
    listener = RecordingListener()
    backend.directory.add_listener(listener)
    yield Setup(session_factory, clock, backend, listener, a, b)
    await backend.close()


async def test_hosts_are_loaded_from_the_database(setup: Setup) -> None:
    hosts = {h.domain: h for h in await setup.backend.directory.list_hosts()}
    assert set(hosts) == {"a.example", "b.example"}
    assert hosts["a.example"].service_id == setup.a.id
    assert await setup.backend.directory.get_host("nowhere.example") is None


async def test_credentials_are_those_of_the_account_on_that_host_only(setup: Setup) -> None:
    backend = setup.backend
    creds_a = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA256)
    creds_b = await backend.auth.get_credentials("b.example", "alice", ScramHash.SHA256)
    assert creds_a is not None and creds_b is not None
    assert creds_a.salt != creds_b.salt
    assert verify_plain(PASSWORD, creds_a, ScramHash.SHA256)
    assert await backend.auth.get_credentials("b.example", "bob", ScramHash.SHA1) is None
    assert not await backend.auth.account_exists("b.example", "bob")
    assert await backend.auth.account_exists("a.example", "bob")
    assert await backend.auth.get_credentials("c.example", "alice", ScramHash.SHA1) is None


async def test_one_host_cannot_see_another_hosts_storage(setup: Setup) -> None:
    backend = setup.backend
    version = await backend.roster.set_item(
        "a.example", "alice", RosterItem(jid="bob@a.example", name="Bob", subscription="both")
    )
    assert version == "1"
    await backend.blocklist.block("a.example", "alice", ["spam@x.example"])
    await backend.vcards.set_vcard("a.example", "alice", "<vCard xmlns='vcard-temp'/>")
    private = DbPrivateStore(backend.storage)
    await private.set_private("a.example", "alice", [("storage:bookmarks", "<storage/>")])
    await backend.storage.push("a.example", "alice", "<message/>", setup.clock.now(), 10)
    await backend.roster.set_pending_in("a.example", "alice", "eve@b.example", "<presence/>")

    assert await backend.roster.get_roster("b.example", "alice") == ("0", [])
    assert await backend.blocklist.get_blocklist("b.example", "alice") == set()
    assert await backend.vcards.get_vcard("b.example", "alice") is None
    assert await private.get_private("b.example", "alice", "storage:bookmarks") is None
    assert await backend.storage.pop_all("b.example", "alice") == []
    assert await backend.roster.get_pending_in("b.example", "alice") == {}
    # ... and writing through another host's name does not reach the first host's data.
    await backend.roster.set_item("b.example", "alice", RosterItem(jid="mallory@b.example"))
    _, items = await backend.roster.get_roster("a.example", "alice")
    assert [i.jid for i in items] == ["bob@a.example"]
    assert await backend.blocklist.get_blocklist("a.example", "alice") == {"spam@x.example"}
    assert await backend.storage.count("a.example", "alice") == 1


async def test_roster_versions_grow_with_each_change(setup: Setup) -> None:
    backend = setup.backend
    item = RosterItem(jid="bob@a.example", groups=("Friends", "Work"), ask=True)
    v1 = await backend.roster.set_item("a.example", "alice", item)
    v2 = await backend.roster.set_item("a.example", "alice", RosterItem(jid="carol@a.example"))
    v3 = await backend.roster.remove_item("a.example", "alice", "nobody@a.example")
    v4 = await backend.roster.remove_item("a.example", "alice", "carol@a.example")
    assert (v1, v2, v3, v4) == ("1", "2", "2", "3")
    version, items = await backend.roster.get_roster("a.example", "alice")
    assert version == "3" and items == [item]


async def test_offline_storage_keeps_order_and_limit(setup: Setup) -> None:
    backend, clock = setup.backend, setup.clock
    for n in range(3):
        stored = await backend.storage.push(
            "a.example", "alice", f"<message id='{n}'/>", clock.now(), 3
        )
        assert stored
        clock.advance(timedelta(seconds=1))
    assert not await backend.storage.push("a.example", "alice", "<message id='3'/>", clock.now(), 3)
    assert await backend.storage.bytes_used("a.example") == 3 * len("<message id='0'/>")
    messages = await backend.storage.pop_all("a.example", "alice")
    assert [m.stanza for m in messages] == [f"<message id='{n}'/>" for n in range(3)]
    assert messages[0].stored_at < messages[2].stored_at
    assert await backend.storage.pop_all("a.example", "alice") == []


async def test_blocklist_adds_once_and_unblocks_some_or_all(setup: Setup) -> None:
    backend = setup.backend
    await backend.blocklist.block("a.example", "alice", ["x@y.example", "z.example", "x@y.example"])
    await backend.blocklist.block("a.example", "alice", ["x@y.example"])
    assert await backend.blocklist.get_blocklist("a.example", "alice") == {
        "x@y.example",
        "z.example",
    }
    await backend.blocklist.unblock("a.example", "alice", ["z.example"])
    assert await backend.blocklist.get_blocklist("a.example", "alice") == {"x@y.example"}
    await backend.blocklist.unblock("a.example", "alice", None)
    assert await backend.blocklist.get_blocklist("a.example", "alice") == set()


async def test_suspension_reaches_the_listener_after_commit_only(setup: Setup) -> None:
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.suspend_service(session, setup.clock, service, "Unpaid invoice INV-7")
        session.flush()
        assert setup.listener.changed == []
        session.commit()
    [host] = setup.listener.changed
    assert host.domain == "a.example" and not host.active
    assert host.status_reason == "Unpaid invoice INV-7"
    current = await setup.backend.directory.get_host("a.example")
    assert current is not None and not current.active
    assert await setup.backend.auth.account_disabled("a.example", "alice") == "Unpaid invoice INV-7"


async def test_a_rolled_back_change_never_reaches_the_engine(setup: Setup) -> None:
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.suspend_service(session, setup.clock, service, "mistake")
        session.rollback()
    assert setup.listener.changed == []
    host = await setup.backend.directory.get_host("a.example")
    assert host is not None and host.active


async def test_a_new_service_and_a_removed_one_take_effect_at_once(setup: Setup) -> None:
    with setup.factory() as session:
        make_service(session, setup.clock, domain="new.example")
        hosting.remove_service(session, setup.clock, hosting.get_service(session, setup.b.id))
        session.commit()
    assert [h.domain for h in setup.listener.changed] == ["new.example"]
    assert setup.listener.removed == ["b.example"]
    assert await setup.backend.directory.get_host("b.example") is None
    assert await setup.backend.auth.get_credentials("b.example", "alice", ScramHash.SHA1) is None


async def test_disabling_an_account_closes_its_sessions_and_refuses_logins(setup: Setup) -> None:
    backend = setup.backend
    assert await backend.auth.account_disabled("a.example", "alice") is None  # now cached
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        account = hosting.get_account(session, service, "alice")
        hosting.disable_account(session, setup.clock, service, account, "left the company")
        session.commit()
    assert setup.listener.disabled == [("a.example", "alice", "left the company")]
    assert await backend.auth.account_disabled("a.example", "alice") == "left the company"


async def test_a_password_reset_replaces_cached_credentials(setup: Setup) -> None:
    backend = setup.backend
    old = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA256)
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        account = hosting.get_account(session, service, "alice")
        new_password = hosting.reset_password(
            session,
            setup.clock,
            service,
            account,
            password=None,
            security=SECURITY,
            iterations=ITERATIONS,
        )
        session.commit()
    assert new_password is not None
    new = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA256)
    assert new is not None and old is not None and new.salt != old.salt
    assert verify_plain(new_password, new, ScramHash.SHA256)
    assert setup.listener.disabled[-1][:2] == ("a.example", "alice")


async def _flush_by_hand_only(backend: DbBackend) -> None:
    """Stop the backend's 1 s background batch (a busy machine could run it in the middle of
    a test that checks what is not written yet); the test calls ``flush_batches`` itself."""
    task, backend._task = backend._task, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_failed_logins_lock_the_account_and_are_audited_in_a_batch(setup: Setup) -> None:
    backend = setup.backend
    await _flush_by_hand_only(backend)
    attempt = AuthAttempt("a.example", "alice", "192.0.2.7", False, "SCRAM-SHA-256")
    admitted = []
    for _ in range(4):
        admission = await backend.auth.admit_auth("a.example", "alice", "192.0.2.7")
        admitted.append(admission.allowed)
        if admission.allowed:
            await backend.auth.report_auth(attempt)
    assert admitted == [True, True, True, False]  # lockout_threshold=3 per account and address
    # The pair is locked; the account from another address, or another account, is not.
    assert (await backend.auth.admit_auth("a.example", "alice", "198.51.100.1")).allowed
    assert (await backend.auth.admit_auth("a.example", "bob", "192.0.2.7")).allowed
    setup.clock.advance(timedelta(minutes=2))
    assert (await backend.auth.admit_auth("a.example", "alice", "192.0.2.7")).allowed
    with setup.factory() as session:
        count = select(func.count()).select_from(AuditEvent)
        assert session.scalar(count.where(AuditEvent.action == "xmpp.login_failed")) == 0
    await backend.auth.flush_batches()
    with setup.factory() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "xmpp.login_failed")
        ).all()
    assert len(rows) == 3
    assert rows[0].organization_id == setup.a.organization_id
    assert rows[0].target_label == "alice@a.example" and rows[0].address == "192.0.2.7"


async def test_parallel_sasl_attempts_never_pass_more_than_the_threshold(setup: Setup) -> None:
    """Twelve connections guessing at once from one address: three reach the password."""
    backend = setup.backend
    admissions = await asyncio.gather(
        *(backend.auth.admit_auth("a.example", "alice", "203.0.113.5") for _ in range(12))
    )
    assert [a.allowed for a in admissions].count(True) == 3


async def test_parallel_sasl_attempts_from_many_addresses_stop_at_the_account_cap(
    setup: Setup,
) -> None:
    backend = setup.backend
    admissions = await asyncio.gather(
        *(backend.auth.admit_auth("a.example", "alice", f"203.0.113.{n}") for n in range(1, 31))
    )
    assert [a.allowed for a in admissions].count(True) == 10  # account_failure_threshold


async def test_strangers_cannot_lock_an_xmpp_user_out_of_her_own_address(setup: Setup) -> None:
    backend = setup.backend
    assert (await backend.auth.admit_auth("a.example", "alice", "192.0.2.10")).allowed
    await backend.auth.report_auth(AuthAttempt("a.example", "alice", "192.0.2.10", True, "PLAIN"))
    for n in range(1, 31):
        await backend.auth.admit_auth("a.example", "alice", f"203.0.113.{n}")
    assert not (await backend.auth.admit_auth("a.example", "alice", "198.51.100.1")).allowed
    assert (await backend.auth.admit_auth("a.example", "alice", "192.0.2.10")).allowed


async def test_the_delay_grows_with_the_failures_as_on_the_web(setup: Setup) -> None:
    backend = setup.backend
    backend.auth.security = SecuritySettings(lockout_threshold=6)
    delays = [
        (await backend.auth.admit_auth("a.example", "alice", "203.0.113.9")).delay_seconds
        for _ in range(6)
    ]
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]


async def test_a_successful_login_is_recorded_on_the_account(setup: Setup) -> None:
    backend = setup.backend
    await backend.auth.report_auth(AuthAttempt("a.example", "alice", "", True, "PLAIN"))
    await backend.auth.report_client_version("a.example", "alice", "Conversations 2.16 (Android)")
    await backend.auth.flush_batches()
    with setup.factory() as session:
        account = hosting.get_account(session, hosting.get_service(session, setup.a.id), "alice")
        assert account.last_login_at == setup.clock.now()
        assert account.client_version == "Conversations 2.16 (Android)"


async def test_in_band_password_change_follows_the_policy(setup: Setup) -> None:
    backend = setup.backend
    with pytest.raises(ValueError, match="at least 12"):
        await backend.auth.set_password("a.example", "alice", "short")
    await backend.auth.set_password("a.example", "alice", "quiet-lantern-meadow-5521")
    creds = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA1)
    assert creds is not None and verify_plain("quiet-lantern-meadow-5521", creds, ScramHash.SHA1)
    assert setup.listener.disabled == []  # the changer's own session stays


async def test_in_band_registration_only_where_allowed(setup: Setup) -> None:
    backend = setup.backend
    with pytest.raises(ValueError, match="does not allow"):
        await backend.auth.register_account("a.example", "newbie", PASSWORD)
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.set_limits(session, setup.clock, service, {"registration_allowed": True})
        session.commit()
    await backend.auth.register_account("a.example", "newbie", PASSWORD)
    assert await backend.auth.account_exists("a.example", "newbie")
    assert await backend.auth.count_accounts("a.example") == 3
    with pytest.raises(ValueError, match="already exists"):
        await backend.auth.register_account("a.example", "newbie", PASSWORD)


async def test_usage_lands_in_metering_once_even_if_flushed_twice(setup: Setup) -> None:
    bucket = setup.clock.now().replace(second=0, microsecond=0)
    records = [
        UsageRecord("a.example", "messages", bucket, 12, "node1:a.example:messages:1"),
        UsageRecord("b.example", "bytes_in", bucket, 3400, "node1:b.example:bytes_in:1"),
        UsageRecord("gone.example", "messages", bucket, 5, "node1:gone.example:messages:1"),
    ]
    await setup.backend.usage.record(records)
    await setup.backend.usage.record(records)
    with setup.factory() as session:
        rows = session.scalars(select(MeteredUsage).order_by(MeteredUsage.metric)).all()
    assert [(r.metric, int(r.quantity)) for r in rows] == [("bytes_in", 3400), ("messages", 12)]
    by_metric = {r.metric: r for r in rows}
    assert by_metric["messages"].organization_id == setup.a.organization_id
    assert by_metric["messages"].service_id == setup.a.id
    assert by_metric["bytes_in"].organization_id == setup.b.organization_id
    assert by_metric["messages"].idempotency_key == "node1:a.example:messages:1"


async def test_usage_of_a_removed_host_still_reaches_its_organization(setup: Setup) -> None:
    with setup.factory() as session:
        hosting.remove_service(session, setup.clock, hosting.get_service(session, setup.b.id))
        session.commit()
    bucket = setup.clock.now().replace(second=0, microsecond=0)
    await setup.backend.usage.record([UsageRecord("b.example", "messages", bucket, 2, "k-b-1")])
    with setup.factory() as session:
        row = session.scalars(select(MeteredUsage)).one()
    assert row.organization_id == setup.b.organization_id


async def test_changes_committed_by_another_process_arrive_with_the_refresh(
    setup: Setup, engine: Engine
) -> None:
    elsewhere = sessionmaker(bind=engine)  # no change hub: like the CLI in another process
    setup.clock.advance(timedelta(seconds=30))
    with elsewhere() as session:
        hosting.suspend_service(session, setup.clock, hosting.get_service(session, setup.b.id), "x")
        make_service(session, setup.clock, domain="late.example")
        service = hosting.get_service(session, setup.a.id)
        account = hosting.get_account(session, service, "bob")
        hosting.disable_account(session, setup.clock, service, account, "fired")
        session.commit()
    assert setup.listener.changed == [] and setup.listener.disabled == []
    await setup.backend.directory.refresh()
    assert {h.domain: h.active for h in setup.listener.changed} == {
        "b.example": False,
        "late.example": True,
    }
    assert setup.listener.disabled == [("a.example", "bob", "fired")]
    assert await setup.backend.auth.account_disabled("a.example", "bob") == "fired"


async def test_a_change_committed_on_another_thread_reaches_the_listener_on_the_loop(
    setup: Setup,
) -> None:
    import asyncio
    import threading

    loop_thread = threading.get_ident()
    calls: list[int] = []
    setup.listener.on_host_changed = lambda host: calls.append(threading.get_ident())  # type: ignore[method-assign]

    def suspend_in_a_worker_thread() -> None:  # like a web request in the thread pool
        with setup.factory() as session:
            service = hosting.get_service(session, setup.a.id)
            hosting.suspend_service(session, setup.clock, service, "from a request")
            session.commit()

    await asyncio.to_thread(suspend_in_a_worker_thread)
    for _ in range(20):
        if calls:
            break
        await asyncio.sleep(0.01)
    assert calls == [loop_thread]
    host = await setup.backend.directory.get_host("a.example")
    assert host is not None and host.status_reason == "from a request"


async def test_expired_cache_entries_are_forgotten(setup: Setup) -> None:
    backend = setup.backend
    backend.auth.credential_ttl = backend.auth.negative_ttl = 0.0
    await backend.auth.account_exists("a.example", "alice")
    await backend.auth.account_exists("a.example", "nobody")
    backend.auth.prune()
    assert backend.auth._accounts == {}
    assert await backend.auth.account_exists("a.example", "alice")  # read again from the database


async def test_a_batch_the_database_refuses_is_retried_at_the_next_flush(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from imhost.hosting import ports

    backend = setup.backend
    calls: list[int] = []

    def busy(*args: object) -> None:
        calls.append(1)
        raise OperationalError("UPDATE xmpp_accounts", {}, Exception("database is locked"))

    await backend.auth.report_auth(AuthAttempt("a.example", "alice", "", True, "PLAIN"))
    monkeypatch.setattr(hosting, "record_logins", busy)
    await backend.auth.flush_batches()
    assert len(calls) == ports.DB_ATTEMPTS  # tried again before giving up for now
    monkeypatch.undo()
    await backend.auth.flush_batches()
    with setup.factory() as session:
        account = hosting.get_account(session, hosting.get_service(session, setup.a.id), "alice")
        assert account.last_login_at == setup.clock.now()


async def test_a_refresh_never_undoes_a_change_committed_while_it_read(setup: Setup) -> None:
    backend = setup.backend
    original = backend.directory._read_hosts
    commits: list[int] = []

    def read_then_commit(session: Session) -> dict[str, object]:
        snapshot = original(session)
        if not commits:  # a request commits a suspension while the refresh is reading
            commits.append(1)
            with setup.factory() as other:
                service = hosting.get_service(other, setup.a.id)
                hosting.suspend_service(other, setup.clock, service, "during refresh")
                other.commit()
        return snapshot  # type: ignore[return-value]

    backend.directory._read_hosts = read_then_commit  # type: ignore[method-assign,assignment]
    await backend.directory.refresh()
    host = await backend.directory.get_host("a.example")
    assert host is not None and not host.active
    assert [h.active for h in setup.listener.changed] == [False]


async def test_credentials_read_while_a_reset_commits_are_not_cached(setup: Setup) -> None:
    backend = setup.backend
    original = backend.auth._read_accounts
    resets: list[str] = []

    def read_then_reset(session: Session, wanted: object) -> object:
        entry = original(session, wanted)  # type: ignore[arg-type]
        if not resets:  # the administrator resets the password while the login reads
            with setup.factory() as other:
                service = hosting.get_service(other, setup.a.id)
                account = hosting.get_account(other, service, "alice")
                new = hosting.reset_password(
                    other,
                    setup.clock,
                    service,
                    account,
                    password=None,
                    security=SECURITY,
                    iterations=ITERATIONS,
                )
                other.commit()
            assert new is not None
            resets.append(new)
        return entry

    backend.auth._read_accounts = read_then_reset  # type: ignore[method-assign,assignment]
    stale = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA256)
    assert stale is not None and verify_plain(PASSWORD, stale, ScramHash.SHA256)  # that read
    current = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA256)
    assert current is not None and verify_plain(resets[0], current, ScramHash.SHA256)


# -- the storage limit (HostLimits.max_storage_bytes) ------------------------------------------


def stored_in_database(setup: Setup, service_id: str) -> int:
    """What the database holds (offline + private bytes), counted the slow way."""
    with setup.factory() as session:
        offline = session.scalar(
            select(func.coalesce(func.sum(XmppOfflineMessage.size), 0)).where(
                XmppOfflineMessage.service_id == service_id
            )
        )
        private = session.scalar(
            select(func.coalesce(func.sum(XmppPrivateXml.size), 0)).where(
                XmppPrivateXml.service_id == service_id
            )
        )
        return int(offline or 0) + int(private or 0)


def xml_of(n: int) -> str:
    """An element of exactly ``n`` bytes (n >= 7)."""
    return "<x>" + "y" * (n - 7) + "</x>"


async def test_storage_past_the_hosts_limit_is_refused_and_frees_on_delivery(setup: Setup) -> None:
    backend, now = setup.backend, setup.clock.now()
    private = DbPrivateStore(backend.storage)
    await private.set_private("a.example", "alice", [("k1", xml_of(600))], 1000)
    with pytest.raises(StorageFull, match=r"storage of a\.example is full"):
        await backend.storage.push("a.example", "bob", xml_of(401), now, 10, 1000)
    assert await backend.storage.push("a.example", "bob", xml_of(300), now, 10, 1000)
    assert backend.storage.stored_bytes("a.example") == 900 == stored_in_database(setup, setup.a.id)
    with pytest.raises(StorageFull):
        await private.set_private("a.example", "alice", [("k2", xml_of(101))], 1000)
    assert await private.get_private("a.example", "alice", "k2") is None
    # Same host name on another service: its own storage.
    await private.set_private("b.example", "alice", [("k2", xml_of(1000))], 1000)
    # Shrinking passes at the limit; delivering offline messages frees their bytes.
    await private.set_private("a.example", "alice", [("k1", xml_of(7))], 1000)
    assert len(await backend.storage.pop_all("a.example", "bob")) == 1
    assert backend.storage.stored_bytes("a.example") == 7 == stored_in_database(setup, setup.a.id)
    await private.set_private(
        "a.example", "alice", [("k1", xml_of(500)), ("k2", xml_of(500))], 1000
    )
    assert (
        stored_in_database(setup, setup.a.id) == 1000 == backend.storage.stored_bytes("a.example")
    )


async def test_a_set_over_the_limit_stores_none_of_its_elements(setup: Setup) -> None:
    private = DbPrivateStore(setup.backend.storage)
    with pytest.raises(StorageFull):
        await private.set_private(
            "a.example", "alice", [("k1", xml_of(600)), ("k2", xml_of(600))], 1000
        )
    assert await private.get_private("a.example", "alice", "k1") is None
    assert stored_in_database(setup, setup.a.id) == 0
    assert setup.backend.storage.stored_bytes("a.example") == 0


async def test_concurrent_writes_cannot_both_take_the_last_bytes(setup: Setup) -> None:
    backend, now = setup.backend, setup.clock.now()
    results = await asyncio.gather(
        *(
            backend.storage.push("a.example", user, xml_of(600), now, 10, 1000)
            for user in ("alice", "bob")
        ),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["StorageFull", "bool"]
    assert stored_in_database(setup, setup.a.id) == 600 == backend.storage.stored_bytes("a.example")


async def test_the_counter_is_counted_from_the_database_and_again_when_old(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, now = setup.backend, setup.clock.now()

    def written_elsewhere(size: int) -> None:
        """Another node (or process) stores bytes this backend does not see being written."""
        with setup.factory() as session:
            account = session.scalar(
                select(XmppAccount).where(
                    XmppAccount.service_id == setup.a.id, XmppAccount.localpart == "alice"
                )
            )
            assert account is not None
            session.add(
                XmppOfflineMessage(
                    account_id=account.id,
                    service_id=setup.a.id,
                    stanza=xml_of(size),
                    size=size,
                    stored_at=now,
                )
            )
            session.commit()

    written_elsewhere(700)
    # nothing counted before a limited write
    assert backend.storage.stored_bytes("a.example") is None
    with pytest.raises(StorageFull):  # the first limited write counts what is there
        await backend.storage.push("a.example", "bob", xml_of(301), now, 10, 1000)
    assert backend.storage.stored_bytes("a.example") == 700
    written_elsewhere(200)  # unseen until the counter is recounted (bounded staleness)
    assert await backend.storage.push("a.example", "bob", xml_of(100), now, 10, 1000)
    assert backend.storage.stored_bytes("a.example") == 800
    monkeypatch.setattr(dataplane_storage, "STORAGE_RECOUNT_SECONDS", 0.0)
    with pytest.raises(StorageFull):
        await backend.storage.push("a.example", "bob", xml_of(1), now, 10, 1000)
    assert (
        backend.storage.stored_bytes("a.example") == 1000 == stored_in_database(setup, setup.a.id)
    )


async def test_deleting_an_account_frees_its_storage_at_once(setup: Setup) -> None:
    backend, now = setup.backend, setup.clock.now()
    assert await backend.storage.push("a.example", "bob", xml_of(900), now, 10, 1000)
    with pytest.raises(StorageFull):
        await DbPrivateStore(backend.storage).set_private(
            "a.example", "alice", [("k", xml_of(200))], 1000
        )
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.delete_account(
            session, setup.clock, service, hosting.get_account(session, service, "bob")
        )
        session.commit()
    await DbPrivateStore(backend.storage).set_private(
        "a.example", "alice", [("k", xml_of(200))], 1000
    )
    assert backend.storage.stored_bytes("a.example") == 200 == stored_in_database(setup, setup.a.id)


async def test_the_plans_storage_reaches_the_engine_at_once_in_decimal_megabytes(
    setup: Setup,
) -> None:
    host = await setup.backend.directory.get_host("a.example")
    assert host is not None and host.limits.max_storage_bytes is None
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.change_plan_limits(session, setup.clock, service, PlanLimits(storage_mb=5))
        session.commit()
    host = await setup.backend.directory.get_host("a.example")
    assert host is not None and host.limits.max_storage_bytes == 5_000_000
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.set_limits(session, setup.clock, service, {"storage_mb": None})
        session.commit()
    host = await setup.backend.directory.get_host("a.example")
    assert host is not None and host.limits.max_storage_bytes is None


async def test_login_batches_are_written_while_other_connections_write(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9: under load the batch of logins (a read, then writes) failed with "database
    is locked" on SQLite whenever another connection committed between its read and its
    first write, four times over, and was logged as an error."""
    import threading

    from imhost.accounts.throttle import LoginThrottleService

    stop = threading.Event()

    def other_writer() -> None:
        while not stop.is_set():
            with setup.factory() as session:
                throttle = LoginThrottleService(session, setup.clock, SecuritySettings())
                throttle.fail("address:198.51.100.1")
                session.commit()

    writer = threading.Thread(target=other_writer)
    writer.start()
    try:
        for _ in range(30):
            await setup.backend.auth.report_auth(
                AuthAttempt("a.example", "alice", "", True, "PLAIN")
            )
            await setup.backend.auth.report_client_version("a.example", "alice", "Dino 0.4")
            await setup.backend.auth.flush_batches()
    finally:
        stop.set()
        writer.join()
    failures = [r for r in caplog.records if "auth events failed" in r.getMessage()]
    assert not failures, failures[0].exc_text


async def test_many_accounts_signing_in_at_once_from_one_address_are_all_admitted(
    setup: Setup,
) -> None:
    """A NAT after a network blip: more logins in flight from one address than its failure
    threshold (20). In-flight attempts are not failures; only wrong passwords count."""
    backend = setup.backend
    admissions = await asyncio.gather(
        *(backend.auth.admit_auth("a.example", f"u{n}", "198.51.100.7") for n in range(30))
    )
    assert all(a.allowed for a in admissions)
    for n in range(backend.auth.security.address_failure_threshold):
        await backend.auth.report_auth(
            AuthAttempt("a.example", f"u{n}", "198.51.100.8", False, "PLAIN")
        )
    assert not (await backend.auth.admit_auth("a.example", "u29", "198.51.100.8")).allowed


# -- logins without a write (issue 16) ------------------------------------------------------


@dataclass
class WriteWatch:
    """Statements that write, or open a write transaction, on an engine."""

    statements: list[str] = field(default_factory=list)

    def __call__(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        head = statement.lstrip().upper()
        if head.startswith(("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")) or (
            head.startswith("SELECT") and "FOR UPDATE" in head
        ):
            self.statements.append(statement)


@pytest.fixture
def writes(engine: Engine) -> Iterator[WriteWatch]:
    from sqlalchemy import event

    watch = WriteWatch()
    event.listen(engine, "before_cursor_execute", watch)
    yield watch
    event.remove(engine, "before_cursor_execute", watch)


async def _login(backend: DbBackend, localpart: str, address: str, right: bool = True) -> bool:
    """What a SASL exchange asks of the port: admit, then report the outcome."""
    admission = await backend.auth.admit_auth("a.example", localpart, address)
    if admission.allowed:
        await backend.auth.report_auth(
            AuthAttempt("a.example", localpart, address, right, "SCRAM-SHA-1")
        )
    return admission.allowed


async def test_a_right_login_writes_nothing_until_the_batch(
    setup: Setup, writes: WriteWatch
) -> None:
    assert await _login(setup.backend, "alice", "192.0.2.20")
    assert await _login(setup.backend, "alice", "192.0.2.20")  # from the cache this time
    assert writes.statements == []
    await setup.backend.auth.flush_batches()
    assert writes.statements  # last login and the address's trust, in one batch
    with setup.factory() as session:
        from imhost.accounts.models import LoginThrottle

        row = session.scalars(
            select(LoginThrottle).where(LoginThrottle.key.startswith("pair:xmpp:alice@"))
        ).one()
        assert row.failures == 0 and row.trusted_until is not None


async def test_a_burst_of_right_logins_writes_nothing(setup: Setup, writes: WriteWatch) -> None:
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        for n in range(20):
            make_account(session, setup.clock, service, f"u{n}")
        session.commit()
    # Its own backend whose batch never comes during the test: on a slow machine the burst
    # outlasts a second, and the batch's writes are not the login path's.
    backend = DbBackend(
        setup.factory,
        setup.clock,
        SecuritySettings(lockout_threshold=3),
        host_refresh_seconds=3600,
        batch_seconds=3600,
    )
    await backend.start()
    try:
        writes.statements.clear()
        results = await asyncio.gather(
            *(_login(backend, f"u{n}", "198.51.100.30") for n in range(20)),
            *(_login(backend, f"u{n}", "198.51.100.30") for n in range(20)),
        )
        assert all(results)
        assert writes.statements == []
    finally:
        await backend.close()


async def test_storing_trust_does_not_send_logins_through_the_database(
    setup: Setup, writes: WriteWatch
) -> None:
    """While the batch stores the trust of pairs that signed in, more right logins from the
    same addresses are still decided in memory: the batch's statements are its only writes."""
    backend = setup.backend
    assert await _login(backend, "alice", "192.0.2.40")
    flush = asyncio.create_task(backend.auth.flush_batches())
    await asyncio.sleep(0)  # the batch has taken its queue and is writing
    assert await _login(backend, "alice", "192.0.2.40")
    await flush
    throttle_writes = [s for s in writes.statements if "login_throttles" in s]
    # the pair's trust, once (the batch's one upsert); no admission counted in the database
    assert len(throttle_writes) == 1, throttle_writes
    assert throttle_writes[0].startswith("INSERT INTO login_throttles"), throttle_writes
    assert "ON CONFLICT" in throttle_writes[0], throttle_writes


async def test_a_wrong_password_after_right_logins_still_locks_at_the_threshold(
    setup: Setup,
) -> None:
    backend = setup.backend
    assert await _login(backend, "alice", "192.0.2.21")
    await backend.auth.flush_batches()
    # lockout_threshold=3: three wrong answers, then the pair is locked (it was trusted:
    # the trust spares it the account's cap, not its own count).
    assert [await _login(backend, "alice", "192.0.2.21", right=False) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert not (await backend.auth.admit_auth("a.example", "alice", "192.0.2.21")).allowed
    setup.clock.advance(timedelta(minutes=2))
    assert await _login(backend, "alice", "192.0.2.21")


async def test_parallel_wrong_attempts_with_a_warm_cache_never_pass_the_threshold(
    setup: Setup,
) -> None:
    backend = setup.backend
    assert await _login(backend, "bob", "203.0.113.40")  # states cached, nothing held
    results = await asyncio.gather(
        *(_login(backend, "alice", "203.0.113.40", right=False) for _ in range(12))
    )
    assert results.count(True) == 3
    assert not (await backend.auth.admit_auth("a.example", "alice", "203.0.113.40")).allowed


async def test_parallel_wrong_attempts_from_many_addresses_stop_at_the_account_cap(
    setup: Setup,
) -> None:
    backend = setup.backend
    results = await asyncio.gather(
        *(_login(backend, "alice", f"203.0.113.{n}", right=False) for n in range(1, 31))
    )
    assert results.count(True) == 10  # account_failure_threshold


async def test_a_failure_counted_by_another_node_is_seen_within_the_throttle_ttl(
    setup: Setup, engine: Engine
) -> None:
    """A second node (here a session of its own) locks the pair; this node's cached clean
    state lets an attempt in memory only until its ``throttle_ttl`` runs out."""
    from imhost.accounts.throttle import LoginThrottleService, attempt_keys, xmpp_key

    backend = setup.backend
    backend.auth.throttle_ttl = 0.2
    assert await _login(backend, "alice", "192.0.2.22")
    await backend.auth.flush_batches()
    keys = attempt_keys(xmpp_key("alice@a.example"), "192.0.2.22")
    with sessionmaker(bind=engine)() as session:
        throttle = LoginThrottleService(session, setup.clock, SecuritySettings(lockout_threshold=3))
        for _ in range(3):
            throttle.fail(keys.pair or "")
        session.commit()
    await asyncio.sleep(0.3)
    assert not (await backend.auth.admit_auth("a.example", "alice", "192.0.2.22")).allowed


async def test_an_attempt_abandoned_mid_exchange_is_stored_as_a_failure(setup: Setup) -> None:
    from imhost.accounts.models import LoginThrottle
    from imhost.hosting.dataplane import auth as dataplane_auth

    backend = setup.backend
    assert (await backend.auth.admit_auth("a.example", "alice", "192.0.2.23")).allowed
    for tickets in backend.auth._tickets.values():
        for ticket in tickets:
            ticket.started -= dataplane_auth.ABANDONED_SECONDS
    await backend.auth.flush_batches()
    with setup.factory() as session:
        rows = session.scalars(select(LoginThrottle)).all()
    assert {
        r.key: r.failures for r in rows if "192.0.2.23" in r.key or r.key == "xmpp:alice@a.example"
    } == {
        "pair:xmpp:alice@a.example@192.0.2.23": 1,
        "xmpp:alice@a.example": 1,
    }


async def test_a_password_change_through_the_service_replaces_cached_credentials_at_once(
    setup: Setup,
) -> None:
    backend = setup.backend
    assert backend.auth.credential_ttl >= 600  # the cache would keep them for minutes
    old = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA1)
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        account = hosting.get_account(session, service, "alice")
        hosting.change_own_password(
            session, setup.clock, service, account, PASSWORD[::-1], iterations=ITERATIONS
        )
        session.commit()
    new = await backend.auth.get_credentials("a.example", "alice", ScramHash.SHA1)
    assert new is not None and old is not None and new.stored_key != old.stored_key
    assert verify_plain(PASSWORD[::-1], new, ScramHash.SHA1)


async def test_an_account_deleted_by_another_process_is_forgotten_at_the_refresh(
    setup: Setup, engine: Engine
) -> None:
    backend = setup.backend
    assert await backend.auth.account_exists("a.example", "bob")  # cached for minutes
    elsewhere = sessionmaker(bind=engine)  # no change hub: like the CLI in another process
    with elsewhere() as session:
        service = hosting.get_service(session, setup.a.id)
        hosting.delete_account(
            session, setup.clock, service, hosting.get_account(session, service, "bob")
        )
        session.commit()
    assert await backend.auth.account_exists("a.example", "bob")  # not told yet
    await backend.directory.refresh()
    assert not await backend.auth.account_exists("a.example", "bob")
    assert setup.listener.disabled == [("a.example", "bob", "this account was deleted")]


async def test_a_login_from_an_address_trusted_lately_does_not_write_the_trust_again(
    setup: Setup, writes: WriteWatch
) -> None:
    assert await _login(setup.backend, "alice", "192.0.2.24")
    await setup.backend.auth.flush_batches()
    writes.statements.clear()
    setup.clock.advance(timedelta(hours=1))
    assert await _login(setup.backend, "alice", "192.0.2.24")
    await setup.backend.auth.flush_batches()
    assert writes.statements  # the last login
    assert not [s for s in writes.statements if "login_throttles" in s]


async def test_the_batch_keeps_the_latest_login_of_each_account(setup: Setup) -> None:
    first = setup.clock.now()
    with setup.factory() as session:
        hosting.record_logins(
            session,
            {"a.example": setup.a.id},
            [
                ("a.example", "alice", first + timedelta(minutes=5)),
                ("a.example", "alice", first),
                ("a.example", "bob", first),
                ("gone.example", "alice", first),
            ],
        )
        hosting.record_logins(
            session, {"a.example": setup.a.id}, [("a.example", "bob", first - timedelta(days=1))]
        )
        session.commit()
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        assert hosting.get_account(session, service, "alice").last_login_at == first + timedelta(
            minutes=5
        )
        assert hosting.get_account(session, service, "bob").last_login_at == first


async def test_a_plain_login_through_sasl_writes_nothing_and_a_wrong_one_is_counted_at_once(
    setup: Setup, writes: WriteWatch
) -> None:
    from imhost.accounts.models import LoginThrottle
    from imhost.xmpp.core.sasl import SaslExchange, Step

    def exchange() -> SaslExchange:
        return SaslExchange(
            "PLAIN",
            auth=setup.backend.auth,
            domain="a.example",
            address="192.0.2.25",
            secret=b"s" * 32,
            channel_bindings={},
        )

    for _ in range(3):
        outcome = await exchange().start(f"\0alice\0{PASSWORD}".encode())
        assert outcome.step is Step.SUCCESS
    assert writes.statements == []
    outcome = await exchange().start(b"\0alice\0not the password")
    assert outcome.step is Step.FAILURE
    assert writes.statements  # stored at once, not in the batch
    with setup.factory() as session:
        row = session.scalars(
            select(LoginThrottle).where(LoginThrottle.key == "address:192.0.2.25")
        ).one()
    assert row.failures == 1


async def test_a_session_start_reads_its_account_in_one_transaction(
    setup: Setup, engine: Engine
) -> None:
    from sqlalchemy import event

    backend = setup.backend
    assert await backend.auth.account_id("a.example", "alice")  # cached by the login
    begun: list[object] = []

    def count(conn: object) -> None:
        begun.append(conn)

    event.listen(engine, "begin", count)
    try:
        assert await backend.roster.get_roster("a.example", "alice") == ("0", [])
        assert await backend.roster.get_pending_in("a.example", "alice") == {}
        assert await backend.blocklist.get_blocklist("a.example", "alice") == set()
        assert await backend.storage.pop_all("a.example", "alice") == []
    finally:
        event.remove(engine, "begin", count)
    assert len(begun) == 1


async def test_writes_of_this_process_are_never_hidden_by_the_session_start_reads(
    setup: Setup,
) -> None:
    backend = setup.backend
    assert await backend.roster.get_roster("a.example", "alice") == ("0", [])
    version = await backend.roster.set_item("a.example", "alice", RosterItem(jid="bob@a.example"))
    assert await backend.roster.get_roster("a.example", "alice") == (
        version,
        [RosterItem(jid="bob@a.example")],
    )
    await backend.roster.set_pending_in("a.example", "alice", "carol@b.example", "<presence/>")
    assert await backend.roster.get_pending_in("a.example", "alice") == {
        "carol@b.example": "<presence/>"
    }
    await backend.blocklist.block("a.example", "alice", ["spam@b.example"])
    assert await backend.blocklist.get_blocklist("a.example", "alice") == {"spam@b.example"}
    assert await backend.storage.pop_all("a.example", "alice") == []
    stored_at = setup.clock.now()
    assert await backend.storage.push("a.example", "alice", "<message/>", stored_at, 10)
    popped = await backend.storage.pop_all("a.example", "alice")
    assert [m.stanza for m in popped] == ["<message/>"]
    assert await backend.storage.pop_all("a.example", "alice") == []


# -- reads of logins in flight together share a transaction (issue 16, round 2) -------------


@dataclass(eq=False)
class BeginWatch:
    """Transactions begun on an engine."""

    begun: int = 0

    def __call__(self, conn: object) -> None:
        self.begun += 1


@pytest.fixture
def begins(engine: Engine) -> Iterator[BeginWatch]:
    from sqlalchemy import event

    watch = BeginWatch()
    event.listen(engine, "begin", watch)
    yield watch
    event.remove(engine, "begin", watch)


def _more_accounts(setup: Setup, n: int) -> None:
    with setup.factory() as session:
        service = hosting.get_service(session, setup.a.id)
        for i in range(n):
            make_account(session, setup.clock, service, f"u{i}")
        session.commit()


async def test_logins_in_flight_together_read_in_one_transaction(
    setup: Setup, begins: BeginWatch
) -> None:
    """Ten logins of accounts not cached: one read for all their accounts and lockout states
    (one each before), and no write."""
    _more_accounts(setup, 10)
    begins.begun = 0
    results = await asyncio.gather(
        *(_login(setup.backend, f"u{n}", f"198.51.100.{40 + n}") for n in range(10))
    )
    assert all(results)
    assert begins.begun == 1
    credentials = await setup.backend.auth.get_credentials("a.example", "u3", ScramHash.SHA1)
    assert credentials is not None and begins.begun == 1  # cached by the shared read
    assert await setup.backend.auth.get_credentials("a.example", "nobody", ScramHash.SHA1) is None


async def test_a_failing_shared_read_fails_every_login_that_waited_for_it(
    setup: Setup, begins: BeginWatch
) -> None:
    """A database error reaches every caller of the shared read; none waits forever, and the
    next logins read again."""
    _more_accounts(setup, 3)
    auth = setup.backend.auth
    real = auth._read_many

    def broken(session: Session, reads: list[tuple[str, str, bool, tuple[str, ...]]]) -> object:
        raise RuntimeError("database gone")

    auth._reads.read = broken  # type: ignore[assignment]
    outcomes = await asyncio.gather(
        *(auth.admit_auth("a.example", f"u{n}", "192.0.2.60") for n in range(3)),
        return_exceptions=True,
    )
    assert [str(o) for o in outcomes] == ["database gone"] * 3
    auth._reads.read = real
    assert all(
        a.allowed
        for a in await asyncio.gather(
            *(auth.admit_auth("a.example", f"u{n}", "192.0.2.60") for n in range(3))
        )
    )


async def test_sessions_starting_together_read_in_one_transaction(
    setup: Setup, begins: BeginWatch
) -> None:
    _more_accounts(setup, 10)
    backend = setup.backend
    for n in range(10):
        assert await backend.auth.account_id("a.example", f"u{n}")
    await backend.roster.set_item("a.example", "u1", RosterItem(jid="bob@a.example", name="B"))
    await backend.blocklist.block("a.example", "u2", ["spam@b.example"])
    begins.begun = 0
    rosters = await asyncio.gather(
        *(backend.roster.get_roster("a.example", f"u{n}") for n in range(10))
    )
    assert begins.begun == 1
    assert rosters[1][1] == [RosterItem(jid="bob@a.example", name="B")]
    assert [r[1] for r in rosters[2:]] == [[]] * 8
    assert await backend.blocklist.get_blocklist("a.example", "u2") == {"spam@b.example"}
    assert begins.begun == 1  # from the snapshot


async def test_the_shared_session_start_read_reads_what_one_account_s_read_does(
    setup: Setup,
) -> None:
    from imhost.hosting.dataplane.signin import read_account, read_accounts

    backend = setup.backend
    for name in ("alice", "bob"):
        for jid in ("zed@b.example", "amy@b.example"):
            await backend.roster.set_item(
                "a.example", name, RosterItem(jid=jid, subscription="both", groups=("g",))
            )
    await backend.roster.set_pending_in("a.example", "alice", "carol@b.example", "<presence/>")
    await backend.blocklist.block("a.example", "bob", ["spam@b.example", "junk@b.example"])
    await backend.storage.push("a.example", "bob", "<message/>", setup.clock.now(), 10)
    ids = [await backend.auth.account_id("a.example", n) for n in ("alice", "bob")]
    ids = [i for i in ids if i is not None] + ["no-such-account"]
    with setup.factory() as session:
        one_by_one = {i: read_account(session, i) for i in ids}
        together = read_accounts(session, ids)
    assert together == one_by_one
    assert together[ids[1]].offline_waiting and not together[ids[0]].offline_waiting
    assert [item.jid for item in together[ids[0]].roster] == ["amy@b.example", "zed@b.example"]


async def test_accounts_read_together_are_each_their_own_host_s(
    setup: Setup, begins: BeginWatch
) -> None:
    auth = setup.backend.auth
    begins.begun = 0
    ids = await asyncio.gather(
        auth.account_id("a.example", "alice"),
        auth.account_id("b.example", "alice"),
        auth.account_id("a.example", "bob"),
        auth.account_id("b.example", "bob"),
        auth.account_id("c.example", "alice"),
    )
    assert begins.begun == 1
    with setup.factory() as session:
        expected = [
            hosting.get_account(session, hosting.get_service(session, service.id), name).id
            for service, name in ((setup.a, "alice"), (setup.b, "alice"), (setup.a, "bob"))
        ]
    assert ids == [*expected, None, None]


# -- a burst of logins after a restart: accounts and held states read in bulk at start -----


async def _restarted(setup: Setup, **kw: float) -> DbBackend:
    """A second backend on the same database, as after a restart of the engine."""
    backend = DbBackend(
        setup.factory,
        setup.clock,
        SecuritySettings(lockout_threshold=3),
        host_refresh_seconds=3600,
        batch_seconds=3600,
        **kw,  # type: ignore[arg-type]
    )
    await backend.start()
    return backend


async def _sasl_login(backend: DbBackend, localpart: str, address: str) -> bool:
    """What a whole SASL login asks of the port: the credentials, whether the account is
    disabled, the admission and the outcome."""
    credentials = await backend.auth.get_credentials("a.example", localpart, ScramHash.SHA1)
    if credentials is None or await backend.auth.account_disabled("a.example", localpart):
        return False
    return await _login(backend, localpart, address)


async def test_logins_after_a_restart_read_nothing(setup: Setup, begins: BeginWatch) -> None:
    """The accounts of the served hosts and the held brute-force states are read at start,
    in bulk: the first logins of every account then open no transaction at all."""
    _more_accounts(setup, 20)
    begins.begun = 0
    backend = await _restarted(setup)
    try:
        at_start = begins.begun
        assert at_start <= 3  # hosts, the held states with the trusted pairs, the accounts
        results = await asyncio.gather(
            *(_sasl_login(backend, f"u{n}", f"198.51.100.{60 + n}") for n in range(20))
        )
        assert all(results)
        assert begins.begun == at_start
    finally:
        await backend.close()


async def test_accounts_past_the_warm_limit_are_read_at_their_first_login(
    setup: Setup, begins: BeginWatch
) -> None:
    _more_accounts(setup, 4)
    backend = await _restarted(setup)
    try:
        backend.auth.forget_host("a.example")
        assert await backend.auth.warm(limit=2) == 2
        begins.begun = 0
        assert all([await _sasl_login(backend, f"u{n}", "198.51.100.90") for n in range(4)])
        read = begins.begun
        assert 2 <= read <= 4  # at least the two of the six not read at start
        assert all([await _sasl_login(backend, f"u{n}", "198.51.100.90") for n in range(4)])
        assert begins.begun == read  # cached since
    finally:
        await backend.close()


async def test_a_lock_stored_by_another_node_is_seen_by_the_next_held_read(
    setup: Setup, engine: Engine, begins: BeginWatch
) -> None:
    """Another node locks a pair; this node, admitting from its bulk read of held states
    without a read per login, refuses the pair once it read them again (every
    throttle_ttl / 2)."""
    from imhost.accounts.throttle import LoginThrottleService, attempt_keys, xmpp_key

    backend = await _restarted(setup)
    try:
        assert await _login(backend, "alice", "192.0.2.70")
        keys = attempt_keys(xmpp_key("alice@a.example"), "192.0.2.71")
        with sessionmaker(bind=engine)() as session:
            throttle = LoginThrottleService(
                session, setup.clock, SecuritySettings(lockout_threshold=3)
            )
            for _ in range(3):
                throttle.fail(keys.pair or "")
            session.commit()
        await backend.auth.refresh_throttles()
        begins.begun = 0
        assert await _login(backend, "alice", "192.0.2.72")  # another address: admitted
        assert begins.begun == 0  # decided from the held states read in bulk
        # The locked pair is seen in that read: its attempt goes through the database
        # (row-locked, as every attempt with something held against it) and is refused.
        refused = await backend.auth.admit_auth("a.example", "alice", "192.0.2.71")
        assert not refused.allowed and refused.retry_after_seconds > 0
    finally:
        await backend.close()


async def test_held_states_older_than_the_throttle_ttl_are_not_trusted(
    setup: Setup, engine: Engine, begins: BeginWatch
) -> None:
    from imhost.accounts.throttle import LoginThrottleService, attempt_keys, xmpp_key

    backend = await _restarted(setup)
    try:
        backend.auth.throttle_ttl = 0.2
        keys = attempt_keys(xmpp_key("alice@a.example"), "192.0.2.73")
        with sessionmaker(bind=engine)() as session:
            throttle = LoginThrottleService(
                session, setup.clock, SecuritySettings(lockout_threshold=3)
            )
            for _ in range(3):
                throttle.fail(keys.pair or "")
            session.commit()
        await asyncio.sleep(0.3)  # the bulk read (clean then) is too old now
        begins.begun = 0
        assert not (await backend.auth.admit_auth("a.example", "alice", "192.0.2.73")).allowed
        assert begins.begun >= 1  # read its own states
    finally:
        await backend.close()


async def test_a_bulk_read_begun_before_a_failure_here_does_not_clear_it(
    setup: Setup,
) -> None:
    """A failure this node stores while a bulk read runs is not undone by that read (which
    may predate it): the key's state comes from the write, or from a read of its own."""
    backend = await _restarted(setup)
    try:
        auth = backend.auth
        auth.throttle_ttl = 0.3
        refresh = asyncio.create_task(auth.refresh_throttles())
        await asyncio.sleep(0)  # the bulk read has begun
        results = [await _login(backend, "alice", "192.0.2.74", right=False) for _ in range(3)]
        await refresh
        assert results == [True, True, True]
        await asyncio.sleep(0.35)  # the states the failures cached have expired
        assert not (await auth.admit_auth("a.example", "alice", "192.0.2.74")).allowed
    finally:
        await backend.close()


async def test_a_pair_trusted_before_a_restart_is_not_written_again(
    setup: Setup, writes: WriteWatch
) -> None:
    assert await _login(setup.backend, "alice", "192.0.2.75")
    await setup.backend.auth.flush_batches()
    backend = await _restarted(setup)
    try:
        setup.clock.advance(timedelta(hours=1))
        writes.statements.clear()
        assert await _login(backend, "alice", "192.0.2.75")
        await backend.auth.flush_batches()
        assert writes.statements  # the last login
        assert not [s for s in writes.statements if "login_throttles" in s]
    finally:
        await backend.close()


async def test_an_account_disabled_after_the_warm_read_is_refused(setup: Setup) -> None:
    backend = await _restarted(setup)
    try:
        assert await backend.auth.account_disabled("a.example", "bob") is None
        with setup.factory() as session:
            service = hosting.get_service(session, setup.a.id)
            account = hosting.get_account(session, service, "bob")
            hosting.disable_account(session, setup.clock, service, account, "left")
            session.commit()
        assert await backend.auth.account_disabled("a.example", "bob") == "left"
    finally:
        await backend.close()
