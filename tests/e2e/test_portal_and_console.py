"""End-to-end in a real browser: what a customer and a staff member do, start to finish."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from imhost.accounts.mfa import totp_code
from imhost.notify.models import OutboundEmail
from tests.e2e.conftest import Site, shoot

pytestmark = pytest.mark.e2e


def sign_in(page: Any, site: Site, email: str, password: str, *, next_path: str = "") -> None:
    page.goto(site.url + "/portal/sign-in" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    # Wait until the browser has left the sign-in form (for the code page or beyond).
    expect(page).not_to_have_url(re.compile(r"/portal/sign-in(\?[^/]*)?$"))
    page.wait_for_load_state()


def arrive(page: Any, path: str) -> None:
    """Wait until the browser shows ``path`` (a regular expression) and the page has loaded."""
    expect(page).to_have_url(re.compile(rf"^https?://[^/]+{path}$"))
    page.wait_for_load_state()


def code_at(secret: str, delta: int = 0) -> str:
    return totp_code(secret, datetime.now(UTC) + timedelta(seconds=delta))


def signup_link(site: Site, email: str) -> str:
    """The link of the sign-up message in the outbox."""
    with site.runtime.session_factory() as session:
        mail = session.scalars(select(OutboundEmail).where(OutboundEmail.kind == "sign-up")).all()
    [text] = [m.text for m in mail if email in m.to]
    return site.url + "/portal/sign-up/" + text.split("/portal/sign-up/")[1].split()[0]


def enrol_totp(page: Any) -> str:
    """On the two-factor page: set up, read the key, confirm with a code; returns the key."""
    page.get_by_role("button", name="Set up two-factor authentication").click()
    secret: str = page.locator("#totp-secret").inner_text().strip()
    expect(page.locator(".qr svg")).to_have_count(1)
    page.get_by_label("Code shown by the app").fill(code_at(secret))
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    return secret


def test_a_customer_signs_up_with_a_plan_turns_on_two_factor_and_signs_in_with_a_code(
    site: Site, browser_page: Any
) -> None:
    page = browser_page
    page.goto(site.url + "/")
    assert page.url.endswith("/portal/sign-in?next=%2Fportal%2F")
    shoot(page, "sign-in")
    page.goto(site.url + "/portal/sign-up")
    plans = page.locator(".plan")
    assert plans.count() >= 2
    shoot(page, "sign-up")
    plans.nth(0).click()
    page.get_by_label("Your name").fill("Zoe Zed")
    page.get_by_label("E-mail address").fill("zoe@zeta.example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_label("Organization name").fill("Zeta Talk")
    page.get_by_role("button", name="Create account").click()
    # The error is next to the field, and what was typed is still there.
    expect(page.locator("#e-password")).to_be_visible()
    assert page.get_by_label("Organization name").input_value() == "Zeta Talk"
    shoot(page, "sign-up-error")
    page.get_by_label("Password").fill("copper meadow violin harbour")
    page.get_by_role("button", name="Create account").click()
    # The same answer whether or not the address has an account; the e-mail finishes it.
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your e-mail")
    shoot(page, "sign-up-check-email")
    page.goto(signup_link(site, "zoe@zeta.example.com"))
    page.get_by_role("button", name="Create my account").click()
    arrive(page, r"/portal/orgs/zeta-talk/")
    expect(page.locator(".flash")).to_contain_text("Your account is ready")
    shoot(page, "overview")

    page.goto(site.url + "/portal/account/mfa")
    secret = enrol_totp(page)
    shoot(page, "recovery-codes")
    page.get_by_role("button", name="Sign out").click()
    arrive(page, r"/portal/sign-in")

    sign_in(page, site, "zoe@zeta.example.com", "copper meadow violin harbour")
    arrive(page, r"/portal/sign-in/code(\?.*)?")
    shoot(page, "sign-in-code")
    page.get_by_label("Code").fill(
        code_at(secret, 30)
    )  # the next step: the enrolment used this one
    page.get_by_role("button", name="Continue").click()
    arrive(page, r"/portal/orgs/zeta-talk/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Zeta Talk")


def test_a_customer_creates_xmpp_accounts_and_reads_usage_and_forecast(
    site: Site, browser_page: Any, tmp_path: Any
) -> None:
    page = browser_page
    owner = "owner@demo.example.com"
    sign_in(page, site, owner, site.password_of(owner))
    arrive(page, r"/portal/orgs/demo/")
    page.get_by_role("link", name="Service", exact=True).click()
    expect(page.get_by_text("How to connect")).to_be_visible()
    shoot(page, "service")
    page.get_by_role("link", name="XMPP accounts").click()
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Display name").fill("Carol")
    page.get_by_role("button", name="Create account").click()
    assert page.locator("#new-pass").inner_text().strip()
    expect(page.get_by_role("cell", name=re.compile(r"^carol@"))).to_be_visible()
    csv = tmp_path / "people.csv"
    csv.write_text("username,password,name\ndave,lilac-otter-canyon-drum,Dave\nbad name,x,Nope\n")
    page.get_by_label("CSV file").set_input_files(str(csv))
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("heading", level=2, name=re.compile("^Import:"))).to_have_text(
        "Import: 1 created, 1 refused"
    )
    shoot(page, "accounts")

    page.get_by_role("link", name="Billing").click()
    expect(page.locator("svg.chart").locator("visible=true")).to_have_count(2)
    expect(page.get_by_role("heading", name="Next invoice", exact=True)).to_be_visible()
    forecast = page.locator("section[aria-labelledby=fc-h] p").first.inner_text()
    # The demo customer is in its free trial: the first paid invoice is forecast.
    assert re.search(r"Free trial until \S+; first invoice on \S+: about €[\d,.]+", forecast)
    shoot(page, "billing")
    page.get_by_label(re.compile("Monthly budget")).fill("abc")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator("#e-amount")).to_be_visible()
    page.get_by_label(re.compile("Monthly budget")).fill("500")
    page.get_by_role("button", name="Save budget").click()
    expect(page.locator(".flash")).to_contain_text("Budget saved")
    for path, name in (
        ("/members", "members"),
        ("/security", "security"),
        ("/tokens", "tokens"),
        ("/billing/plan", "plan"),
    ):
        page.goto(site.url + "/portal/orgs/demo" + path)
        shoot(page, name)
    # The pages also answer a plain GET (no browser state needed). How fast they render is a
    # benchmark's question (bench/), not a timed test's.
    for path in ("/", "/service", "/billing", "/members"):
        assert page.request.get(site.url + "/portal/orgs/demo" + path).ok, path


def test_staff_create_a_plan_run_billing_record_a_payment_and_suspend_a_customer(
    site: Site, browser_page: Any
) -> None:
    page = browser_page
    admin = "admin@provider.example.com"
    sign_in(page, site, admin, site.password_of(admin))
    arrive(page, r"/portal/account/mfa")  # staff must enrol first
    enrol_totp(page)
    page.goto(site.url + "/console/")
    expect(page.get_by_role("link", name="Acme e2e")).to_be_visible()
    shoot(page, "console-customers")

    page.get_by_role("link", name="Plans").click()
    page.get_by_label("Code").fill("team-e2e")
    page.get_by_label("Name", exact=True).fill("Team E2E")
    page.get_by_label("Base fee per period").fill("19.90")
    page.get_by_label("Metric").select_option("messages")
    page.get_by_label("Price per unit").fill("0.001")
    page.get_by_label("Included units").fill("10000")
    page.get_by_role("button", name="Create plan").click()
    arrive(page, r"/console/plans/team-e2e")
    expect(page.locator(".flash")).to_have_text("Plan Team E2E created.")
    shoot(page, "console-plan")

    page.get_by_role("link", name="Billing run").click()
    page.get_by_role("button", name="Run billing").click()
    arrive(page, r"/console/billing/runs/\w+")
    # The page follows the run (it reloads itself) until the result is there.
    expect(page.get_by_role("heading", name="Result")).to_be_visible(timeout=20_000)
    expect(page.get_by_role("heading", name="Finished")).to_be_visible()
    shoot(page, "console-billing-run")

    page.goto(site.url + "/console/invoices")
    page.get_by_role("row").filter(has_text="Acme e2e").first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Invoice "))
    if page.get_by_role("button", name="Finalize").count():
        page.get_by_role("button", name="Finalize").click()
    page.get_by_role("button", name="Record payment").click()
    expect(page.locator(".flash")).to_contain_text("recorded")
    shoot(page, "console-invoice")

    customer = page.context.browser.new_context(
        viewport={"width": 390, "height": 844}, accept_downloads=True
    )
    acme = customer.new_page()
    email, password = site.acme_owner
    sign_in(acme, site, email, password)
    acme.goto(site.url + f"/portal/orgs/{site.acme_slug}/billing/invoices")
    expect(acme.get_by_text("paid").first).to_be_visible()
    with acme.expect_download() as download:
        acme.get_by_role("link", name=re.compile("^Download")).first.click()
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF")
    acme.get_by_role("link", name=re.compile(r"^\d|INV|-")).first.click()
    shoot(acme, "invoice")

    page.goto(site.url + "/console/")
    page.get_by_role("link", name="Acme e2e").click()
    page.get_by_role("button", name="Suspend…").click()
    expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
    page.get_by_label("Reason").fill("Payment dispute under review")
    page.get_by_role("button", name="Suspend customer").click()
    expect(page.locator(".flash")).to_contain_text("suspended")

    acme.goto(site.url + f"/portal/orgs/{site.acme_slug}/")
    banner = acme.get_by_role("alert")
    expect(banner).to_contain_text("This organization is suspended")
    expect(banner).to_contain_text("Payment dispute under review")
    shoot(acme, "suspended")
    customer.close()
