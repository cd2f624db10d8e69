"""Fixtures for the monitoring tests."""

from __future__ import annotations

import pytest

from tests.web.conftest import app, runtime, sleeps  # noqa: F401

from .certs import Certs, make_certs

DOMAIN = "example.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("monitoring-tls"), DOMAIN)
