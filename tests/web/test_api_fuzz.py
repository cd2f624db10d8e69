"""Schemathesis over the OpenAPI document: whatever a client sends, never a 5xx.

Runs each operation with generated input, anonymously and as a signed-in owner (the path's
``org_id`` pinned to the owner's organization so requests get past authorization into the
handlers). Bounded for CI: a few examples per operation, no deadline.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import sessions
from imhost.config import SecuritySettings, load_settings
from imhost.db.engine import make_engine
from imhost.db.registry import load_models
from imhost.kit.clock import FrozenClock
from imhost.runtime import build_runtime
from imhost.web.app import create_app
from tests.conftest import make_test_database_url
from tests.factories import make_org, make_user

EXAMPLES = int(os.environ.get("IMHOST_FUZZ_EXAMPLES", "6"))


def _build() -> tuple[object, dict[str, str], str]:
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="imhost-fuzz-"))
    url = make_test_database_url(tmp, "fuzz")
    engine = make_engine(url)
    load_models().create_all(engine)
    clock = FrozenClock()
    runtime = build_runtime(
        load_settings(
            data_dir=tmp / "data",
            secret_key="f" * 40,
            security=SecuritySettings(cookie_secure=False),
        ),
        clock=clock,
        engine=engine,
        sleep=lambda _s: None,
    )
    factory: sessionmaker[Session] = runtime.session_factory
    with factory() as s:
        owner = make_user(s, clock, "fuzz-owner@example.com")
        org = make_org(s, clock, "Fuzz", owner)
        new = sessions.start_session(
            s,
            clock,
            runtime.settings.security,
            user_id=owner.id,
            address="fuzz",
            user_agent="fuzz",
            mfa_verified=True,
        )
        s.commit()
        # Keep the session alive however long the run takes: the frozen clock never moves.
        cookie, csrf, org_id = new.cookie_value, new.session.csrf_token, org.id
    app = create_app(runtime)
    return app, {"Cookie": f"{sessions.COOKIE_NAME}={cookie}", "X-CSRF-Token": csrf}, org_id


APP, OWNER_HEADERS, ORG_ID = _build()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)  # type: ignore[arg-type]


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):  # type: ignore[no-untyped-def]
    if path_parameters and "org_id" in path_parameters:
        path_parameters["org_id"] = ORG_ID
    return path_parameters


@pytest.mark.slow
@schema.exclude(path_regex=r"/auth/logout$|/me/password$|/me/sessions/").parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_no_input_gives_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    for headers in ({}, OWNER_HEADERS):
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error])


def test_the_openapi_document_describes_the_api() -> None:
    doc = TestClient(APP).get("/api/v1/openapi.json").json()  # type: ignore[arg-type]
    assert doc["openapi"].startswith("3.")
    assert any(p.startswith("/api/v1/orgs/{org_id}") for p in doc["paths"])
