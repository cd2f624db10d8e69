"""The XMPP server: listeners, TLS, hosts from the directory, modules, metering.

::

    server = XmppServer(settings.xmpp, directory=..., auth=..., roster=..., offline=...,
                        private=..., vcard=..., blocklist=..., usage=...,
                        client_versions=..., modules=DEFAULT_MODULES)
    await server.start()          # listens on c2s_port (STARTTLS) and c2s_direct_tls_port
    await server.serve_websocket(adapter)   # one RFC 7395 connection, from the web app
    server.metrics_snapshot()     # per-host counters for /metrics
    await server.stop()           # closes streams (system-shutdown), flushes metering
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from imhost.config import XmppSettings
from imhost.kit.clock import Clock, SystemClock

from .core.admission import ConnectionAdmission
from .core.errors import StreamErrorCondition
from .core.metering import Meter
from .core.router import HostState, Router, Stores
from .core.stream import C2SStream, State, StreamServices, spawn
from .modules.api import Module, ModuleContext
from .modules.defaults import DEFAULT_MODULES
from .modules.muc.service import MucModule, RoomSummary
from .ports import (
    AccountAuth,
    ArchivedMessage,
    ArchiveFilter,
    ArchivePage,
    ArchivePrefs,
    ArchiveStore,
    BlockListStore,
    ClientVersionLog,
    HostDirectory,
    MucStore,
    OfflineStore,
    PrivateStore,
    RosterStore,
    UnknownArchiveId,
    UsageSink,
    VCardStore,
    VirtualHost,
)

log = logging.getLogger("imhost.xmpp.server")


class _NoArchive:
    """The ``ArchiveStore`` of a server given none: it keeps nothing (no account is known)."""

    async def append(self, messages: Sequence[ArchivedMessage]) -> None:
        return None

    async def query(
        self,
        domain: str,
        localpart: str,
        filter: ArchiveFilter,
        *,
        after: str | None = None,
        before: str | None = None,
        last: bool = False,
        limit: int = 50,
    ) -> ArchivePage:
        for archive_id in (after, before, filter.after_id, filter.before_id, *filter.ids):
            if archive_id:
                raise UnknownArchiveId(archive_id)
        return ArchivePage([], True, 0)

    async def get_prefs(self, domain: str, localpart: str) -> ArchivePrefs | None:
        return None

    async def set_prefs(self, domain: str, localpart: str, prefs: ArchivePrefs) -> None:
        return None

    async def archive_bytes_used(self, domain: str) -> int:
        return 0


NO_ARCHIVE = _NoArchive()


class WebSocketAdapter(Protocol):
    """What :meth:`XmppServer.serve_websocket` needs from a WebSocket (RFC 7395).

    The web layer accepts the connection with subprotocol ``xmpp`` and passes an adapter.
    ``receive_text`` raises (any exception) when the peer disconnects.
    """

    client_address: str
    """The client's IP address ("" when unknown): per-address limits apply to it."""
    is_secure: bool
    """wss, or TLS terminated in front: PLAIN may be offered."""

    async def receive_text(self) -> str: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


class _WsTransport:
    """Presents a WebSocket as the small transport a :class:`C2SStream` writes to."""

    def __init__(self, adapter: WebSocketAdapter) -> None:
        self.adapter = adapter
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.size = 0
        self.closing = False
        self.address = adapter.client_address
        self.secure = adapter.is_secure

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.size += len(data)
            self.queue.put_nowait(data.decode())

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.queue.put_nowait(None)

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.address, 0)
        if name == "secure":
            return self.secure
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.size

    async def run_sender(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                break
            self.size -= len(item)
            try:
                await self.adapter.send_text(item)
            except Exception:  # noqa: BLE001 - peer went away, whatever the framework raises
                break
        try:
            await self.adapter.close()
        except Exception:
            log.debug("websocket close failed", exc_info=True)


def ensure_self_signed_cert(directory: Path, hostnames: Sequence[str]) -> tuple[Path, Path]:
    """Return (cert, key) paths in ``directory``, generating a self-signed pair if absent.

    EC P-256 key, SANs for every hostname (and ``*.`` of each), valid for 825 days.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "xmpp-cert.pem"
    key_path = directory / "xmpp-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    names = [h for h in hostnames if h] or ["localhost"]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
            if not name.startswith("*."):
                sans.append(x509.DNSName("*." + name))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def make_tls_context(cert: Path, key: Path) -> tuple[ssl.SSLContext, bytes]:
    """A server context per RFC 7590 / RFC 7525: TLS 1.2+, AEAD ciphers with forward secrecy,
    no compression, ALPN ``xmpp-client`` (XEP-0368). Also returns the RFC 5929
    tls-server-end-point channel binding data of the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from imhost.kit.scram import tls_server_end_point

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["xmpp-client"])
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
    return ctx, tls_server_end_point(der)


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``), after many parsers were
    freed at once; a no-op where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return


def check_modules(modules: Sequence[type[Module]]) -> list[type[Module]]:
    """The module list, checked: names are unique and each module's ``depends`` come
    before it. Raises ValueError with what to fix (a server never starts half-equipped)."""
    seen: list[type[Module]] = []
    names: set[str] = set()
    for cls in modules:
        if cls.name in names:
            raise ValueError(f"the module name {cls.name!r} is used twice in the module list")
        for needed in cls.depends:
            if needed not in seen:
                raise ValueError(
                    f"the {cls.name} module needs the {needed.name} module loaded before it"
                )
        names.add(cls.name)
        seen.append(cls)
    return seen


class DirectTlsAcceptor(asyncio.Protocol):
    """A Direct TLS (XEP-0368) connection from accept to the end of its TLS handshake.

    Admission (rate and cap per address) is decided at accept, before the handshake costs
    anything: a refused connection is closed at once (no stream error can be sent before
    TLS). An admitted one counts as unauthenticated from then on and has
    ``tls_handshake_timeout_seconds`` to complete the handshake; then the stream begins.
    """

    def __init__(self, server: XmppServer, ctx: ssl.SSLContext) -> None:
        self.server = server
        self.ctx = ctx
        self.address = ""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Future[None] | None = None
        self.early: list[bytes] = []
        """Decrypted bytes that arrived between the handshake's end and the stream's start."""
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self.server.services.admission.admit(self.address)
        if refusal is not None:
            log.debug("direct TLS connection from %s refused: %s", self.address, refusal)
            transport.abort()
            return
        transport.pause_reading()  # the ClientHello waits in the socket for the handshake
        self.transport = transport
        self.server.handshakes.add(self)
        self.task = spawn(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        services = self.server.services
        loop = asyncio.get_running_loop()
        try:
            # this object stays the protocol until the stream takes over (see ``early``)
            tls = await loop.start_tls(
                transport,
                self,
                self.ctx,
                server_side=True,
                ssl_handshake_timeout=services.settings.tls_handshake_timeout_seconds,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError, asyncio.CancelledError):
            self.abandon()
            return
        finally:
            self.server.handshakes.discard(self)
        if tls is None:
            self.abandon()
            return
        self.transport = None
        stream = C2SStream(services, tls=True)
        tls.set_protocol(stream)
        stream.attach(tls, admitted=True)
        early, self.early = b"".join(self.early), []
        if early:
            stream.data_received(early)
        if self.lost:
            stream.connection_lost(None)

    def abandon(self) -> None:
        """The handshake failed, timed out or the server stops: close and stop counting."""
        transport = self.transport
        if transport is None:
            return
        self.transport = None
        self.server.services.admission.release(self.address)
        self.server.handshakes_failed += 1
        transport.abort()

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # before or during the handshake, start_tls fails and the connection is abandoned
        self.lost = True


class XmppServer:
    """The data plane. Hosts come from the directory and follow its changes at runtime.

    ``modules`` are the module classes every host loads, in this order (by default
    :data:`~imhost.xmpp.modules.defaults.DEFAULT_MODULES`, a plain list); ``client_versions``
    keeps what client software each account uses (XEP-0092) for support; ``muc`` keeps the
    persistent rooms (XEP-0045; without it they last for this run only); ``archive`` keeps
    the accounts' message archives (XEP-0313; without it nothing is archived).
    """

    def __init__(
        self,
        settings: XmppSettings,
        *,
        directory: HostDirectory,
        auth: AccountAuth,
        roster: RosterStore,
        offline: OfflineStore,
        private: PrivateStore,
        vcard: VCardStore,
        blocklist: BlockListStore,
        usage: UsageSink | None,
        client_versions: ClientVersionLog | None = None,
        muc: MucStore | None = None,
        archive: ArchiveStore | None = None,
        clock: Clock | None = None,
        modules: Sequence[type[Module]] = DEFAULT_MODULES,
        ssl_context: ssl.SSLContext | None = None,
        tls_server_end_point: bytes | None = None,
        incarnation: str | None = None,
    ) -> None:
        """``incarnation`` names this run of the node in usage keys (random if not given;
        the built-in engine passes the one its node lease issued)."""
        self.settings = settings
        self.directory = directory
        self.clock = clock or SystemClock()
        if muc is None:
            from .memory import MemoryBackend

            muc = MemoryBackend()  # rooms kept for this run only
        archive_store: ArchiveStore = archive if archive is not None else NO_ARCHIVE
        self.stores = Stores(auth, roster, offline, private, vcard, blocklist, muc, archive_store)
        self.meter = Meter(
            usage,
            self.clock,
            settings.node_id,
            settings.metering_flush_seconds,
            offline=offline,
            private=private,
            incarnation=incarnation,
            archive=archive,
        )
        self.router = Router(self.stores, self.meter, self.clock)
        self.router.module_factory = self._load_modules
        self.module_classes = check_modules(modules)
        self.client_versions = client_versions
        self.ssl_context = ssl_context
        self.services = StreamServices(
            router=self.router,
            settings=settings,
            clock=self.clock,
            ssl_context=ssl_context,
            tls_server_end_point=tls_server_end_point,
            secret=secrets.token_bytes(32),
            admission=ConnectionAdmission(settings, self.clock),
        )
        self.handshakes: set[DirectTlsAcceptor] = set()
        """Direct TLS connections admitted and still in their handshake."""
        self.handshakes_failed = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.c2s_port: int | None = None
        self.direct_tls_port: int | None = None
        self.started = False

    @classmethod
    def with_memory_backend(cls, settings: XmppSettings, backend: Any, **kw: Any) -> XmppServer:
        """Wire every port to one :class:`~imhost.xmpp.memory.MemoryBackend`."""
        from .memory import MemoryPrivateStore

        return cls(
            settings,
            directory=backend,
            auth=backend,
            roster=backend,
            offline=backend,
            private=MemoryPrivateStore(backend),
            vcard=backend,
            blocklist=backend,
            usage=backend,
            client_versions=backend,
            muc=backend,
            archive=backend,
            **kw,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def configure_tls(self) -> None:
        """TLS from settings, or a self-signed certificate generated on first start."""
        if self.ssl_context is not None:
            return
        s = self.settings
        if s.certificate and s.private_key:
            cert, key = s.certificate, s.private_key
        else:
            directory = s.certificate_dir or Path("imhost-data") / "tls"
            names = list(self.router.hosts) or ["localhost"]
            cert, key = ensure_self_signed_cert(directory, names)
        ctx, cb = make_tls_context(cert, key)
        self.ssl_context = self.services.ssl_context = ctx
        self.services.tls_server_end_point = cb

    async def load_hosts(self) -> None:
        for vhost in await self.directory.list_hosts():
            self.router.put_host(vhost)
        self.directory.add_listener(self)

    async def start(self, *, listen: bool = True) -> None:
        """Load hosts, start metering and (unless ``listen=False``) the TCP listeners."""
        if self.started:
            return
        self.started = True
        await self.load_hosts()
        self.meter.start()
        loop = asyncio.get_running_loop()
        if self.settings.idle_parser_seconds > 0:
            self._sweeper = loop.create_task(self._sweep())
        if not listen:
            return
        if self.ssl_context is None and (
            self.settings.require_encryption or self.settings.direct_tls_enabled
        ):
            self.configure_tls()
        s = self.settings
        services = self.services
        c2s = await loop.create_server(
            lambda: C2SStream(services),
            s.bind,
            s.c2s_port,
            backlog=s.listen_backlog,
            reuse_address=True,
        )
        self._servers.append(c2s)
        self.c2s_port = c2s.sockets[0].getsockname()[1]
        ctx = self.ssl_context
        if s.direct_tls_enabled and ctx is not None:
            # plain TCP: admission happens at accept, then DirectTlsAcceptor runs the handshake
            tls = await loop.create_server(
                lambda: DirectTlsAcceptor(self, ctx),
                s.bind,
                s.c2s_direct_tls_port,
                backlog=s.listen_backlog,
                reuse_address=True,
            )
            self._servers.append(tls)
            self.direct_tls_port = tls.sockets[0].getsockname()[1]
        log.info("XMPP c2s on %s:%s (direct TLS %s)", s.bind, self.c2s_port, self.direct_tls_port)

    async def stop(self) -> None:
        """Graceful stop: refuse new connections, close streams, flush metering."""
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pending in list(self.handshakes):
            if pending.task is not None:
                pending.task.cancel()
            pending.abandon()
        self.handshakes.clear()
        for stream in list(self.services.streams):
            stream.sm.resumable = False
            stream.close_with_error(StreamErrorCondition.SYSTEM_SHUTDOWN, "server is stopping")
        for host in self.router.hosts.values():
            for stream in host.all_sessions():
                stream.close_with_error(StreamErrorCondition.SYSTEM_SHUTDOWN)
        self.router._flush()
        await asyncio.sleep(0)
        for host in list(self.router.hosts.values()):
            for module in host.modules:
                try:
                    await module.stop()
                except Exception:
                    log.exception("stopping %s on %s failed", module.name, host.domain)
        self.directory.remove_listener(self)
        await self.meter.stop()
        self.started = False

    async def _sweep(self) -> None:
        """Free the parser of idle connections (memory per idle connection)."""
        interval = self.settings.idle_parser_seconds / 2
        failed = self.handshakes_failed
        while True:
            await asyncio.sleep(interval)
            parked = 0
            for stream in list(self.services.streams):
                if not stream.rx_seen and stream.park_parser():
                    parked += 1
                stream.rx_seen = False
            # many parsers or abandoned TLS handshakes freed: give the pages back to the OS
            if parked >= 64 or self.handshakes_failed - failed >= 64:
                _release_free_memory()
            failed = self.handshakes_failed

    # -- in-process and WebSocket connections -----------------------------------------------

    def new_stream(self, *, ws: bool = False, tls: bool = False) -> C2SStream:
        """A stream to attach to any transport (tests use an in-memory one)."""
        return C2SStream(self.services, ws=ws, tls=tls)

    async def serve_websocket(self, adapter: WebSocketAdapter) -> None:
        """Serve one RFC 7395 connection until it closes. The caller accepted it with the
        ``xmpp`` subprotocol; each text message is one XML element."""
        shim = _WsTransport(adapter)
        stream = C2SStream(self.services, ws=True)
        sender = asyncio.get_running_loop().create_task(shim.run_sender())
        stream.attach(shim)
        try:
            while not stream.closed:
                text = await adapter.receive_text()
                stream.data_received(text.encode("utf-8"))
        except Exception:  # disconnect, whatever the framework raises
            log.debug("websocket ended", exc_info=True)
        finally:
            if not stream.closed:
                stream.connection_lost(None)
            shim.close()
            try:
                await asyncio.wait_for(sender, 5)
            except (TimeoutError, Exception):  # noqa: BLE001
                sender.cancel()

    # -- HostListener -----------------------------------------------------------------------

    def on_host_changed(self, host: VirtualHost) -> None:
        state = self.router.put_host(host)
        if not host.active:
            text = host.status_reason or "this service is suspended"
            for stream in self._streams_of(state):
                stream.close_with_error(StreamErrorCondition.POLICY_VIOLATION, text)

    def on_host_removed(self, domain: str) -> None:
        state = self.router.hosts.get(domain)
        if state is None:
            return
        for stream in self._streams_of(state):
            stream.close_with_error(StreamErrorCondition.HOST_GONE, "this service was removed")
        for module in state.modules:
            try:
                module.unload()
                module.ctx.cancel_tasks()
            except Exception:
                log.exception("unloading %s failed", module)
        self.router.drop_host(domain)

    def on_account_disabled(self, domain: str, localpart: str, reason: str) -> None:
        state = self.router.hosts.get(domain)
        if state is None:
            return
        for stream in list(state.sessions.get(localpart, {}).values()):
            stream.close_with_error(StreamErrorCondition.POLICY_VIOLATION, reason)
        for stream in list(self.services.streams):
            if stream.host_state is state and stream.localpart == localpart and not stream.closed:
                stream.close_with_error(StreamErrorCondition.POLICY_VIOLATION, reason)

    def on_room_destroyed(self, domain: str, room: str, reason: str) -> None:
        muc = self._muc(domain)
        if muc is not None:
            muc.destroy(room, reason)

    def _muc(self, domain: str) -> MucModule | None:
        state = self.router.hosts.get(domain)
        if state is None:
            return None
        for module in state.modules:
            if isinstance(module, MucModule):
                return module
        return None

    def rooms(self, domain: str) -> list[RoomSummary]:
        """The rooms of a host's conference service now (temporary ones too), by name."""
        muc = self._muc(domain)
        return muc.room_summaries() if muc is not None else []

    def _streams_of(self, state: HostState) -> list[C2SStream]:
        found = {s for s in self.services.streams if s.host_state is state}
        found.update(state.all_sessions())
        return [s for s in found if s.state is not State.CLOSED]

    # -- modules ----------------------------------------------------------------------------

    def _load_modules(self, host: HostState) -> None:
        for cls in self.module_classes:
            ctx = ModuleContext(self.router, host, self.clock, self.client_versions)
            try:
                module = cls(ctx)
                module.load()
            except Exception:
                log.exception("module %s failed to load on %s", cls.__name__, host.domain)
                continue
            host.modules.append(module)

    # -- observability ----------------------------------------------------------------------

    def metrics_snapshot(self) -> dict[str, dict[str, int]]:
        """Cumulative counters per host: connections (current), stanzas_* and messages,
        bytes_in/out, auth_failures/successes. Render as Prometheus gauges/counters."""
        out: dict[str, dict[str, int]] = {}
        for domain, counters in self.meter.hosts.items():
            out[domain] = counters.snapshot()
        return out

    def engine_stats(self) -> dict[str, int]:
        """Process-wide figures: open streams, resumable sessions, pending usage records."""
        return {
            "streams": len(self.services.streams),
            "resumable_sessions": len(self.router.resumable),
            "usage_records_pending": len(self.meter.pending),
            "usage_records_dropped": self.meter.dropped,
            "auth_failures": self.services.auth_failures_total,
            "unauthenticated_connections": self.services.admission.total_unauthenticated(),
            "tls_handshakes_pending": len(self.handshakes),
            "connections_refused": self.services.admission.refused,
        }
