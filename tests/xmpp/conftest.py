"""Fixtures for the XMPP tests: a real server on loopback (ports chosen at runtime)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

from .harness import DOMAIN, PASSWORD, settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class LiveServer:
    server: XmppServer
    backend: MemoryBackend
    port: int
    tls_port: int
    domain: str = DOMAIN
    password: str = PASSWORD


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture
async def live(cert_dir: Path) -> AsyncIterator[LiveServer]:
    """A server with STARTTLS (required) on a free port and Direct TLS on another."""
    backend = MemoryBackend(iterations=4096)
    backend.add_host(DOMAIN, limits=HostLimits(message_rate=None))
    for user in ("alice", "bob", "carol"):
        backend.create_account(DOMAIN, user, PASSWORD)
    server = XmppServer.with_memory_backend(
        settings(
            require_encryption=True,
            allow_plain_without_tls=False,
            direct_tls_enabled=True,
            c2s_port=0,
            c2s_direct_tls_port=0,
            certificate_dir=cert_dir,
            metering_flush_seconds=0.2,
            sm_resume_timeout_seconds=30,
        ),
        backend,
        modules=[],
    )
    await server.start()
    assert server.c2s_port and server.direct_tls_port
    yield LiveServer(server, backend, server.c2s_port, server.direct_tls_port)
    await server.stop()
