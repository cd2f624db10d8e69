"""Hosted services and XMPP accounts: rules, limits, passwords, CSV import, audit."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.models import AuditEvent
from imhost.catalog.models import PlanLimits
from imhost.hosting import changes
from imhost.hosting import service as hosting
from imhost.hosting.models import (
    HostedService,
    XmppAccount,
    XmppOfflineMessage,
    XmppPrivateXml,
    XmppVCard,
)
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.scram import ScramHash, verify_plain
from imhost.xmpp.ports import HostStatus

from .factories import ITERATIONS, PASSWORD, SECURITY, make_account, make_org, make_service


def test_a_new_service_lives_on_the_organization_slug_under_the_base_domain(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    service = hosting.create_service(db, clock, org, base_domain="im.test")
    assert service.domain == f"{org.slug}.im.test"
    assert service.status == "active" and not service.registration_allowed
    assert service.max_stanza_bytes == 256 * 1024


def test_a_domain_is_hosted_once(db: Session, clock: FrozenClock) -> None:
    make_service(db, clock, domain="Chat.Example.com")
    with pytest.raises(Conflict, match=r"chat\.example\.com"):
        make_service(db, clock, domain="chat.example.com")


def test_a_malformed_domain_is_refused(db: Session, clock: FrozenClock) -> None:
    with pytest.raises(InvalidInput):
        make_service(db, clock, domain="bad domain!.com")


def test_plan_limits_are_copied_to_the_service(db: Session, clock: FrozenClock) -> None:
    limits = PlanLimits(
        max_xmpp_accounts=3, max_connections=7, message_rate_per_second=9, message_burst=11
    )
    service = make_service(db, clock, limits=limits)
    host = hosting.virtual_host(service)
    assert host.limits.max_accounts == 3
    assert host.limits.max_connections == 7
    assert host.limits.message_rate == 9.0
    assert host.limits.message_burst == 11
    assert host.limits.max_storage_bytes is None


def test_storage_is_given_to_the_engine_in_decimal_megabytes(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock, limits=PlanLimits(storage_mb=250))
    assert hosting.virtual_host(service).limits.max_storage_bytes == 250_000_000
    hosting.set_limits(db, clock, service, {"storage_mb": 0})
    assert hosting.virtual_host(service).limits.max_storage_bytes == 0


def test_stored_bytes_count_offline_messages_and_private_xml_of_that_service_only(
    db: Session, clock: FrozenClock
) -> None:
    a, b = make_service(db, clock), make_service(db, clock)
    alice, other = make_account(db, clock, a, "alice"), make_account(db, clock, b, "alice")
    db.add(
        XmppOfflineMessage(
            account_id=alice.id, service_id=a.id, stanza="x" * 300, size=300, stored_at=clock.now()
        )
    )
    db.add(XmppPrivateXml(account_id=alice.id, service_id=a.id, key="k", xml="y" * 45, size=45))
    db.add(XmppVCard(account_id=alice.id, xml="v" * 1000))  # vCards do not count
    db.add(XmppPrivateXml(account_id=other.id, service_id=b.id, key="k", xml="z" * 7, size=7))
    db.flush()
    assert hosting.stored_bytes(db, a.id) == 345
    assert hosting.stored_bytes(db, b.id) == 7


def test_accounts_per_service_are_limited_with_a_clear_error(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock, limits=PlanLimits(max_xmpp_accounts=2))
    make_account(db, clock, service, "alice")
    make_account(db, clock, service, "bob")
    with pytest.raises(Conflict, match="already has 2 accounts"):
        make_account(db, clock, service, "carol")
    assert hosting.count_accounts(db, service.id) == 2


def test_usernames_are_prepared_and_unique_per_service(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    account = make_account(db, clock, service, "Alice")
    assert account.localpart == "alice"
    with pytest.raises(Conflict, match="already exists"):
        make_account(db, clock, service, "ALICE")
    with pytest.raises(InvalidInput, match="without '@'"):
        make_account(db, clock, service, "alice@elsewhere.test")
    with pytest.raises(InvalidInput, match="cannot be a username"):
        make_account(db, clock, service, "al ice")
    other = make_service(db, clock)
    assert make_account(db, clock, other, "alice").service_id == other.id


def test_the_password_policy_applies_to_xmpp_passwords(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    with pytest.raises(InvalidInput) as short:
        make_account(db, clock, service, "alice", password="short1")
    assert "at least 12 characters" in short.value.detail
    with pytest.raises(InvalidInput) as common:
        make_account(db, clock, service, "bob", password="password1234")
    assert common.value.extra["problems"]
    with pytest.raises(InvalidInput):
        make_account(db, clock, service, "carolina", password="carolina" + "carolina")


def test_an_organization_policy_stricter_than_the_provider_wins(
    db: Session, clock: FrozenClock
) -> None:
    org = make_org(db, clock)
    org.password_min_length = 30
    service = make_service(db, clock, org)
    with pytest.raises(InvalidInput, match="at least 30 characters"):
        make_account(db, clock, service, "alice", password=PASSWORD)


def test_only_scram_keys_are_stored_and_they_verify_the_password(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock)
    account = make_account(db, clock, service, "alice")
    for h in ScramHash:
        creds = hosting.credentials_of(account, h)
        assert creds.iterations == ITERATIONS
        assert verify_plain(PASSWORD, creds, h)
        assert not verify_plain(PASSWORD + "x", creds, h)
    stored = b"".join(
        v if isinstance(v, bytes) else str(v).encode()
        for v in vars(account).values()
        if isinstance(v, (bytes, str))
    )
    assert PASSWORD.encode() not in stored


def test_without_a_password_a_strong_one_is_generated_and_returned_once(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock)
    account, generated = hosting.create_account(
        db,
        clock,
        service,
        username="alice",
        password=None,
        security=SECURITY,
        iterations=ITERATIONS,
    )
    assert generated is not None and len(generated) >= 20
    assert verify_plain(
        generated, hosting.credentials_of(account, ScramHash.SHA256), ScramHash.SHA256
    )
    again = hosting.reset_password(
        db, clock, service, account, password=None, security=SECURITY, iterations=ITERATIONS
    )
    assert again is not None and again != generated
    assert not verify_plain(
        generated, hosting.credentials_of(account, ScramHash.SHA1), ScramHash.SHA1
    )
    assert (
        hosting.reset_password(
            db,
            clock,
            service,
            account,
            password=PASSWORD,
            security=SECURITY,
            iterations=ITERATIONS,
        )
        is None
    )
    assert verify_plain(PASSWORD, hosting.credentials_of(account, ScramHash.SHA1), ScramHash.SHA1)


def test_csv_import_creates_each_valid_row_and_reports_each_bad_one(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock)
    make_account(db, clock, service, "dora")
    text = (
        "username,password,name\n"
        f"alice,{PASSWORD},Alice A\n"
        "bob,short\n"
        f"Alice,{PASSWORD}\n"
        f"dora,{PASSWORD}\n"
        f"e v e,{PASSWORD}\n"
        "frank\n"
        f"grace,{PASSWORD},Grace,extra\n"
        f"heidi,{PASSWORD}\n"
    )
    report = hosting.import_accounts_csv(
        db, clock, service, text, security=SECURITY, iterations=ITERATIONS
    )
    by_line = {row.line: row for row in report.rows}
    assert [by_line[n].status for n in range(2, 10)] == [
        "created",
        "refused",
        "refused",
        "refused",
        "refused",
        "refused",
        "refused",
        "created",
    ]
    assert "at least 12 characters" in by_line[3].reason
    assert "already exists" in by_line[4].reason and "already exists" in by_line[5].reason
    assert "username,password[,name]" in by_line[7].reason
    assert (report.created, report.refused) == (2, 6)
    names = set(
        db.scalars(select(XmppAccount.localpart).where(XmppAccount.service_id == service.id))
    )
    assert names == {"alice", "dora", "heidi"}
    alice = hosting.get_account(db, service, "alice")
    assert alice.name == "Alice A"


def test_a_file_that_cannot_be_read_is_refused_before_any_row_is_created(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock)
    with pytest.raises(InvalidInput, match="no accounts"):
        hosting.import_accounts_csv(db, clock, service, "username,password\n", security=SECURITY)
    with pytest.raises(InvalidInput, match="not valid CSV"):
        hosting.import_accounts_csv(
            db, clock, service, f'alice,{PASSWORD}\n"bob,unterminated', security=SECURITY
        )
    assert hosting.count_accounts(db, service.id) == 0


def test_the_import_respects_the_account_limit_row_by_row(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock, limits=PlanLimits(max_xmpp_accounts=1))
    text = f"alice,{PASSWORD}\nbob,{PASSWORD}\n"
    report = hosting.import_accounts_csv(
        db, clock, service, text, security=SECURITY, iterations=ITERATIONS
    )
    assert [r.status for r in report.rows] == ["created", "refused"]
    assert "most its plan allows" in report.rows[1].reason


def test_accounts_are_listed_by_page_and_searched(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    for name in ("carol", "alice", "bob", "alfred"):
        make_account(db, clock, service, name)
    make_account(db, clock, make_service(db, clock), "alan")
    page, total = hosting.list_accounts(db, service, limit=2, offset=1)
    assert total == 4 and [a.localpart for a in page] == ["alice", "bob"]
    found, count = hosting.list_accounts(db, service, search="al")
    assert count == 2 and {a.localpart for a in found} == {"alfred", "alice"}


def test_other_organizations_cannot_reach_a_service(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    stranger = make_org(db, clock, "Other")
    with pytest.raises(NotFound):
        hosting.get_service(db, service.id, organization_id=stranger.id)
    assert hosting.get_service(db, service.id, organization_id=service.organization_id) is service


def test_suspension_shows_as_a_suspended_host_with_the_reason(
    db: Session, clock: FrozenClock
) -> None:
    service = make_service(db, clock)
    hosting.suspend_service(db, clock, service, "  unpaid   invoice INV-1 ")
    host = hosting.virtual_host(service)
    assert host.status is HostStatus.SUSPENDED and host.status_reason == "unpaid invoice INV-1"
    with pytest.raises(InvalidInput, match="reason"):
        hosting.suspend_service(db, clock, service, "   ")
    hosting.reactivate_service(db, clock, service)
    assert hosting.virtual_host(service).active


def test_a_budget_block_stops_the_service_until_lifted(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    hosting.block_for_budget(db, clock, service, "budget cap reached for messages")
    host = hosting.virtual_host(service)
    assert not host.active and host.status_reason == "budget cap reached for messages"
    hosting.lift_budget_block(db, clock, service)
    assert hosting.virtual_host(service).active


def test_limits_are_bounded(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    with pytest.raises(InvalidInput, match="max_stanza_bytes"):
        hosting.set_limits(db, clock, service, {"max_stanza_bytes": 10})
    with pytest.raises(InvalidInput, match="not a limit"):
        hosting.set_limits(db, clock, service, {"status": 1})
    hosting.set_limits(db, clock, service, {"max_connections": 5, "registration_allowed": True})
    host = hosting.virtual_host(service)
    assert host.limits.max_connections == 5 and host.limits.registration_allowed


def test_changes_reach_the_hub_only_after_commit(
    session_factory: object, clock: FrozenClock
) -> None:
    from sqlalchemy.orm import sessionmaker

    assert isinstance(session_factory, sessionmaker)
    hub = changes.install_hub(session_factory)
    seen: list[changes.Change] = []
    hub.subscribe(seen.extend)
    with session_factory() as session:
        service = make_service(session, clock)
        session.commit()
        assert [type(c) for c in seen] == [changes.HostChanged]
        seen.clear()
        hosting.suspend_service(session, clock, service, "staff action")
        assert seen == []
        session.rollback()
        assert seen == []
        service = session.get(HostedService, service.id)
        assert service is not None
        hosting.suspend_service(session, clock, service, "staff action")
        account = make_account(session, clock, service, "alice")
        hosting.disable_account(session, clock, service, account, "left the company")
        session.commit()
    kinds = [type(c).__name__ for c in seen]
    assert kinds == ["HostChanged", "AccountChanged", "AccountChanged"]
    first = seen[0]
    assert isinstance(first, changes.HostChanged) and not first.host.active
    last = seen[-1]
    assert isinstance(last, changes.AccountChanged) and last.close_reason == "left the company"


def test_every_change_is_audited(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    account = make_account(db, clock, service, "alice")
    hosting.disable_account(db, clock, service, account, "lost laptop")
    hosting.enable_account(db, clock, service, account)
    hosting.reset_password(
        db, clock, service, account, password=None, security=SECURITY, iterations=ITERATIONS
    )
    hosting.delete_account(db, clock, service, account)
    hosting.suspend_service(db, clock, service, "test")
    events = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.organization_id == service.organization_id)
        .order_by(AuditEvent.at, AuditEvent.id)
    ).all()
    seen = {(e.action, e.details.get("change")) for e in events}
    for change in ("created", "disabled", "enabled", "password_reset", "deleted"):
        assert ("xmpp.account_changed", change) in seen
    assert ("service.changed", "created") in seen and ("service.changed", "suspended") in seen
    disabled = next(e for e in events if e.details.get("change") == "disabled")
    assert disabled.target_label == f"alice@{service.domain}"
    assert disabled.details["reason"] == "lost laptop"


def test_removing_a_service_deletes_its_accounts(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    make_account(db, clock, service, "alice")
    service_id = service.id
    hosting.remove_service(db, clock, service)
    assert db.get(HostedService, service_id) is None
    assert db.scalar(select(XmppAccount).where(XmppAccount.service_id == service_id)) is None
    assert isinstance(changes.staged(db)[-1], changes.HostRemoved)


def test_renaming_changes_the_display_name_only(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    account = make_account(db, clock, service, "alice")
    hosting.rename_account(db, clock, service, account, "  Alice   Liddell ")
    assert (account.localpart, account.name) == ("alice", "Alice Liddell")
    with pytest.raises(InvalidInput, match="200"):
        hosting.rename_account(db, clock, service, account, "x" * 201)


def test_a_file_with_too_many_rows_is_refused_whole(db: Session, clock: FrozenClock) -> None:
    service = make_service(db, clock)
    text = "".join(f"user{n},{PASSWORD}\n" for n in range(hosting.CSV_MAX_ROWS + 1))
    with pytest.raises(InvalidInput, match=f"At most {hosting.CSV_MAX_ROWS}"):
        hosting.import_accounts_csv(db, clock, service, text, security=SECURITY)
    assert hosting.count_accounts(db, service.id) == 0
