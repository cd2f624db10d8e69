"""Billing API tests run the real app on the suite database with a frozen clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imhost.config import SecuritySettings, load_settings
from imhost.kit.clock import FrozenClock
from imhost.runtime import Runtime, build_runtime
from imhost.web.app import create_app


@pytest.fixture
def runtime(
    engine: Engine,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    tmp_path: Path,
) -> Runtime:
    settings = load_settings(
        data_dir=tmp_path / "data",
        secret_key="k" * 40,
        webhooks_allow_private=True,
        security=SecuritySettings(cookie_secure=False),
    )
    return build_runtime(settings, clock=clock, engine=engine, sleep=lambda _s: None)


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)
