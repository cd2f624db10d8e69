"""The built-in engine: imhost's own XMPP server wired to the database through the ports.

``imhost serve`` calls :func:`start_builtin_engine` and keeps the result in ``runtime.xmpp``.
It needs no provisioning calls: hosts and accounts are read through the adapters of
:class:`~imhost.hosting.ports.DbBackend`, and committed changes reach them at once. It runs
under a lease on its ``node_id`` (:mod:`imhost.hosting.nodes`): a second process with the
same ``node_id`` refuses to start, and the lease's incarnation goes into every usage key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from imhost.db.engine import make_engine, transaction
from imhost.hosting import nodes
from imhost.hosting.models import HostedService
from imhost.hosting.ports import DbBackend
from imhost.hosting.usage_journal import JournaledUsageSink, UsageJournal
from imhost.xmpp.server import XmppServer, ensure_self_signed_cert, make_tls_context

if TYPE_CHECKING:  # runtime stands above hosting: type only
    from imhost.runtime import Runtime

log = logging.getLogger(__name__)


class HostedXmppServer(XmppServer):
    """The XMPP server plus the database backend it owns (flushed and closed on stop) and its
    lease on the node's name (renewed while it runs, given back on stop)."""

    backend: DbBackend

    def __init__(
        self,
        *args: Any,
        backend: DbBackend,
        lease: nodes.NodeLease | None = None,
        usage_sink: JournaledUsageSink | None = None,
        usage_engine: Engine | None = None,
        **kw: Any,
    ) -> None:
        if lease is not None:
            kw["incarnation"] = lease.incarnation
        super().__init__(*args, usage=usage_sink or backend.usage, **kw)
        self.backend = backend
        self.lease = lease
        self.usage_sink = usage_sink
        self.usage_engine = usage_engine
        self._renewer: asyncio.Task[None] | None = None

    def keep_lease(self) -> None:
        """Renew the node's lease in the background until :meth:`stop`."""
        if self.lease is not None and self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew(self.lease))

    async def _renew(self, lease: nodes.NodeLease) -> None:
        factory = self.backend.factory
        while True:
            await asyncio.sleep(lease.renew_every)
            try:
                held = await asyncio.to_thread(nodes.renew_node, factory, self.clock, lease)
            except Exception:  # the database is away: try again at the next turn
                log.exception("renewing the lease of node %s failed", lease.node_id)
                continue
            if not held:
                log.error(
                    "node %s: another process took this node's name after its lease expired; "
                    "two processes now run as %s (usage stays apart: keys carry the "
                    "incarnation %s)",
                    lease.node_id,
                    lease.node_id,
                    lease.incarnation,
                )

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        try:
            await super().stop()  # the last count goes to the usage journal
            if self.usage_sink is not None:
                await self.usage_sink.close()
            await self.backend.close()
        finally:
            if self.usage_engine is not None:
                self.usage_engine.dispose()
            if self.lease is not None:
                lease, self.lease = self.lease, None
                await asyncio.to_thread(nodes.release_node, self.backend.factory, self.clock, lease)

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


USAGE_BUSY_SECONDS = 2.0
"""How long a usage write waits for SQLite's write lock before giving up until the next
second (the records stay in the journal meanwhile)."""


def usage_session_factory(runtime: Runtime) -> tuple[sessionmaker[Session], Engine | None]:
    """Sessions on a connection of their own for the engine's usage writes, so that they never
    queue behind web requests for a pooled connection, and on SQLite wait for the write lock
    only briefly. An in-memory SQLite database cannot be opened twice: its factory is reused."""
    engine = runtime.engine
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return runtime.session_factory, None
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "sqlite":
        usage_engine = make_engine(
            url, pool_size=1, max_overflow=1, connect_args={"timeout": USAGE_BUSY_SECONDS}
        )
    else:
        usage_engine = make_engine(url, pool_size=1, max_overflow=1)
    factory = sessionmaker(
        bind=usage_engine,
        expire_on_commit=False,
        info=dict(runtime.session_factory.kw.get("info") or {}),
    )
    return factory, usage_engine


def _domains(runtime: Runtime) -> list[str]:
    with transaction(runtime.session_factory) as session:
        return list(session.scalars(select(HostedService.domain)))


async def start_builtin_engine(runtime: Runtime, *, listen: bool = True) -> HostedXmppServer:
    """Build the server on the database ports, with TLS from the settings or a self-signed
    certificate in ``<data dir>/tls/``, start its listeners and return it."""
    settings = runtime.settings.xmpp
    lease = await asyncio.to_thread(
        nodes.claim_node,
        runtime.session_factory,
        runtime.clock,
        settings.node_id,
        settings.node_lease_seconds,
    )
    usage_factory, usage_engine = usage_session_factory(runtime)
    backend = DbBackend(
        runtime.session_factory,
        runtime.clock,
        runtime.settings.security,
        usage_factory=usage_factory,
    )
    usage_sink = JournaledUsageSink(
        backend.usage, UsageJournal(runtime.settings.data_dir, settings.node_id)
    )
    try:
        await backend.start()
        await usage_sink.start()
    except BaseException:
        await backend.close()
        if usage_engine is not None:
            usage_engine.dispose()
        await asyncio.to_thread(nodes.release_node, runtime.session_factory, runtime.clock, lease)
        raise
    if settings.certificate and settings.private_key:
        cert, key = settings.certificate, settings.private_key
    else:
        directory = settings.certificate_dir or runtime.settings.data_dir / "tls"
        cert, key = self_signed_certificate(directory, _domains(runtime))
    ssl_context, end_point = make_tls_context(cert, key)
    server = HostedXmppServer(
        settings,
        backend=backend,
        directory=backend.directory,
        auth=backend.auth,
        roster=backend.roster,
        offline=backend.storage,
        private=backend.private,
        vcard=backend.vcards,
        blocklist=backend.blocklist,
        muc=backend.rooms,
        archive=backend.archive,
        usage_sink=usage_sink,
        usage_engine=usage_engine,
        client_versions=backend.client_versions,  # XEP-0092 answers, kept for support
        clock=runtime.clock,
        ssl_context=ssl_context,
        tls_server_end_point=end_point,
        lease=lease,
    )
    try:
        await server.start(listen=listen)
    except BaseException:
        await usage_sink.close()
        await backend.close()
        if usage_engine is not None:
            usage_engine.dispose()
        await asyncio.to_thread(nodes.release_node, runtime.session_factory, runtime.clock, lease)
        raise
    server.keep_lease()
    return server
