"""End-to-end in a real browser: a customer's owner adds its own domain to the service, sees
the DNS records to add, checks them against a real DNS server on loopback (missing, then
wrong, then right) and removes the domain, at desktop and phone width."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from imhost.domains.models import CustomDomain
from tests.domains.dns_server import DnsServer
from tests.e2e.conftest import Site, shoot
from tests.e2e.test_portal_and_console import arrive, enrol_totp, sign_in

pytestmark = pytest.mark.e2e

NAME = "chat.demo-customer.example"


@pytest.fixture
def dns_server(site: Site) -> Iterator[DnsServer]:
    server = DnsServer({})
    dns = site.runtime.settings.dns
    saved = (dns.resolvers, dns.timeout_seconds, dns.lifetime_seconds)
    dns.resolvers, dns.timeout_seconds, dns.lifetime_seconds = [server.address], 1.0, 2.0
    yield server
    dns.resolvers, dns.timeout_seconds, dns.lifetime_seconds = saved
    server.close()


def _zone(token: str, target: str, client_port: int) -> dict[tuple[str, str], list[str]]:
    return {
        (f"_imhost-verify.{NAME}.", "TXT"): [f'"imhost-verify={token}"'],
        (f"_xmpp-client._tcp.{NAME}.", "SRV"): [f"5 0 {client_port} {target}."],
        (f"_xmpps-client._tcp.{NAME}.", "SRV"): [f"5 0 5223 {target}."],
        (f"_xmpp-server._tcp.{NAME}.", "SRV"): [f"5 0 5269 {target}."],
    }


def _a_minute_passes(site: Site) -> None:
    """The portal asks DNS at most every 10 s per domain: move the last check back."""
    with site.runtime.session_factory() as session:
        session.execute(
            update(CustomDomain).values(
                last_checked_at=site.runtime.clock.now() - timedelta(minutes=1)
            )
        )
        session.commit()


def test_an_owner_adds_a_domain_fixes_its_records_until_verified_and_removes_it(
    site: Site, browser_page: Any, dns_server: DnsServer
) -> None:
    settings = site.runtime.settings
    target = settings.dns.srv_target or settings.base_domain
    page = browser_page
    owner = "owner@demo.example.com"
    sign_in(page, site, owner, site.password_of(owner))
    arrive(page, r"/portal/orgs/demo/")
    page.get_by_role("link", name="Service", exact=True).click()
    page.get_by_role("link", name="Custom domains").click()
    arrive(page, r"/portal/orgs/demo/service/[^/]+/domains")
    expect(page.get_by_text("No custom domain yet")).to_be_visible()
    shoot(page, "domains-empty")

    # A name that is not a domain: the error summary, the field keeps what was typed.
    page.get_by_label("Domain", exact=True).fill("chat acme!")
    page.get_by_role("button", name="Add domain").click()
    expect(page.locator("[data-error-summary]")).to_be_visible()
    expect(page.get_by_label("Domain", exact=True)).to_have_value("chat acme!")
    shoot(page, "domains-error")

    page.get_by_label("Domain", exact=True).fill(NAME.upper())
    page.get_by_role("button", name="Add domain").click()
    expect(page.locator(".flash")).to_contain_text(f"{NAME} is added")
    zone = page.locator("pre.zone")
    expect(zone).to_contain_text(f"_xmpp-client._tcp.{NAME}. 3600 IN SRV 5 0 5222 {target}.")
    shoot(page, "domains-added")
    with site.runtime.session_factory() as session:
        token = session.scalars(select(CustomDomain.token)).one()
    expect(zone).to_contain_text(f'"imhost-verify={token}"')

    # Check before anything is in DNS: every record is missing.
    page.get_by_role("button", name="Check now").click()
    expect(page.locator(".flash")).to_contain_text("not verified yet")
    expect(page.get_by_text("Records missing or wrong")).to_be_visible()
    expect(page.get_by_text("Missing", exact=True).first).to_be_visible()

    # The customer adds the records with a wrong port for _xmpp-client.
    dns_server.zone.load(_zone(token, target, 5333))
    _a_minute_passes(site)
    page.get_by_role("button", name="Check now").click()
    row = page.get_by_role("row", name=re.compile(rf"_xmpp-client\._tcp\.{re.escape(NAME)}"))
    expect(row).to_contain_text("Wrong value")
    expect(row).to_contain_text("not at port 5222")
    expect(row).to_contain_text(f"5 0 5333 {target}.")
    shoot(page, "domains-wrong-port")

    # Fixed: verified.
    dns_server.zone.load(_zone(token, target, 5222))
    _a_minute_passes(site)
    page.get_by_role("button", name="Check now").click()
    expect(page.locator(".flash")).to_contain_text(f"{NAME} is verified")
    expect(page.locator(".badge.ok", has_text="Verified")).to_be_visible()
    shoot(page, "domains-verified")

    page.get_by_role("button", name="Remove").click()
    expect(page.get_by_text(f"Remove {NAME} from")).to_be_visible()
    page.get_by_role("button", name="Remove domain").click()
    expect(page.locator(".flash")).to_contain_text(f"{NAME} is removed")
    expect(page.get_by_text("No custom domain yet")).to_be_visible()


def test_staff_filter_domains_failing_verification(
    site: Site, browser_page: Any, dns_server: DnsServer
) -> None:
    from imhost.accounts import service as accounts
    from imhost.domains import service as domains
    from imhost.hosting import service as hosting

    runtime = site.runtime
    with runtime.session_factory() as session:
        org = accounts.get_organization(session, "demo")
        [service] = hosting.services_of(session, org.id)
        for name in ("bad.demo-customer.example", "new.demo-customer.example"):
            domains.add_domain(
                session,
                runtime.clock,
                runtime.settings,
                organization_id=org.id,
                service_id=service.id,
                name=name,
            )
        bad = domains.find_domain(session, "bad.demo-customer.example")
        domains.check_now(session, runtime.clock, runtime.settings, bad)
        session.commit()
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")  # staff must enrol first
    enrol_totp(page)
    page.goto(site.url + "/console/domains")
    page.get_by_label("Status").select_option("failing")
    page.get_by_role("button", name="Filter").click()
    arrive(page, r"/console/domains\?status=failing&q=")
    expect(page.get_by_role("cell", name="bad.demo-customer.example", exact=True)).to_be_visible()
    expect(page.get_by_text("new.demo-customer.example")).to_have_count(0)
    shoot(page, "console-domains-failing")
