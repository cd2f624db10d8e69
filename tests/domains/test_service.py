"""Custom domains: claiming names, recording checks, re-checks with backoff, events, audit,
webhooks; the scheduled job against a real DNS server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imhost import events
from imhost.accounts.models import AuditEvent
from imhost.config import Settings, load_settings
from imhost.domains import service as domains
from imhost.domains import tasks
from imhost.domains.models import CustomDomain
from imhost.kit.clock import FrozenClock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.notify import domains as notify_domains
from imhost.notify.models import WebhookDelivery, WebhookEndpoint
from imhost.notify.webhooks import WebhookService
from tests.hosting.factories import make_service

from .dns_server import DnsServer, SilentServer
from .test_checks import TARGET

NAME = "chat.acme.example"


def settings_for(resolver: str = "127.0.0.1:9", timeout: float = 1.0) -> Settings:
    return load_settings(
        base_domain="im.test",
        dns={
            "resolvers": [resolver],
            "timeout_seconds": timeout,
            "lifetime_seconds": timeout,
            "srv_target": TARGET,
        },
    )


def zone_for(domain: CustomDomain) -> dict[tuple[str, str], list[str]]:
    name = domain.name
    return {
        (f"_imhost-verify.{name}.", "TXT"): [f'"imhost-verify={domain.token}"'],
        (f"_xmpp-client._tcp.{name}.", "SRV"): [f"5 0 5222 {TARGET}."],
        (f"_xmpps-client._tcp.{name}.", "SRV"): [f"5 0 5223 {TARGET}."],
        (f"_xmpp-server._tcp.{name}.", "SRV"): [f"5 0 5269 {TARGET}."],
    }


@pytest.fixture
def bus_events(db: Session) -> Iterator[list[events.CustomDomainChanged]]:
    bus = events.make_bus()
    seen: list[events.CustomDomainChanged] = []
    bus.subscribe(events.CustomDomainChanged, lambda e, s: seen.append(e))
    events.attach_bus(db.info, bus)
    yield seen
    db.info.pop("bus", None)


def add(db: Session, clock: FrozenClock, name: str = NAME, **kw: object) -> CustomDomain:
    service = make_service(db, clock)
    return domains.add_domain(
        db,
        clock,
        settings_for(),
        organization_id=service.organization_id,
        service_id=service.id,
        name=name,
        **kw,  # type: ignore[arg-type]
    )


def test_a_domain_is_stored_in_its_ascii_form_with_a_token(db: Session, clock: FrozenClock) -> None:
    domain = add(db, clock, "Chat.Bücher.Example.")
    assert domain.name == "chat.xn--bcher-kva.example"
    assert len(domain.token) == 32 and domain.status == "pending"
    assert domain.next_check_at == clock.now() + timedelta(minutes=5)
    other = add(db, clock, "talk.acme.example")
    assert other.token != domain.token


def test_a_domain_claimed_by_another_organization_is_refused_without_naming_it(
    db: Session, clock: FrozenClock
) -> None:
    first = add(db, clock)
    service = make_service(db, clock)
    with pytest.raises(Conflict) as info:
        domains.add_domain(
            db,
            clock,
            settings_for(),
            organization_id=service.organization_id,
            service_id=service.id,
            name="CHAT.acme.example",
        )
    assert "another customer" in info.value.detail
    assert first.organization_id not in info.value.detail
    assert "Acme" not in info.value.detail  # the claiming organization's name is not told


def test_the_same_organization_is_told_it_has_the_domain_already(
    db: Session, clock: FrozenClock
) -> None:
    first = add(db, clock)
    with pytest.raises(Conflict, match="already added to your organization"):
        domains.add_domain(
            db,
            clock,
            settings_for(),
            organization_id=first.organization_id,
            service_id=first.service_id,
            name=NAME,
        )


@pytest.mark.parametrize(
    "name",
    [
        "",
        "not a domain",
        "a..example",
        "x" * 64 + ".example",
        ("a" * 62 + ".") * 5 + "com",
        "192.0.2.1",
        "localhost",
        "alice@example.com",
        "https://chat.example.com",
        "acme.im.test",
        "im.test",
    ],
)
def test_bad_names_are_refused_plainly(db: Session, clock: FrozenClock, name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        add(db, clock, name)
    assert info.value.field == "domain" and info.value.detail


def test_a_self_hosted_domain_needs_published_addresses(db: Session, clock: FrozenClock) -> None:
    with pytest.raises(InvalidInput, match="SRV records instead"):
        add(db, clock, self_hosted=True)


def test_records_move_the_status_and_publish_each_change_once(
    db: Session, clock: FrozenClock, bus_events: list[events.CustomDomainChanged]
) -> None:
    domain = add(db, clock)
    good = DnsServer(zone_for(domain))
    silent = SilentServer()
    try:
        # Nothing in DNS yet: failing, one "failed" event, re-checks back off.
        empty = DnsServer({})
        results = domains.run_check(settings_for(empty.address), domain.name, domain.token, False)
        empty.close()
        assert domains.record_check(db, clock, settings_for(), domain, results) == "failed"
        assert domain.status == "failing" and domain.failed_checks == 1
        assert domain.next_check_at == clock.now() + timedelta(minutes=5)
        assert domains.record_check(db, clock, settings_for(), domain, results) is None
        assert domain.next_check_at == clock.now() + timedelta(minutes=10)
        # Records added: verified, no more scheduled checks.
        results = domains.run_check(settings_for(good.address), domain.name, domain.token, False)
        assert domains.record_check(db, clock, settings_for(), domain, results) == "verified"
        assert domain.status == "verified" and domain.next_check_at is None
        assert domain.verified_at == clock.now()
        # The resolver failing does not make a verified domain fail.
        results = domains.run_check(
            settings_for(silent.address, timeout=0.2), domain.name, domain.token, False
        )
        assert domains.record_check(db, clock, settings_for(), domain, results) is None
        assert domain.status == "verified"
    finally:
        good.close()
        silent.close()
    assert [e.kind for e in bus_events] == ["added", "failed", "verified"]
    actions = [a for (a,) in db.execute(select(AuditEvent.action).order_by(AuditEvent.at))]
    assert "domain.added" in actions and "domain.verified" in actions
    assert actions.count("domain.verification_failed") == 1


def test_backoff_doubles_up_to_the_ceiling() -> None:
    settings = settings_for()
    delays = [domains.backoff(settings, n) for n in (1, 2, 3, 4, 5, 6, 7, 50)]
    assert delays[:4] == [timedelta(minutes=m) for m in (5, 10, 20, 40)]
    assert delays[-1] == timedelta(hours=6) and max(delays) == timedelta(hours=6)


def test_removing_frees_the_name_and_is_audited(
    db: Session, clock: FrozenClock, bus_events: list[events.CustomDomainChanged]
) -> None:
    domain = add(db, clock)
    domains.remove_domain(db, clock, domain)
    assert db.scalar(select(CustomDomain)) is None
    with pytest.raises(NotFound):
        domains.find_domain(db, NAME)
    assert add(db, clock).name == NAME
    assert [e.kind for e in bus_events] == ["added", "removed", "added"]


def test_list_filters_by_status_and_name(db: Session, clock: FrozenClock) -> None:
    a = add(db, clock, "chat.one.example")
    add(db, clock, "chat.two.example")
    a.status = "failing"
    db.flush()
    rows, total = domains.list_domains(db, status="failing")
    assert total == 1 and rows[0].id == a.id
    rows, total = domains.list_domains(db, search="two")
    assert [r.name for r in rows] == ["chat.two.example"]
    assert domains.count_by_status(db) == {"pending": 1, "failing": 1, "verified": 0}
    with pytest.raises(InvalidInput):
        domains.list_domains(db, status="bogus")


def test_webhooks_are_queued_for_each_change(db: Session, clock: FrozenClock) -> None:
    bus = events.make_bus()
    notify_domains.register(bus, WebhookService(allow_private=True))
    events.attach_bus(db.info, bus)
    db.info["clock"] = clock
    try:
        service = make_service(db, clock)
        db.add(
            WebhookEndpoint(
                organization_id=service.organization_id,
                url="https://hooks.example.com/x",
                secret="whsec_test",
                event_types=[],
                active=True,
                created_at=clock.now(),
            )
        )
        db.flush()
        domain = domains.add_domain(
            db,
            clock,
            settings_for(),
            organization_id=service.organization_id,
            service_id=service.id,
            name=NAME,
        )
        domains.remove_domain(db, clock, domain)
    finally:
        db.info.pop("bus", None)
        db.info.pop("clock", None)
    kinds = [d.event_type for d in db.scalars(select(WebhookDelivery))]
    assert sorted(kinds) == ["domain.added", "domain.removed"]
    payloads = [d.payload for d in db.scalars(select(WebhookDelivery))]
    assert all(p["name"] == NAME for p in payloads)


def test_the_scheduled_job_rechecks_due_domains_once(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as db:
        ok = add(db, clock, "chat.good.example")
        bad = add(db, clock, "chat.bad.example")
        later = add(db, clock, "chat.later.example")
        later.next_check_at = clock.now() + timedelta(hours=1)
        db.commit()
        zone = zone_for(ok)
        ok_id, bad_id, later_id = ok.id, bad.id, later.id
    server = DnsServer(zone)
    try:
        settings = settings_for(server.address)
        assert tasks.scheduled_checks(session_factory, clock, settings) == 0  # none due yet
        clock.advance(timedelta(minutes=5))
        assert tasks.scheduled_checks(session_factory, clock, settings) == 2
        assert tasks.scheduled_checks(session_factory, clock, settings) == 0  # a rerun: nothing
    finally:
        server.close()
    with session_factory() as db:
        assert db.get(CustomDomain, ok_id).status == "verified"  # type: ignore[union-attr]
        failing = db.get(CustomDomain, bad_id)
        assert failing is not None and failing.status == "failing"
        assert failing.next_check_at == clock.now() + timedelta(minutes=5)
        assert db.get(CustomDomain, later_id).check_count == 0  # type: ignore[union-attr]
        names = {r["name"] for r in failing.checks if r["state"] == "missing"}
        assert "_imhost-verify.chat.bad.example" in names


def test_check_now_on_a_domain_removed_meanwhile_records_nothing(
    session_factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with session_factory() as db:
        domain_id = add(db, clock).id
        db.commit()
    server = DnsServer({})
    try:
        with session_factory() as first:
            domain = domains.get_domain(first, domain_id)
            first.commit()  # as a route does before the lookup
            with session_factory() as second:
                domains.remove_domain(second, clock, domains.get_domain(second, domain_id))
                second.commit()
            with pytest.raises(NotFound, match="removed while it was being checked"):
                domains.check_now(first, clock, settings_for(server.address), domain)
    finally:
        server.close()
