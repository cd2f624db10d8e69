"""In-memory implementation of every port in :mod:`imhost.xmpp.ports`.

Used by the tests, the benchmark and ``python -m imhost.xmpp``; it is also the reference for
the database-backed implementation in ``hosting/``: the semantics here are the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from imhost.kit.clock import Clock, SystemClock
from imhost.kit.jid import prepare_domain, prepare_localpart
from imhost.kit.lockout import (
    AttemptKeys,
    LockoutModel,
    ThrottlePolicy,
    ThrottleState,
    record_failure,
)
from imhost.kit.scram import ScramCredentials, ScramHash, derive_credentials

from .ports import (
    ArchivedMessage,
    ArchiveFilter,
    ArchivePage,
    ArchivePrefs,
    AuthAdmission,
    AuthAttempt,
    HostLimits,
    HostListener,
    HostStatus,
    OfflineMessage,
    PrivateStoreView,
    RosterItem,
    StorageFull,
    StoredRoom,
    UnknownArchiveId,
    UsageRecord,
    VirtualHost,
)


def _archive_key(message: ArchivedMessage) -> tuple[datetime, str]:
    return (message.stamp, message.id)


def archive_matches(message: ArchivedMessage, f: ArchiveFilter) -> bool:
    """Whether an archived message matches the XEP-0313 fields of ``f`` other than the ids
    (the reference for the database's query)."""
    if f.with_jid is not None:
        bare, _, resource = f.with_jid.partition("/")
        if message.with_jid != bare or (resource and message.with_resource != resource):
            return False
    if f.start is not None and message.stamp < f.start:
        return False
    if f.end is not None and message.stamp > f.end:
        return False
    if f.text:
        body = message.text.casefold()
        if not all(word in body for word in f.text.casefold().split()):
            return False
    return True


def page_of(
    matching: list[ArchivedMessage], limit: int, *, backward: bool, count: int
) -> ArchivePage:
    """The XEP-0059 page of ``matching`` (already cut at ``after``/``before``): its first
    ``limit`` messages forward, its last ``limit`` backward."""
    page = matching[-limit:] if backward and limit else matching[:limit]
    return ArchivePage(page, len(matching) <= limit, count)


@dataclass(slots=True)
class MemoryAccount:
    credentials: dict[ScramHash, ScramCredentials]
    disabled_reason: str | None = None


@dataclass(slots=True)
class _Roster:
    version: int = 0
    items: dict[str, RosterItem] = field(default_factory=dict)
    pending_in: dict[str, str] = field(default_factory=dict)


class MemoryBackend:
    """All ports in one object: HostDirectory, AccountAuth, stores, ClientVersionLog, UsageSink.

    Brute-force protection is the one model of :mod:`imhost.kit.lockout` (as in the database
    backend): ``lockout_threshold`` failures of one account from one address lock that pair
    for ``lockout_seconds`` (growing), twice as many from addresses it has not signed in
    from hold back those addresses, and 20 from one address lock the address.
    """

    def __init__(
        self,
        *,
        iterations: int = 4096,
        lockout_threshold: int = 5,
        lockout_seconds: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self.hosts: dict[str, VirtualHost] = {}
        self.accounts: dict[tuple[str, str], MemoryAccount] = {}
        self.iterations = iterations
        wait = max(1, round(lockout_seconds))
        self.lockout = LockoutModel(
            pair=ThrottlePolicy(
                threshold=lockout_threshold, wait_seconds=wait, max_wait_seconds=max(wait, 900)
            ),
            person=ThrottlePolicy(
                threshold=2 * lockout_threshold, wait_seconds=wait, max_wait_seconds=max(wait, 900)
            ),
            address=ThrottlePolicy(
                threshold=20, wait_seconds=wait, max_wait_seconds=max(wait, 900), delays=(0.0,)
            ),
        )
        self.clock: Clock = clock or SystemClock()
        self.throttles: dict[str, ThrottleState] = {}
        self.auth_log: list[AuthAttempt] = []
        self.rosters: dict[tuple[str, str], _Roster] = {}
        self.offline: dict[tuple[str, str], list[OfflineMessage]] = {}
        self.private: dict[tuple[str, str, str], str] = {}
        self.vcards: dict[tuple[str, str], str] = {}
        self.offline_bytes: dict[str, int] = {}
        self.private_bytes: dict[str, int] = {}
        """Stored bytes per host, kept exact by every write and deletion (no scan per write)."""
        self.blocklists: dict[tuple[str, str], set[str]] = {}
        self.usage: list[UsageRecord] = []
        self.usage_keys: set[str] = set()
        self.fail_sink = False
        self.client_versions: dict[tuple[str, str], str] = {}
        self.archives: dict[tuple[str, str], list[ArchivedMessage]] = {}
        """XEP-0313 archives by (domain, localpart), ordered by (stamp, id)."""
        self.archive_index: dict[tuple[str, str], dict[str, ArchivedMessage]] = {}
        self.archive_prefs: dict[tuple[str, str], ArchivePrefs] = {}
        self.archive_bytes: dict[str, int] = {}
        self.rooms: dict[str, dict[str, StoredRoom]] = {}
        """Persistent XEP-0045 rooms: hosted domain -> room name -> room."""
        self._listeners: list[HostListener] = []

    # -- administration helpers (what the control plane would do) ---------------------------

    def add_host(
        self, domain: str, *, service_id: str | None = None, limits: HostLimits | None = None
    ) -> VirtualHost:
        domain = prepare_domain(domain)
        host = VirtualHost(
            domain=domain, service_id=service_id or domain, limits=limits or HostLimits()
        )
        self.put_host(host)
        return host

    def put_host(self, host: VirtualHost) -> None:
        self.hosts[host.domain] = host
        for listener in list(self._listeners):
            listener.on_host_changed(host)

    def suspend_host(self, domain: str, reason: str) -> None:
        self.put_host(
            replace(self.hosts[domain], status=HostStatus.SUSPENDED, status_reason=reason)
        )

    def reactivate_host(self, domain: str) -> None:
        self.put_host(replace(self.hosts[domain], status=HostStatus.ACTIVE, status_reason=""))

    def remove_host(self, domain: str) -> None:
        self.hosts.pop(domain, None)
        for listener in list(self._listeners):
            listener.on_host_removed(domain)

    def create_account(self, domain: str, localpart: str, password: str) -> None:
        """Create (or reset) an account from a plain password; only SCRAM keys are kept."""
        key = (prepare_domain(domain), prepare_localpart(localpart))
        self.accounts[key] = MemoryAccount(
            credentials={
                h: derive_credentials(password, h, iterations=self.iterations) for h in ScramHash
            }
        )

    def disable_account(self, domain: str, localpart: str, reason: str) -> None:
        self.accounts[(domain, localpart)].disabled_reason = reason
        for listener in list(self._listeners):
            listener.on_account_disabled(domain, localpart, reason)

    def destroy_room(self, domain: str, name: str, reason: str) -> None:
        """Staff destroy a room: forget it, and tell the engine (occupants are told)."""
        self.rooms.get(domain, {}).pop(name, None)
        for listener in list(self._listeners):
            listener.on_room_destroyed(domain, name, reason)

    def delete_account(self, domain: str, localpart: str) -> None:
        self.accounts.pop((domain, localpart), None)
        for listener in list(self._listeners):
            listener.on_account_disabled(domain, localpart, "account deleted")

    # -- HostDirectory ----------------------------------------------------------------------

    async def list_hosts(self) -> Sequence[VirtualHost]:
        return list(self.hosts.values())

    async def get_host(self, domain: str) -> VirtualHost | None:
        return self.hosts.get(domain)

    def add_listener(self, listener: HostListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: HostListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- AccountAuth ------------------------------------------------------------------------

    async def get_credentials(
        self, domain: str, localpart: str, h: ScramHash
    ) -> ScramCredentials | None:
        account = self.accounts.get((domain, localpart))
        return account.credentials.get(h) if account else None

    async def account_disabled(self, domain: str, localpart: str) -> str | None:
        account = self.accounts.get((domain, localpart))
        return account.disabled_reason if account else None

    async def account_exists(self, domain: str, localpart: str) -> bool:
        return (domain, localpart) in self.accounts

    @staticmethod
    def _auth_keys(domain: str, localpart: str, address: str) -> AttemptKeys:
        person = f"xmpp:{localpart}@{domain}"
        if not address:
            return AttemptKeys(person=person)
        return AttemptKeys(
            person=person, pair=f"pair:{person}@{address}", address=f"address:{address}"
        )

    async def admit_auth(self, domain: str, localpart: str, address: str) -> AuthAdmission:
        # One event loop, no await between the decision and the count: atomic.
        keys = self._auth_keys(domain, localpart, address)
        admission, new = self.lockout.admit(keys, self.throttles, self.clock.now())
        self.throttles.update(new)
        decision = admission.decision
        return AuthAdmission(
            allowed=decision.allowed,
            delay_seconds=decision.delay_seconds,
            retry_after_seconds=decision.retry_after_seconds,
        )

    async def report_auth(self, attempt: AuthAttempt) -> None:
        self.auth_log.append(attempt)
        now = self.clock.now()
        if not attempt.localpart:
            if attempt.address:
                key = f"address:{attempt.address}"
                empty = ThrottleState()
                self.throttles[key] = record_failure(
                    self.throttles.get(key, empty), now, self.lockout.address
                )
            return
        keys = self._auth_keys(attempt.domain, attempt.localpart, attempt.address)
        if attempt.success:
            self.throttles.update(self.lockout.settle_success(keys, None, self.throttles, now))
        else:
            self.throttles.update(self.lockout.address_failure(keys, self.throttles, now))

    async def set_password(self, domain: str, localpart: str, password: str) -> None:
        if len(password) < 8:
            raise ValueError("the password must have at least 8 characters")
        if (domain, localpart) not in self.accounts:
            raise ValueError("no such account")
        self.create_account(domain, localpart, password)

    async def register_account(self, domain: str, localpart: str, password: str) -> None:
        if (domain, localpart) in self.accounts:
            raise ValueError("this username is taken")
        host = self.hosts.get(domain)
        limit = host.limits.max_accounts if host else None
        if limit is not None and await self.count_accounts(domain) >= limit:
            raise ValueError("this service has reached its number of accounts")
        if len(password) < 8:
            raise ValueError("the password must have at least 8 characters")
        self.create_account(domain, localpart, password)

    async def count_accounts(self, domain: str) -> int:
        return sum(1 for d, _ in self.accounts if d == domain)

    # -- RosterStore ------------------------------------------------------------------------

    def _roster(self, domain: str, localpart: str) -> _Roster:
        return self.rosters.setdefault((domain, localpart), _Roster())

    async def get_roster(self, domain: str, localpart: str) -> tuple[str, list[RosterItem]]:
        roster = self._roster(domain, localpart)
        return str(roster.version), list(roster.items.values())

    async def set_item(self, domain: str, localpart: str, item: RosterItem) -> str:
        roster = self._roster(domain, localpart)
        roster.items[item.jid] = item
        roster.version += 1
        return str(roster.version)

    async def remove_item(self, domain: str, localpart: str, jid: str) -> str:
        roster = self._roster(domain, localpart)
        if roster.items.pop(jid, None) is not None:
            roster.version += 1
        return str(roster.version)

    async def get_pending_in(self, domain: str, localpart: str) -> dict[str, str]:
        return dict(self._roster(domain, localpart).pending_in)

    async def set_pending_in(self, domain: str, localpart: str, jid: str, stanza: str) -> None:
        self._roster(domain, localpart).pending_in[jid] = stanza

    async def remove_pending_in(self, domain: str, localpart: str, jid: str) -> None:
        self._roster(domain, localpart).pending_in.pop(jid, None)

    # -- OfflineStore -----------------------------------------------------------------------

    def stored_bytes(self, domain: str) -> int:
        """Offline and private bytes of a host: what ``max_storage_bytes`` limits."""
        return self.offline_bytes.get(domain, 0) + self.private_bytes.get(domain, 0)

    def _check_storage(self, domain: str, growth: int, max_host_bytes: int | None) -> None:
        if max_host_bytes is None or growth <= 0:
            return
        if self.stored_bytes(domain) + growth > max_host_bytes:
            raise StorageFull(domain, max_host_bytes)

    async def push(
        self,
        domain: str,
        localpart: str,
        stanza: str,
        stored_at: datetime,
        limit: int,
        max_host_bytes: int | None = None,
    ) -> bool:
        queue = self.offline.setdefault((domain, localpart), [])
        if len(queue) >= limit:
            return False
        size = len(stanza.encode())
        self._check_storage(domain, size, max_host_bytes)
        queue.append(OfflineMessage(stanza, stored_at))
        self.offline_bytes[domain] = self.offline_bytes.get(domain, 0) + size
        return True

    async def pop_all(self, domain: str, localpart: str) -> list[OfflineMessage]:
        messages = self.offline.pop((domain, localpart), [])
        if messages:
            freed = sum(len(m.stanza.encode()) for m in messages)
            self.offline_bytes[domain] = self.offline_bytes.get(domain, 0) - freed
        return messages

    async def count(self, domain: str, localpart: str) -> int:
        return len(self.offline.get((domain, localpart), ()))

    async def bytes_used(self, domain: str) -> int:
        return self.offline_bytes.get(domain, 0)

    # -- PrivateStore -----------------------------------------------------------------------

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None:
        return self.private.get((domain, localpart, key))

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None:
        new = dict(items)  # a key given twice: the last one wins
        growth = 0
        for key, xml in new.items():
            old = self.private.get((domain, localpart, key))
            growth += len(xml.encode()) - (len(old.encode()) if old is not None else 0)
        self._check_storage(domain, growth, max_host_bytes)
        for key, xml in new.items():
            self.private[(domain, localpart, key)] = xml
        self.private_bytes[domain] = self.private_bytes.get(domain, 0) + growth

    async def private_bytes_used(self, domain: str) -> int:
        return self.private_bytes.get(domain, 0)

    # -- VCardStore -------------------------------------------------------------------------

    async def get_vcard(self, domain: str, localpart: str) -> str | None:
        return self.vcards.get((domain, localpart))

    async def set_vcard(self, domain: str, localpart: str, xml: str) -> None:
        self.vcards[(domain, localpart)] = xml

    # -- BlockListStore ---------------------------------------------------------------------

    async def get_blocklist(self, domain: str, localpart: str) -> set[str]:
        return set(self.blocklists.get((domain, localpart), ()))

    async def block(self, domain: str, localpart: str, jids: Sequence[str]) -> None:
        self.blocklists.setdefault((domain, localpart), set()).update(jids)

    async def unblock(self, domain: str, localpart: str, jids: Sequence[str] | None) -> None:
        if jids is None:
            self.blocklists.pop((domain, localpart), None)
        else:
            self.blocklists.get((domain, localpart), set()).difference_update(jids)

    # -- MucStore ---------------------------------------------------------------------------

    async def load_rooms(self, domain: str) -> list[StoredRoom]:
        return sorted(self.rooms.get(domain, {}).values(), key=lambda r: r.name)

    async def save_room(self, domain: str, room: StoredRoom) -> None:
        self.rooms.setdefault(domain, {})[room.name] = room

    async def delete_room(self, domain: str, name: str) -> None:
        self.rooms.get(domain, {}).pop(name, None)

    # -- ArchiveStore -----------------------------------------------------------------------

    async def append(self, messages: Sequence[ArchivedMessage]) -> None:
        for message in messages:
            key = (message.domain, message.localpart)
            if key not in self.accounts:
                continue
            index = self.archive_index.setdefault(key, {})
            if message.id in index:
                continue
            index[message.id] = message
            archive = self.archives.setdefault(key, [])
            archive.append(message)
            if len(archive) > 1 and _archive_key(archive[-2]) > _archive_key(message):
                archive.sort(key=_archive_key)
            domain = message.domain
            self.archive_bytes[domain] = self.archive_bytes.get(domain, 0) + message.size

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
        key = (domain, localpart)
        index = self.archive_index.get(key, {})

        def find(archive_id: str) -> tuple[datetime, str]:
            found = index.get(archive_id)
            if found is None:
                raise UnknownArchiveId(archive_id)
            return _archive_key(found)

        low = [find(after)] if after is not None else []
        high = [find(before)] if before else []
        wanted = {i: find(i) for i in filter.ids}
        matching = [
            m
            for m in self.archives.get(key, [])
            if archive_matches(m, filter) and (not wanted or m.id in wanted)
        ]
        filter_low = [find(filter.after_id)] if filter.after_id else []
        filter_high = [find(filter.before_id)] if filter.before_id else []
        matching = [
            m
            for m in matching
            if all(_archive_key(m) > k for k in filter_low)
            and all(_archive_key(m) < k for k in filter_high)
        ]
        count = len(matching)
        cut = [
            m
            for m in matching
            if all(_archive_key(m) > k for k in low) and all(_archive_key(m) < k for k in high)
        ]
        return page_of(cut, limit, backward=last or before is not None, count=count)

    async def get_prefs(self, domain: str, localpart: str) -> ArchivePrefs | None:
        return self.archive_prefs.get((domain, localpart))

    async def set_prefs(self, domain: str, localpart: str, prefs: ArchivePrefs) -> None:
        self.archive_prefs[(domain, localpart)] = prefs

    async def archive_bytes_used(self, domain: str) -> int:
        return self.archive_bytes.get(domain, 0)

    def expire_archive(self, domain: str, before: datetime) -> int:
        """Delete the host's archived messages older than ``before`` (retention); returns
        how many went."""
        removed = 0
        for (d, localpart), archive in self.archives.items():
            if d != domain:
                continue
            old = [m for m in archive if m.stamp < before]
            if not old:
                continue
            archive[:] = [m for m in archive if m.stamp >= before]
            index = self.archive_index[(d, localpart)]
            for m in old:
                index.pop(m.id, None)
            removed += len(old)
            self.archive_bytes[domain] -= sum(m.size for m in old)
        return removed

    # -- ClientVersionLog -------------------------------------------------------------------

    def note_client_version(self, domain: str, localpart: str, version: str) -> None:
        self.client_versions[(domain, localpart)] = version

    # -- UsageSink --------------------------------------------------------------------------

    async def record(self, records: list[UsageRecord]) -> None:
        if self.fail_sink:
            raise ConnectionError("usage sink unavailable (test switch)")
        for rec in records:
            if rec.idempotency_key in self.usage_keys:
                continue
            self.usage_keys.add(rec.idempotency_key)
            self.usage.append(rec)

    def usage_total(self, host: str, metric: str) -> int:
        return sum(r.quantity for r in self.usage if r.host == host and r.metric == metric)


class MemoryPrivateStore(PrivateStoreView):
    """``PrivateStore`` view of a :class:`MemoryBackend` (XEP-0049)."""
