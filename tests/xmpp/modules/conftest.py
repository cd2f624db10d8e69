"""A live server on loopback with every default IM module, for the slixmpp interop tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.ports import HostLimits
from imhost.xmpp.server import XmppServer

from ..conftest import LiveServer
from ..harness import DOMAIN, PASSWORD, settings


@pytest.fixture
async def live_im(cert_dir: Path) -> AsyncIterator[LiveServer]:
    """STARTTLS (required) on a free port, Direct TLS on another, all IM modules loaded."""
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
            metering_flush_seconds=5,
        ),
        backend,
        modules=DEFAULT_MODULES,
    )
    await server.start()
    assert server.c2s_port and server.direct_tls_port
    yield LiveServer(server, backend, server.c2s_port, server.direct_tls_port)
    await server.stop()
