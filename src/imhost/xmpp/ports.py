"""The data plane's ports: the only way the XMPP server talks to the control plane.

``hosting/`` implements these against the database; :mod:`imhost.xmpp.memory` implements
them in memory (tests, benchmark, reference). Every method is async and may be slow: the
server caches what it needs, and routing a message to an online user touches none of them.

Storage methods are keyed by ``(domain, localpart)``; both are already prepared (RFC 7622).
Stanzas given to or returned by stores are serialised XML strings in the ``jabber:client``
namespace (one element, no stream context).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from imhost.kit.scram import ScramCredentials, ScramHash

__all__ = [
    "AccountAuth",
    "ArchiveFilter",
    "ArchivePage",
    "ArchivePrefs",
    "ArchiveStore",
    "ArchivedMessage",
    "AuthAttempt",
    "BlockListStore",
    "ClientVersionLog",
    "HostDirectory",
    "HostLimits",
    "HostListener",
    "HostStatus",
    "MucStore",
    "OfflineMessage",
    "OfflineStore",
    "PrivateBackend",
    "PrivateStore",
    "PrivateStoreView",
    "RosterItem",
    "RosterStore",
    "ScramCredentials",
    "ScramHash",
    "StorageFull",
    "StoredRoom",
    "UnknownArchiveId",
    "UsageRecord",
    "UsageSink",
    "VCardStore",
    "VirtualHost",
]


class HostStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class HostLimits:
    """Plan limits of one hosted service (``None`` means unlimited)."""

    max_accounts: int | None = None
    max_connections: int | None = None
    """Concurrent c2s sessions for the whole service."""
    max_connections_per_account: int | None = 10
    message_rate: float | None = 50.0
    """Token bucket refill, messages per second per account (shaped, then refused)."""
    message_burst: int = 200
    """Token bucket size."""
    max_stanza_bytes: int = 262_144
    max_offline_messages: int = 1000
    max_storage_bytes: int | None = None
    """Bytes the host may store: its offline messages (XEP-0160) and private XML (XEP-0049),
    the bytes metered as ``offline_storage_bytes`` and ``private_storage_bytes``. A write that
    would go over it is refused (:class:`StorageFull`); a deletion or a write that does not
    grow the total always passes."""
    max_rooms: int | None = None
    """XEP-0045 rooms (temporary and persistent) the service's conference service may hold
    at once; creating one more is refused with ``resource-constraint``."""
    max_room_occupants: int | None = None
    """Occupants of one room; a room's own ``maxusers`` may be lower. Past it a join is
    refused with ``service-unavailable`` (XEP-0045 §7.2.10)."""
    registration_allowed: bool = False
    """XEP-0077 in-band registration of new accounts (password change is always allowed)."""
    federation_allowed: bool = False


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """One hosted service as the data plane sees it."""

    domain: str
    service_id: str
    status: HostStatus = HostStatus.ACTIVE
    status_reason: str = ""
    """Human-readable text shown to users when suspended (stream error / SASL failure)."""
    limits: HostLimits = field(default_factory=HostLimits)

    @property
    def active(self) -> bool:
        return self.status is HostStatus.ACTIVE


class HostListener(Protocol):
    """What the server gives :meth:`HostDirectory.add_listener` to hear changes at once."""

    def on_host_changed(self, host: VirtualHost) -> None:
        """A host was added or changed (limits, status). Suspension closes its sessions."""
        ...

    def on_host_removed(self, domain: str) -> None:
        """A host is gone: its sessions are closed with ``host-gone`` (RFC 6120 §4.9.3.5)."""
        ...

    def on_account_disabled(self, domain: str, localpart: str, reason: str) -> None:
        """An account was disabled or deleted: its sessions are closed."""
        ...

    def on_room_destroyed(self, domain: str, room: str, reason: str) -> None:
        """The provider's or the customer's staff destroyed a XEP-0045 room of the host's
        conference service (already gone from the ``MucStore``): its occupants are told
        (``<destroy/>`` with ``reason``) and it is forgotten."""
        ...


@runtime_checkable
class HostDirectory(Protocol):
    """Who the virtual hosts are."""

    async def list_hosts(self) -> Sequence[VirtualHost]: ...

    async def get_host(self, domain: str) -> VirtualHost | None: ...

    def add_listener(self, listener: HostListener) -> None:
        """Register a listener; the directory calls it on every change, from the event loop."""
        ...

    def remove_listener(self, listener: HostListener) -> None: ...


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One SASL outcome, for the control plane's brute-force protection."""

    domain: str
    localpart: str
    address: str
    """Client IP address (or "" when unknown, e.g. behind a proxy)."""
    success: bool
    mechanism: str


@dataclass(frozen=True, slots=True)
class AuthAdmission:
    """The brute-force model's answer to one SASL attempt."""

    allowed: bool
    delay_seconds: float = 0.0
    """Seconds to wait before answering the attempt (success or failure alike)."""
    retry_after_seconds: int = 0


class AccountAuth(Protocol):
    """Authentication and account state."""

    async def get_credentials(
        self, domain: str, localpart: str, h: ScramHash
    ) -> ScramCredentials | None:
        """Stored SCRAM keys for this hash, or None if the account does not exist."""
        ...

    async def account_disabled(self, domain: str, localpart: str) -> str | None:
        """The reason if this account is disabled, else None."""
        ...

    async def account_exists(self, domain: str, localpart: str) -> bool: ...

    async def admit_auth(self, domain: str, localpart: str, address: str) -> AuthAdmission:
        """Decide one SASL attempt before its credential is checked (docs/security.md,
        "Brute-force protection": the same model as the web sign-in).

        An allowed attempt is counted as a failure at once, atomically with the decision, so
        parallel attempts never get past a limit; a success reported through
        :meth:`report_auth` gives the count back. The stream sleeps ``delay_seconds`` before
        it answers the attempt, whatever the answer.
        """
        ...

    async def report_auth(self, attempt: AuthAttempt) -> None:
        """Record a SASL outcome (a failure of an attempt without a valid username is
        counted against the address here; other failures were counted on admission)."""
        ...

    async def set_password(self, domain: str, localpart: str, password: str) -> None:
        """XEP-0077 password change; raises ValueError with a message if policy refuses it."""
        ...

    async def register_account(self, domain: str, localpart: str, password: str) -> None:
        """XEP-0077 registration (only when the host allows it); ValueError if refused."""
        ...

    async def count_accounts(self, domain: str) -> int: ...


@dataclass(frozen=True, slots=True)
class RosterItem:
    """RFC 6121 §2.1.2 roster item plus the subscription state of §3 (Appendix A)."""

    jid: str
    """Bare JID of the contact."""
    name: str | None = None
    subscription: str = "none"
    """One of none, to, from, both."""
    ask: bool = False
    """Pending outbound subscription request ("ask='subscribe'")."""
    approved: bool = False
    """Pre-approved inbound subscription (RFC 6121 §3.4)."""
    groups: tuple[str, ...] = ()


class RosterStore(Protocol):
    async def get_roster(self, domain: str, localpart: str) -> tuple[str, list[RosterItem]]:
        """The roster and its current version string (RFC 6121 §2.6)."""
        ...

    async def set_item(self, domain: str, localpart: str, item: RosterItem) -> str:
        """Insert or replace an item; return the new roster version."""
        ...

    async def remove_item(self, domain: str, localpart: str, jid: str) -> str:
        """Remove an item (no error if absent); return the new roster version."""
        ...

    async def get_pending_in(self, domain: str, localpart: str) -> dict[str, str]:
        """Inbound subscription requests not yet answered: bare JID -> presence stanza XML."""
        ...

    async def set_pending_in(self, domain: str, localpart: str, jid: str, stanza: str) -> None: ...

    async def remove_pending_in(self, domain: str, localpart: str, jid: str) -> None: ...


class StorageFull(Exception):
    """A write refused: it would take the host over ``HostLimits.max_storage_bytes``.

    ``str()`` is a sentence for the person whose write was refused.
    """

    def __init__(self, domain: str, limit: int) -> None:
        self.domain = domain
        self.limit = limit
        super().__init__(
            f"the storage of {domain} is full (its plan allows {format_storage(limit)})"
        )


def format_storage(n: int) -> str:
    """Bytes as a person reads a plan's storage: decimal megabytes (1 MB = 10^6 bytes)."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000:,} MB"
    if n >= 1_000_000:
        return f"{n / 1_000_000:,.1f} MB"
    return f"{n:,} bytes"


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    stanza: str
    stored_at: datetime


class OfflineStore(Protocol):
    """XEP-0160 offline storage."""

    async def push(
        self,
        domain: str,
        localpart: str,
        stanza: str,
        stored_at: datetime,
        limit: int,
        max_host_bytes: int | None = None,
    ) -> bool:
        """Store one message; False (nothing stored) if the account already holds ``limit``.

        Raises :class:`StorageFull` (nothing stored) if the host's stored bytes (offline and
        private) plus this message would exceed ``max_host_bytes`` (``None``: no check).
        """
        ...

    async def pop_all(self, domain: str, localpart: str) -> list[OfflineMessage]:
        """Remove and return every stored message, oldest first."""
        ...

    async def count(self, domain: str, localpart: str) -> int: ...

    async def bytes_used(self, domain: str) -> int:
        """Stored bytes for the whole host (a metering gauge)."""
        ...


class PrivateStore(Protocol):
    """XEP-0049 private XML storage, one element per (name, namespace)."""

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None: ...

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None:
        """Store these ``(key, xml)`` elements, all or none (one XEP-0049 set).

        Raises :class:`StorageFull` (nothing stored) if the set grows the host's stored bytes
        (offline and private) past ``max_host_bytes``; a set that does not grow them (the
        same or smaller elements) always passes.
        """
        ...

    async def bytes_used(self, domain: str) -> int: ...


class PrivateBackend(Protocol):
    """A backend keeping private storage beside offline messages: both would be called
    ``bytes_used``, so its private one is ``private_bytes_used``."""

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None: ...

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None: ...

    async def private_bytes_used(self, domain: str) -> int: ...


class PrivateStoreView:
    """The :class:`PrivateStore` of a :class:`PrivateBackend`."""

    def __init__(self, backend: PrivateBackend) -> None:
        self._b = backend

    async def get_private(self, domain: str, localpart: str, key: str) -> str | None:
        return await self._b.get_private(domain, localpart, key)

    async def set_private(
        self,
        domain: str,
        localpart: str,
        items: Sequence[tuple[str, str]],
        max_host_bytes: int | None = None,
    ) -> None:
        await self._b.set_private(domain, localpart, items, max_host_bytes)

    async def bytes_used(self, domain: str) -> int:
        return await self._b.private_bytes_used(domain)


class VCardStore(Protocol):
    """XEP-0054 vcard-temp, stored as the ``<vCard/>`` element XML."""

    async def get_vcard(self, domain: str, localpart: str) -> str | None: ...

    async def set_vcard(self, domain: str, localpart: str, xml: str) -> None: ...


class BlockListStore(Protocol):
    """XEP-0191 blocking: a set of JIDs (bare, full or domain) per account."""

    async def get_blocklist(self, domain: str, localpart: str) -> set[str]: ...

    async def block(self, domain: str, localpart: str, jids: Sequence[str]) -> None: ...

    async def unblock(self, domain: str, localpart: str, jids: Sequence[str] | None) -> None:
        """Unblock these JIDs, or all when ``jids`` is None."""
        ...


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """A persistent XEP-0045 room as stored: what survives a restart (not its occupants nor
    its history)."""

    name: str
    """The room's localpart (prepared), e.g. ``team`` of ``team@conference.example.test``."""
    config: dict[str, str]
    """``muc#roomconfig`` values by field var; booleans ``"1"``/``"0"``, numbers as text."""
    affiliations: dict[str, str]
    """Bare JID -> ``owner``, ``admin``, ``member`` or ``outcast``."""
    nicks: dict[str, str] = field(default_factory=dict)
    """Bare JID -> nickname reserved by registration (muc#register)."""
    subject: str = ""
    subject_by: str = ""
    """Nickname of who set the subject."""


class MucStore(Protocol):
    """XEP-0045 persistent rooms of a host's conference service, keyed by
    ``(domain, room name)`` where ``domain`` is the hosted domain (not the service's)."""

    async def load_rooms(self, domain: str) -> list[StoredRoom]:
        """Every persistent room of the host (read when the host is loaded)."""
        ...

    async def save_room(self, domain: str, room: StoredRoom) -> None:
        """Insert or replace a room."""
        ...

    async def delete_room(self, domain: str, name: str) -> None:
        """Forget a room (no error if absent)."""
        ...


@dataclass(slots=True)
class ArchivedMessage:
    """One message in an account's XEP-0313 archive. Not changed once made (not ``frozen``
    only because a frozen dataclass costs four times as much to create, and one is made for
    every copy of every message)."""

    id: str
    """The archive id: the XEP-0359 ``stanza-id`` the owner's clients saw. Unique per owner."""
    domain: str
    localpart: str
    """The owner of the archive (prepared)."""
    with_jid: str
    """The other party's bare JID."""
    with_resource: str
    """The other party's resource ("" when the message named none)."""
    stamp: datetime
    """When the server archived it (aware UTC)."""
    outgoing: bool
    """Sent by the owner (True) or received (False)."""
    stanza: str
    """The message as serialised XML (``jabber:client``)."""
    text: str = ""
    """Its body, for full-text search."""

    @property
    def size(self) -> int:
        """Bytes this message counts as stored (``archive_storage_bytes``)."""
        return len(self.stanza.encode())


@dataclass(frozen=True, slots=True)
class ArchiveFilter:
    """The XEP-0313 §4.1 query fields; every given field must match."""

    with_jid: str | None = None
    """A bare JID (every resource) or a full JID (that resource only)."""
    start: datetime | None = None
    """Inclusive."""
    end: datetime | None = None
    """Inclusive."""
    after_id: str | None = None
    """Only messages after this archive id (exclusive)."""
    before_id: str | None = None
    """Only messages before this archive id (exclusive)."""
    ids: tuple[str, ...] = ()
    """Only these archive ids (XEP-0313 §4.1.3)."""
    text: str | None = None
    """``urn:xmpp:fulltext:0``: every word of it appears in the body (case-insensitive)."""


@dataclass(frozen=True, slots=True)
class ArchivePage:
    """One XEP-0059 page of a query, oldest first."""

    messages: list[ArchivedMessage]
    complete: bool
    """No more messages in the paging direction (forward: after the page; backward
    (``before``): before it)."""
    count: int
    """Messages matching the filter, all pages together."""


@dataclass(frozen=True, slots=True)
class ArchivePrefs:
    """XEP-0313 §6 preferences: what is archived by default, and bare JIDs always/never
    archived."""

    default: str = "always"
    """``always``, ``never`` or ``roster`` (archive contacts in the roster)."""
    always: frozenset[str] = frozenset()
    never: frozenset[str] = frozenset()


class UnknownArchiveId(LookupError):
    """A query named an archive id the owner's archive does not hold."""

    def __init__(self, archive_id: str) -> None:
        super().__init__(f"no message with the id {archive_id!r} in this archive")
        self.archive_id = archive_id


class ArchiveStore(Protocol):
    """XEP-0313 message archives of accounts. The engine appends in batches (never on the
    message path) and reads for queries; retention is the control plane's (a job)."""

    async def append(self, messages: Sequence[ArchivedMessage]) -> None:
        """Store these messages (ignored for an account that does not exist). A message whose
        ``(domain, localpart, id)`` is stored already is skipped (a retried batch)."""
        ...

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
        """A page of the account's messages matching ``filter``, ordered by ``(stamp, id)``:
        the first ``limit`` after ``after`` (XEP-0059 §2.2), or the last ``limit`` before
        ``before`` (§2.3; ``last`` without ``before``: the last page, §2.5). Raises
        :class:`UnknownArchiveId` when ``after``, ``before``, ``filter.after_id``,
        ``filter.before_id`` or one of ``filter.ids`` is not in the archive."""
        ...

    async def get_prefs(self, domain: str, localpart: str) -> ArchivePrefs | None:
        """The account's preferences, None when it never set them."""
        ...

    async def set_prefs(self, domain: str, localpart: str, prefs: ArchivePrefs) -> None: ...

    async def archive_bytes_used(self, domain: str) -> int:
        """Stored archive bytes of the whole host (the ``archive_storage_bytes`` gauge)."""
        ...


class ClientVersionLog(Protocol):
    """Where the data plane notes which client software an account signs in with (XEP-0092
    answers, e.g. ``"Conversations 2.16 (Android 14)"``), for support and troubleshooting.

    Called on the event loop for every answer: it must not block (keep it in memory and
    write in batches)."""

    def note_client_version(self, domain: str, localpart: str, version: str) -> None: ...


METRICS = (
    "messages",
    "stanzas_message",
    "stanzas_presence",
    "stanzas_iq",
    "bytes_in",
    "bytes_out",
    "connections_peak",
    "active_users",
    "offline_storage_bytes",
    "private_storage_bytes",
    "archive_storage_bytes",
    "room_messages",
    "room_deliveries",
)
"""Metric names a :class:`UsageRecord` carries (billing relies on exactly these)."""


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Usage of one virtual host in one minute bucket.

    ``idempotency_key`` is unique per (node, host, metric, bucket, flush sequence) for counters,
    and per (host, day, account) for ``active_users``: a retried batch collapses on it.
    """

    host: str
    metric: str
    bucket_start: datetime
    quantity: int
    idempotency_key: str
    subject: str | None = None


class UsageSink(Protocol):
    async def record(self, records: list[UsageRecord]) -> None:
        """Persist a batch; raise to make the server keep it and retry at the next flush."""
        ...
