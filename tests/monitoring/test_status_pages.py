"""The public status pages: HTML without JavaScript, JSON, Atom and the SVG badge, from real
probe results, incidents and maintenance."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts.audit import Actor
from imhost.config import SecuritySettings, load_settings
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock, utc
from imhost.monitoring import rules
from imhost.monitoring import service as monitoring
from imhost.monitoring.probes import ProbeResult, Step
from imhost.monitoring.runner import service_subject
from imhost.runtime import Runtime, build_runtime
from imhost.web.app import create_app
from tests.hosting.factories import make_org

POLICY = rules.Policy(down_after=1, up_after=1)
STAFF = Actor(label="ops@provider.test")


def _result(ok: bool) -> ProbeResult:
    return ProbeResult("x", [Step("connect", ok, 0.002, "" if ok else "refused")])


@pytest.fixture
def runtime(engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path) -> Runtime:
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        provider_name="Example IM",
        public_url="https://im.example.net",
        security=SecuritySettings(cookie_secure=False),
    )
    return build_runtime(settings, clock=FrozenClock(utc(2026, 3, 1)), engine=engine)


@pytest.fixture
def seeded(runtime: Runtime) -> str:
    clock = runtime.clock
    assert isinstance(clock, FrozenClock)
    with transaction(runtime.session_factory, write=True) as s:
        org = make_org(s, clock)
        svc = hosting.create_service(s, clock, org, base_domain="im.test", domain="acme.example")
        subject = service_subject(svc.id)
        for component in ("xmpp-c2s", "web", "api"):
            monitoring.record_result(
                s, clock, f"component:{component}", "tcp", _result(True), policy=POLICY
            )
        monitoring.record_result(s, clock, subject, "xmpp-starttls", _result(True), policy=POLICY)
        clock.set(utc(2026, 3, 10, 12))
        monitoring.record_result(s, clock, subject, "xmpp-starttls", _result(False), policy=POLICY)
        clock.set(utc(2026, 3, 10, 12, 30))
        monitoring.record_result(s, clock, subject, "xmpp-starttls", _result(True), policy=POLICY)
        clock.set(utc(2026, 3, 10, 12, 40))
        monitoring.settle_incidents(s, clock)
        clock.set(utc(2026, 3, 20, 9))
        monitoring.record_result(s, clock, subject, "xmpp-starttls", _result(False), policy=POLICY)
        [incident] = monitoring.open_incidents(s)
        monitoring.post_update(
            s, clock, incident, status="identified", body="A <b>router</b> failed.", actor=STAFF
        )
        monitoring.create_maintenance(
            s,
            clock,
            title="Network work",
            subjects=["component:web"],
            timezone="UTC",
            local_start=datetime(2026, 3, 22, 2, 0),
            duration_minutes=60,
            actor=STAFF,
        )
        clock.advance(timedelta(minutes=30))
    return "acme.example"


def test_the_provider_page_shows_components_and_maintenance(runtime: Runtime, seeded: str) -> None:
    client = TestClient(create_app(runtime))
    page = client.get("/status")
    assert page.status_code == 200
    html = page.text
    assert "Example IM status" in html
    for name in ("XMPP client connections", "Web portal", "API", "E-mail"):
        assert name in html
    assert "Network work" in html and "2026-03-22 02:00" in html
    assert html.count('class="bar ') == 5 * 90
    assert "<script" not in html.split("</head>")[1]  # usable without JavaScript
    data = client.get("/status.json").json()
    assert data["status"] == "unknown"  # e-mail and WebSocket are not measured
    web = next(c for c in data["components"] if c["name"] == "Web portal")
    assert web["status"] == "up" and len(web["days"]) == 90
    assert data["maintenance"][0]["starts_at"] == "2026-03-22T02:00:00Z"


def test_a_domain_page_shows_its_incidents_uptime_feed_and_badge(
    runtime: Runtime, seeded: str
) -> None:
    client = TestClient(create_app(runtime))
    page = client.get(f"/status/{seeded}")
    assert page.status_code == 200
    assert "acme.example is not working" in page.text
    assert "A &lt;b&gt;router&lt;/b&gt; failed." in page.text  # escaped
    assert "Past incidents" in page.text
    data = client.get(f"/status/{seeded}.json").json()
    [svc] = data["components"]
    assert svc["status"] == "down"
    day10 = next(d for d in svc["days"] if d["day"] == "2026-03-10")
    assert day10["uptime_percent"] == "97.916"  # 30 of 1440 minutes down, cut to 3 decimals
    assert [i["status"] for i in data["incidents"]] == ["identified", "resolved"]
    feed = client.get(f"/status/{seeded}.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    root = etree.fromstring(feed.content, etree.XMLParser(resolve_entities=False))
    ns = "{http://www.w3.org/2005/Atom}"
    entries = root.findall(f"{ns}entry")
    assert len(entries) == 5  # 3 updates of the resolved incident, 2 of the open one
    badge = client.get(f"/status/{seeded}.svg")
    assert badge.headers["content-type"].startswith("image/svg+xml")
    assert "acme.example: outage" in badge.text
    etree.fromstring(badge.content, etree.XMLParser(resolve_entities=False))  # well-formed


def test_an_unknown_domain_is_a_plain_404(runtime: Runtime, seeded: str) -> None:
    client = TestClient(create_app(runtime), raise_server_exceptions=False)
    page = client.get("/status/nothing.example")
    assert page.status_code == 404
    assert "There is no status page for nothing.example." in page.text
    assert page.headers["content-type"].startswith("text/html")
    problem = client.get("/status/nothing.example.json")
    assert problem.status_code == 404
    assert json.loads(problem.text)["detail"] == "There is no status page for nothing.example."


def test_metrics_show_probe_state_incidents_and_uptime(runtime: Runtime, seeded: str) -> None:
    client = TestClient(create_app(runtime), client=("127.0.0.1", 40000))
    text = client.get("/metrics").text
    assert 'imhost_probe_up{subject="component:web",name="Web portal",check="tcp"} 1' in text
    assert 'name="acme.example",check="xmpp-starttls"} 0' in text
    assert "imhost_incidents_open 1" in text
    assert 'imhost_uptime_ratio{subject="component:web",window="24h"} 1' in text
    # acme.example: down since 09:00 (30 of the last 1440 minutes measured)
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('imhost_uptime_ratio{subject="service:') and 'window="24h"' in ln
    )
    assert line.endswith(" 0.979167")
