"""The portal home at a glance, the organization switcher, joining by invitation, changing
one's e-mail address and closing an organization, in a real browser at a phone's and a
desktop's width. Screenshots are saved for a person to look at."""

from __future__ import annotations

import re
import shutil
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from imhost.kit.clock import FrozenClock, SystemClock
from imhost.notify.models import OutboundEmail
from tests.e2e.conftest import SHOTS, Site
from tests.e2e.test_portal_and_console import arrive, sign_in

pytestmark = pytest.mark.e2e

PASSWORD = "cobalt heron meadow lantern"
SIZES = ((390, 844), (1280, 800))


def _customer(site: Site, slug: str, email: str) -> str:
    """A customer 20 days into a paid period: its opening invoice is open and overdue."""
    from imhost.accounts import service as accounts
    from imhost.billing import service as billing
    from imhost.billing.flows import run_billing
    from imhost.catalog import service as catalog
    from imhost.hosting import service as hosting

    runtime = site.runtime
    past = FrozenClock(SystemClock().now() - timedelta(days=20))
    with runtime.session_factory() as session:
        user = accounts.get_user_by_email(session, email)
        if user is None:
            user = accounts.create_user(
                session, past, email=email, name="Hana Home", email_verified=True
            )
            runtime.auth.set_password_directly(session, user, PASSWORD)
        org = accounts.create_organization(
            session, past, name=f"Home {slug}", owner=user, country="DE", slug=slug
        )
        version = catalog.current_plan_version(session, "business", "EUR")
        billing.start_subscription(session, past, org.id, version.id, with_trial=False)
        session.commit()
    run_billing(runtime.session_factory, past, past.now())
    with runtime.session_factory() as session:
        (service,) = hosting.services_of(session, accounts.get_organization(session, slug).id)
        for name in ("ann", "bob", "cem"):
            hosting.create_account(
                session,
                runtime.clock,
                service,
                username=name,
                password=None,
                security=runtime.settings.security,
                iterations=4096,
            )
        session.commit()
    return slug


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / shot.name)


def _fits(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def _link_in_mail(site: Site, kind: str, to: str) -> str:
    with site.runtime.session_factory() as session:
        mails = session.scalars(
            select(OutboundEmail)
            .where(OutboundEmail.kind == kind)
            .order_by(OutboundEmail.created_at.desc())
        ).all()
    text = next(m.text for m in mails if to in m.to)
    found = re.search(r"https?://\S+", text)
    assert found is not None, text
    return found.group(0)


def test_the_home_page_and_the_switcher_at_a_phone_and_a_desktop(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    email = "hana@home-e2e.example.com"
    first = _customer(site, "home-one", email)
    second = _customer(site, "home-two", email)
    page = browser_page
    sign_in(page, site, email, PASSWORD)
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{site.url}/portal/orgs/{first}/")
        expect(page.get_by_role("heading", name="What to do next")).to_be_visible()
        expect(page.get_by_role("heading", name="Invoices to pay")).to_be_visible()
        pay = page.get_by_role("button", name=re.compile(r"^Pay now")).first
        expect(pay).to_be_visible()
        box = pay.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        expect(page.get_by_text("overdue").first).to_be_visible()
        expect(page.get_by_text("Balance due")).to_be_visible()
        expect(page.get_by_role("img", name=re.compile("of the limit used")).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"Next invoice on"))).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"home-{width}")
        # Switch to the other organization from the members page: stays on members.
        page.goto(f"{site.url}/portal/orgs/{first}/members")
        page.locator(".org-switch summary").click()
        switcher = page.locator(".org-switch ul")
        expect(switcher).to_be_visible()
        _shot(page, tmp_path, f"switcher-{width}")
        switcher.get_by_role("link", name=f"Home {second}").click()
        arrive(page, rf"/portal/orgs/{second}/members")
        _fits(page, width)
        page.goto(f"{site.url}/portal/orgs")
        expect(page.get_by_role("link", name=f"Home {first}")).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"orgs-{width}")


def test_an_invitee_joins_without_an_organization_of_their_own(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    from imhost.accounts import service as accounts
    from imhost.accounts.audit import Actor
    from imhost.accounts.models import OrgRole

    owner = "inviter@home-e2e.example.com"
    slug = _customer(site, "home-invite", owner)
    page = browser_page
    for width, height in SIZES:
        invitee = f"newcomer-{width}@home-e2e.example.com"
        with site.runtime.session_factory() as session:
            org = accounts.get_organization(session, slug)
            accounts.invite(
                session,
                site.runtime.clock,
                org,
                email=invitee,
                role=OrgRole.TECHNICAL,
                actor=Actor(label=owner),
                actor_role=OrgRole.OWNER,
            )
            session.commit()
        page.context.clear_cookies()
        page.set_viewport_size({"width": width, "height": height})
        page.goto(_link_in_mail(site, "invitation", invitee))
        expect(page.get_by_role("heading", name="New here? Create your account")).to_be_visible()
        page.get_by_label("Your name").fill("Nora Newcomer")
        page.get_by_label("Choose a password").fill("short")
        page.get_by_label("Type it again").fill("short")
        page.get_by_role("button", name="Create my account and join").click()
        expect(page.get_by_role("heading", name="There is a problem")).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"invitation-error-{width}")
        page.get_by_label("Choose a password").fill(PASSWORD)
        page.get_by_label("Type it again").fill(PASSWORD)
        page.get_by_role("button", name="Create my account and join").click()
        arrive(page, rf"/portal/orgs/{slug}/")
        expect(page.get_by_text(f"You joined Home {slug}")).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"invitation-joined-{width}")


def test_changing_the_e_mail_address_by_its_link(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    email = "mover@home-e2e.example.com"
    _customer(site, "home-move", email)
    page = browser_page
    for width, height in SIZES:
        page.context.clear_cookies()
        page.set_viewport_size({"width": width, "height": height})
        sign_in(page, site, email, PASSWORD)
        page.goto(f"{site.url}/portal/account")
        page.get_by_role("link", name="Change", exact=True).click()
        arrive(page, "/portal/account/email")
        new = f"moved-{width}@home-e2e.example.com"
        page.get_by_label("New e-mail address").fill(new)
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Send the confirmation link").click()
        expect(page.get_by_text(f"We sent a link to {new}")).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"email-sent-{width}")
        page.goto(_link_in_mail(site, "email-change", new))
        page.get_by_role("button", name=f"Confirm {new}").click()
        arrive(page, "/portal/account")
        expect(page.get_by_text(f"Your e-mail address is now {new}")).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"email-changed-{width}")
        email = new


def test_closing_an_organization_after_downloading_its_data(
    site: Site, browser_page: Any, tmp_path: Path
) -> None:
    email = "closer@home-e2e.example.com"
    page = browser_page
    for width, height in SIZES:
        slug = _customer(site, f"home-close-{width}", email)
        page.context.clear_cookies()
        page.set_viewport_size({"width": width, "height": height})
        sign_in(page, site, email, PASSWORD)
        page.goto(f"{site.url}/portal/orgs/{slug}/settings")
        page.get_by_role("link", name=re.compile("^Close Home")).click()
        arrive(page, rf"/portal/orgs/{slug}/close")
        expect(page.get_by_text("3 XMPP accounts are deleted")).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"close-{width}")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the data export").click()
        path = tmp_path / f"export-{width}.zip"
        download.value.save_as(path)
        assert "xmpp_accounts.csv" in zipfile.ZipFile(path).namelist()
        page.reload()
        expect(page.get_by_text("downloaded", exact=True)).to_be_visible()
        page.get_by_label(re.compile("Type the organization's name")).fill(f"Home {slug}")
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name=f"Close Home {slug}").click()
        arrive(page, "/portal/orgs")
        expect(page.get_by_text(f"Home {slug} is closed.")).to_be_visible()
        expect(page.get_by_text("closed", exact=True).first).to_be_visible()
        _fits(page, width)
        _shot(page, tmp_path, f"closed-{width}")
