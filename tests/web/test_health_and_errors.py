"""/healthz, /readyz, /metrics, and errors as RFC 9457 problem+json."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from imhost.config import ConfigError, MetricsSettings, SecuritySettings, load_settings
from imhost.db.engine import make_engine
from imhost.db.migrations import upgrade
from imhost.kit.clock import FrozenClock
from imhost.runtime import build_runtime
from imhost.web.app import create_app
from tests.conftest import make_test_database_url


def test_healthz_answers_while_readyz_wants_current_migrations(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    # The suite database is built by create_all, without Alembic's version: not "ready".
    not_ready = app_client.get("/readyz")
    assert not_ready.status_code == 503
    assert "migrations" in not_ready.json()


def test_readyz_is_ok_on_a_migrated_database(tmp_path: Path, backend: str) -> None:
    url = make_test_database_url(tmp_path, "ready", backend)
    upgrade(url)
    engine = make_engine(url)
    runtime = build_runtime(
        load_settings(
            data_dir=tmp_path / "d",
            secret_key="r" * 40,
            security=SecuritySettings(cookie_secure=False),
        ),
        clock=FrozenClock(),
        engine=engine,
    )
    with TestClient(create_app(runtime)) as client:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ok"
    engine.dispose()


def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    runtime = build_runtime(
        load_settings(data_dir=tmp_path / "d", secret_key="r" * 40),
        clock=FrozenClock(),
        engine=make_engine("postgresql://nobody@127.0.0.1:1/nothing", pool_pre_ping=False),
    )
    with TestClient(create_app(runtime)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_metrics_count_requests_by_route_template(app: FastAPI) -> None:
    client = TestClient(app, client=("127.0.0.1", 40000))
    client.get("/api/v1/orgs/some-org/members")
    client.get("/api/v1/orgs/other-org/members")
    text = client.get("/metrics").text
    assert (
        'imhost_http_requests_total{method="GET",'
        'route="/api/v1/orgs/{org_id}/members",status="401"} 2.0' in text
    )
    assert "imhost_http_request_duration_seconds_bucket" in text


METRICS_TOKEN = "m" * 40


def _metrics_app(tmp_path: Path, runtime_engine: Engine, metrics: MetricsSettings) -> FastAPI:
    settings = load_settings(
        data_dir=tmp_path / "m",
        secret_key="r" * 40,
        security=SecuritySettings(cookie_secure=False),
        metrics=metrics,
    )
    return create_app(build_runtime(settings, clock=FrozenClock(), engine=runtime_engine))


def test_metrics_are_refused_to_the_public_by_default(app: FastAPI) -> None:
    """/metrics names every tenant's domain and traffic: a client from outside gets 403."""
    outsider = TestClient(app, client=("203.0.113.9", 40000), raise_server_exceptions=False)
    r = outsider.get("/metrics")
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "IMHOST_METRICS__TOKEN" in r.json()["detail"]
    assert "imhost_http_requests_total" not in r.text


def test_metrics_relayed_by_a_local_proxy_are_refused(app: FastAPI) -> None:
    """Behind a reverse proxy every request comes from loopback: the proxy header tells."""
    relayed = TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False)
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        r = relayed.get("/metrics", headers={header: "203.0.113.9"})
        assert r.status_code == 403, header
    assert relayed.get("/metrics").status_code == 200


def test_metrics_open_to_the_configured_token_and_networks(tmp_path: Path, engine: Engine) -> None:
    app = _metrics_app(
        tmp_path,
        engine,
        MetricsSettings.model_validate({"token": METRICS_TOKEN, "allow_networks": ["10.1.0.0/16"]}),
    )
    outsider = TestClient(app, client=("203.0.113.9", 40000), raise_server_exceptions=False)
    assert outsider.get("/metrics").status_code == 403
    ok = outsider.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200 and "imhost_http_requests_total" in ok.text
    wrong = outsider.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401
    # Loopback is no longer in the list; the listed network is.
    loopback = TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False)
    assert loopback.get("/metrics").status_code == 403
    inside = TestClient(app, client=("10.1.2.3", 40000), raise_server_exceptions=False)
    assert inside.get("/metrics").status_code == 200


def test_a_short_metrics_token_fails_at_start() -> None:
    with pytest.raises(ConfigError, match="IMHOST_METRICS__TOKEN"):
        load_settings(metrics={"token": "short"})


def test_errors_are_problem_json_with_a_useful_detail(app_client: TestClient) -> None:
    r = app_client.post("/api/v1/auth/login", json={"email": 5})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("invalid-input") and body["status"] == 422
    assert "password" in body["detail"]  # the missing field is named
    assert {e["field"] for e in body["errors"]} >= {"password"}
    unknown = app_client.get("/api/v1/no-such-thing")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith(
        "application/problem+json"
    )
    not_json = app_client.post(
        "/api/v1/auth/login", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code in (400, 422)
    assert not_json.headers["content-type"].startswith("application/problem+json")


def test_responses_carry_security_headers(app: FastAPI) -> None:
    r = TestClient(app).get("/healthz")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_engine_metrics_render_per_host_in_the_prometheus_format() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from imhost.web.metrics import render_engine_metrics

    text = render_engine_metrics(
        {"a.example": {"connections": 3, "messages": 10}, 'b"x': {"connections": 1}},
        {"streams": 4},
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["imhost_xmpp_connections"].type == "gauge"
    assert families["imhost_xmpp_messages"].type == "counter"
    samples = {
        (s.name, s.labels.get("host")): s.value for f in families.values() for s in f.samples
    }
    assert samples[("imhost_xmpp_connections", "a.example")] == 3
    assert samples[("imhost_xmpp_messages_total", "a.example")] == 10
    assert samples[("imhost_xmpp_connections", 'b"x')] == 1
    assert samples[("imhost_xmpp_engine_streams", None)] == 4


def test_a_write_is_committed_before_the_answer_is_sent(app: FastAPI, runtime) -> None:  # type: ignore[no-untyped-def]
    """The request's transaction ends before its response: a failing commit is the caller's
    error (5xx problem), never a success whose data then vanishes."""
    from sqlalchemy import event

    from tests.factories import make_org, make_user
    from tests.web.conftest import signed_in

    with runtime.session_factory() as s:
        owner = make_user(s, runtime.clock, "commit@x.example.com")
        org = make_org(s, runtime.clock, "Commit Co", owner)
        s.commit()
    client = signed_in(app, owner)

    def refuse(session, *_args):  # type: ignore[no-untyped-def]
        raise RuntimeError("the database refused the commit")

    event.listen(runtime.session_factory, "before_commit", refuse)
    try:
        r = client.patch(f"/api/v1/orgs/{org.id}", json={"name": "Renamed"})
    finally:
        event.remove(runtime.session_factory, "before_commit", refuse)
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/api/v1/orgs/{org.id}").json()["name"] == "Commit Co"


def test_the_app_serves_the_portal_and_the_console(app_client: TestClient) -> None:
    for path in ("/portal/", "/console/"):
        r = app_client.get(path, follow_redirects=False)
        assert r.status_code in (200, 302, 303), (path, r.status_code)
    signin = app_client.get("/portal/", follow_redirects=True)
    assert signin.status_code == 200 and "<form" in signin.text
