"""A real imhost (uvicorn on a loopback port, the suite database) driven by Debian's chromium
through Playwright. Skipped, with the reason, when /usr/bin/chromium is not installed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import SecuritySettings, load_settings
from imhost.kit.clock import FrozenClock, SystemClock
from imhost.runtime import Runtime, build_runtime
from imhost.web import console, portal
from imhost.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    url: str
    runtime: Runtime
    logins: Any  # DemoLogins
    acme_owner: tuple[str, str]
    acme_slug: str

    def password_of(self, email: str) -> str:
        return str(next(p for _who, e, p in self.logins.web if e == email))


@pytest.fixture
def site(engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Site]:
    if not CHROMIUM.exists():
        pytest.skip(
            "end-to-end tests need Debian's chromium at /usr/bin/chromium "
            "(apt-get install chromium)"
        )
    port = _free_port()
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="e2e-" + "k" * 40,
        public_url=f"http://127.0.0.1:{port}",
        security=SecuritySettings(cookie_secure=False),
    )
    runtime = build_runtime(settings, clock=SystemClock(), engine=engine, sleep=lambda _s: None)
    from imhost.cli.demo import seed_demo

    logins = seed_demo(runtime)
    _demo_usage(runtime)
    acme = _acme_with_a_due_subscription(runtime)
    app = create_app(runtime)
    portal.install(app)
    console.install(app)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield Site(f"http://127.0.0.1:{port}", runtime, logins, acme, "acme-e2e")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _demo_usage(runtime: Runtime) -> None:
    """The metering demo's usage records for the demo customer (charts and forecast)."""
    from imhost.accounts import service as accounts
    from imhost.metering import demo

    with runtime.session_factory() as session:
        demo.seed(session, runtime, accounts.get_organization(session, "demo"), {}, None)
        session.commit()


def _acme_with_a_due_subscription(runtime: Runtime) -> tuple[str, str]:
    """A customer whose subscription started 40 days ago without a trial: billing is due."""
    from imhost.accounts import service as accounts
    from imhost.billing import service as billing
    from imhost.catalog import service as catalog

    email, password = "owner@acme-e2e.example.com", "amber falcon river lantern"
    past = FrozenClock(SystemClock().now() - timedelta(days=40))
    with runtime.session_factory() as session:
        user = accounts.create_user(
            session, past, email=email, name="Ann Acme", email_verified=True
        )
        runtime.auth.set_password_directly(session, user, password)
        org = accounts.create_organization(
            session, past, name="Acme e2e", owner=user, country="DE", slug="acme-e2e"
        )
        plan = next(v for v in catalog.list_plans(session) if v.versions)
        billing.start_subscription(
            session, past, org.id, plan.versions[0].version.id, with_trial=False
        )
        session.commit()
    return email, password


@pytest.fixture
def browser_page(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def shoot(page: Any, name: str) -> None:
    """Screenshots of the current page at desktop and phone width (test artifacts)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
