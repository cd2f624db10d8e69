"""The data plane's ports (:mod:`imhost.xmpp.ports`) backed by the database.

:class:`DbBackend` assembles one adapter per port from :mod:`imhost.hosting.dataplane`
(queries in :mod:`imhost.hosting.repository`), all sharing one ``DbRunner``, and owns them:
it starts them, runs their background work and closes them. The engine takes the adapters
from its attributes:

- ``directory`` (``HostDirectory``, :class:`DbHostDirectory`): hosts live in memory, in a
  :class:`HostCache` the other adapters read (loaded at start, then changed by committed
  service changes through :mod:`imhost.hosting.changes`, and re-read every
  ``host_refresh_seconds`` to pick up changes made by other processes such as the CLI);
- ``auth`` (``AccountAuth`` and ``ClientVersionLog``, :class:`DbAccountAuth`): credentials
  and account state cached for ``credential_ttl`` seconds (absent accounts for
  ``negative_ttl``) and dropped at once when an account changes, the served hosts' accounts
  read in one query at start; the brute-force states with a failure or a lock read in one
  query every ``throttle_refresh`` seconds (the trusted pairs once, at start), so that a
  login with nothing held against it reads and writes nothing at once;
  the auth-failure audit trail, ``last_login_at``, client versions and the trust of
  addresses that signed in written in batches once a second; it is also the cached account
  lookup of the stores;
- ``roster``, ``vcards``, ``blocklist``, ``usage``, ``rooms`` (``MucStore``: persistent
  XEP-0045 rooms), ``archive`` (``ArchiveStore``: the accounts' XEP-0313 archives, written
  in the engine's batches); ``storage`` (offline messages and
  private XML, both under the storage limit, counted per service, not by a SUM per write),
  whose ``PrivateStore`` view is ``private`` (:class:`DbPrivateStore`); what a session's
  start reads of them (roster, subscription requests, block list, whether offline messages
  wait) is read in one transaction, ``session_reads`` (:class:`SessionStartReads`).

The database is used through the synchronous session factory, always on the engine's one
database thread (``DbRunner``: the units run there one after the other), and the hot path
never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from imhost.config import SecuritySettings
from imhost.hosting.dataplane.archive import DbArchiveStore
from imhost.hosting.dataplane.auth import CREDENTIAL_TTL, DbAccountAuth
from imhost.hosting.dataplane.directory import DbHostDirectory
from imhost.hosting.dataplane.hosts import HostCache
from imhost.hosting.dataplane.rooms import DbMucStore
from imhost.hosting.dataplane.runner import DB_ATTEMPTS as DB_ATTEMPTS
from imhost.hosting.dataplane.runner import DbRunner
from imhost.hosting.dataplane.signin import SessionStartReads
from imhost.hosting.dataplane.storage import DbStorage
from imhost.hosting.dataplane.stores import DbBlockListStore, DbRosterStore, DbVCardStore
from imhost.hosting.dataplane.usage import DbUsageSink
from imhost.kit.clock import Clock
from imhost.kit.scram import DEFAULT_ITERATIONS
from imhost.xmpp.ports import PrivateStoreView

log = logging.getLogger(__name__)

HOST_REFRESH_SECONDS = 10.0
BATCH_SECONDS = 1.0


class DbBackend:
    """The database adapters of every port, built and owned together; see the module
    docstring."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        clock: Clock,
        security: SecuritySettings,
        *,
        credential_ttl: float = CREDENTIAL_TTL,
        negative_ttl: float = 5.0,
        host_refresh_seconds: float = HOST_REFRESH_SECONDS,
        batch_seconds: float = BATCH_SECONDS,
        iterations: int = DEFAULT_ITERATIONS,
        usage_factory: sessionmaker[Session] | None = None,
        bulk_reads: bool = True,
    ) -> None:
        self.factory = factory
        self.usage_factory = usage_factory or factory
        """Sessions for usage writes: their own connection (``engines/builtin.py``)."""
        self.clock = clock
        self.host_refresh_seconds = host_refresh_seconds
        self.batch_seconds = batch_seconds
        """How often the auth batches (last logins, trust, failures' audit) are written."""
        self.runner = DbRunner(factory)
        self.hosts = HostCache()
        self.auth = DbAccountAuth(
            self.runner,
            self.hosts,
            clock,
            security,
            credential_ttl=credential_ttl,
            negative_ttl=negative_ttl,
            iterations=iterations,
        )
        self.client_versions = self.auth
        self.session_reads = SessionStartReads(self.runner)
        self.roster = DbRosterStore(self.runner, self.auth, self.session_reads)
        self.vcards = DbVCardStore(self.runner, self.auth)
        self.blocklist = DbBlockListStore(self.runner, self.auth, self.session_reads)
        self.usage = DbUsageSink(self.runner, self.hosts, clock, self.usage_factory)
        self.storage = DbStorage(self.runner, self.auth, self.hosts, self.session_reads)
        self.private = DbPrivateStore(self.storage)
        self.rooms = DbMucStore(self.runner, self.hosts, clock)
        self.archive = DbArchiveStore(self.runner, self.auth, self.hosts)
        self.directory = DbHostDirectory(
            self.runner, factory, clock, self.hosts, accounts=self.auth, stored=self.storage
        )
        self.bulk_reads = bulk_reads
        """Read the accounts at start, and the held brute-force states at start and every
        ``throttle_refresh`` seconds, in bulk (False: every login reads its own)."""
        self.throttle_refresh = self.auth.throttle_ttl / 2
        """How often the held brute-force states are read (half their trust period)."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Load hosts and start the background task (batches, refresh). Idempotent."""
        await self.directory.start()
        if self._task is None and not self._closed:
            if self.bulk_reads:
                await self._warm()
            self._task = asyncio.get_running_loop().create_task(self._background())

    async def _warm(self) -> None:
        """The brute-force states held and the accounts' credentials, read in bulk at start
        (a burst of logins after a restart then reads neither)."""
        try:
            await self.auth.refresh_throttles()
            await self.auth.warm()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not fatal: logins then read their own account and states, as they always could.
            log.exception("reading the accounts at start failed; logins read their own")

    async def close(self) -> None:
        """Flush the batches, stop the background task and leave the change hub."""
        self._closed = True
        self.directory.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.auth.flush_batches()
        self.runner.close()

    async def _background(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(min(self.batch_seconds, self.host_refresh_seconds))
            try:
                await self.auth.flush_batches()
                if (
                    self.bulk_reads
                    and time.monotonic() - self.auth.throttles_read_at >= self.throttle_refresh
                ):
                    await self.auth.refresh_throttles()
                if time.monotonic() - last_refresh >= self.host_refresh_seconds:
                    last_refresh = time.monotonic()
                    await self.directory.refresh()
                    self.auth.prune()
                    self.session_reads.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hosting background work failed; retrying")


class DbPrivateStore(PrivateStoreView):
    """``PrivateStore`` view of the storage adapter (XEP-0049)."""
