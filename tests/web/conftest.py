"""An app on the suite database with a frozen clock; clients signed in as anyone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imhost.accounts import sessions
from imhost.accounts.models import User
from imhost.config import SecuritySettings, load_settings
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime, build_runtime
from imhost.web.app import create_app


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def runtime(
    engine: Engine,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    tmp_path: Path,
    sleeps: list[float],
) -> Runtime:
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        webhooks_allow_private=True,
        security=SecuritySettings(cookie_secure=False),
    )
    return build_runtime(settings, clock=clock, engine=engine, sleep=sleeps.append)


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture
def app_client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def signed_in(app: FastAPI, user: User, *, mfa_verified: bool = True) -> TestClient:
    """A client with a fresh session cookie and CSRF header for ``user``."""
    runtime: Runtime = app.state.runtime
    with runtime.session_factory() as session:
        new = sessions.start_session(
            session,
            runtime.clock,
            runtime.settings.security,
            user_id=user.id,
            address="testclient",
            user_agent="pytest",
            mfa_verified=mfa_verified,
        )
        session.commit()
    client = TestClient(app, raise_server_exceptions=False)
    client.cookies.set(sessions.COOKIE_NAME, new.cookie_value)
    client.headers["X-CSRF-Token"] = new.session.csrf_token
    return client
