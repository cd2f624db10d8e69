"""The built-in engine: imhost's own XMPP server wired to the database through the ports.

``imhost serve`` calls :func:`start_builtin_engine` and keeps the result in ``runtime.xmpp``.
It needs no provisioning calls: hosts and accounts are read through
:class:`~imhost.hosting.ports.DbBackend`, and committed changes reach it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from imhost.db.engine import transaction
from imhost.hosting.models import HostedService
from imhost.hosting.ports import DbBackend, DbPrivateStore
from imhost.xmpp.server import XmppServer, ensure_self_signed_cert, make_tls_context

if TYPE_CHECKING:  # runtime stands above hosting: type only
    from imhost.runtime import Runtime

log = logging.getLogger(__name__)


class HostedXmppServer(XmppServer):
    """The XMPP server plus the database backend it owns (flushed and closed on stop)."""

    backend: DbBackend

    def __init__(self, *args: Any, backend: DbBackend, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.backend = backend

    async def stop(self) -> None:
        await super().stop()
        await self.backend.close()

    def connections(self, domain: str) -> int:
        """Sessions open on ``domain`` now (safe to call from another thread: one lookup)."""
        counters = self.meter.hosts.get(domain)
        return int(counters.connections) if counters is not None else 0


def _covers(cert_path: Path, names: Sequence[str]) -> bool:
    """Whether the certificate names every host (directly or by a one-level wildcard)."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):  # unreadable or no SAN: regenerate
        return False
    dns = set(san.value.get_values_for_type(x509.DNSName))
    for name in names:
        parent = name.split(".", 1)[1] if "." in name else ""
        if name not in dns and (not parent or f"*.{parent}" not in dns):
            return False
    return True


def self_signed_certificate(directory: Path, domains: Sequence[str]) -> tuple[Path, Path]:
    """``<data dir>/tls/`` certificate for every hosted domain and localhost, generated on
    first start and again when a hosted domain is not covered."""
    names = [*dict.fromkeys([*sorted(domains), "localhost"])]
    cert = directory / "xmpp-cert.pem"
    key = directory / "xmpp-key.pem"
    if cert.exists() and key.exists() and not _covers(cert, names):
        log.info("regenerating the self-signed XMPP certificate for %s", ", ".join(names))
        cert.unlink()
        key.unlink()
    return ensure_self_signed_cert(directory, names)


def _domains(runtime: Runtime) -> list[str]:
    with transaction(runtime.session_factory) as session:
        return list(session.scalars(select(HostedService.domain)))


async def start_builtin_engine(runtime: Runtime, *, listen: bool = True) -> HostedXmppServer:
    """Build the server on the database ports, with TLS from the settings or a self-signed
    certificate in ``<data dir>/tls/``, start its listeners and return it."""
    settings = runtime.settings.xmpp
    backend = DbBackend(runtime.session_factory, runtime.clock, runtime.settings.security)
    await backend.start()
    if settings.certificate and settings.private_key:
        cert, key = settings.certificate, settings.private_key
    else:
        directory = settings.certificate_dir or runtime.settings.data_dir / "tls"
        cert, key = self_signed_certificate(directory, _domains(runtime))
    ssl_context, end_point = make_tls_context(cert, key)
    server = HostedXmppServer(
        settings,
        backend=backend,
        directory=backend,
        auth=backend,
        roster=backend,
        offline=backend,
        private=DbPrivateStore(backend),
        vcard=backend,
        blocklist=backend,
        usage=backend,
        client_versions=backend,  # XEP-0092 answers, kept on the account for support
        clock=runtime.clock,
        ssl_context=ssl_context,
        tls_server_end_point=end_point,
    )
    try:
        await server.start(listen=listen)
    except BaseException:
        await backend.close()
        raise
    return server
