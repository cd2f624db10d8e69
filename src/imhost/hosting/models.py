"""Tables of hosted IM services, their XMPP accounts and the accounts' server-side storage.

Passwords are never stored: an account keeps only the RFC 5802 §3 SCRAM derivatives (salt,
iterations, StoredKey, ServerKey) for SHA-1 and SHA-256, from which no password can be
recovered (PLAIN logins are checked against them too, see :mod:`imhost.kit.scram`).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from imhost.db.base import Base, CreatedMixin, IdMixin
from imhost.db.types import UtcDateTime

DEFAULT_MAX_STANZA_BYTES = 262_144


class ServiceStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class HostedService(IdMixin, CreatedMixin, Base):
    """One customer's IM service: a virtual host of the XMPP engine.

    Limits are copied from the plan when the service is created and whenever the
    subscription changes (``None`` means unlimited). ``budget_block_reason`` is set when a
    hard budget cap is reached: the engine then treats the service as suspended with that text
    (docs/xmpp.md, "Hosted services and XMPP accounts").
    """

    __tablename__ = "hosted_services"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ServiceStatus.ACTIVE.value)
    status_reason: Mapped[str] = mapped_column(String(500), default="")
    suspended_by: Mapped[str | None] = mapped_column(String(16), default=None)
    """Who suspended it: ``organization`` (follows the organization) or ``staff``."""
    budget_block_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    max_accounts: Mapped[int | None] = mapped_column(Integer, default=None)
    max_connections: Mapped[int | None] = mapped_column(Integer, default=None)
    max_connections_per_account: Mapped[int | None] = mapped_column(Integer, default=10)
    message_rate: Mapped[int | None] = mapped_column(Integer, default=50)
    message_burst: Mapped[int] = mapped_column(Integer, default=200)
    max_stanza_bytes: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_STANZA_BYTES)
    max_offline_messages: Mapped[int] = mapped_column(Integer, default=1000)
    storage_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    max_rooms: Mapped[int | None] = mapped_column(Integer, default=None)
    """XEP-0045 rooms at once in the service's conference service."""
    max_room_occupants: Mapped[int | None] = mapped_column(Integer, default=None)
    archive_days: Mapped[int | None] = mapped_column(Integer, default=None)
    """Days a message stays in the accounts' archives (XEP-0313; the retention job deletes
    older ones); None keeps them."""
    registration_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class XmppAccount(IdMixin, CreatedMixin, Base):
    """An XMPP account ``localpart@service.domain``; ``localpart`` is RFC 7622-prepared."""

    __tablename__ = "xmpp_accounts"
    __table_args__ = (UniqueConstraint("service_id", "localpart"),)

    service_id: Mapped[str] = mapped_column(
        ForeignKey("hosted_services.id", ondelete="CASCADE"), index=True
    )
    localpart: Mapped[str] = mapped_column(String(1023))
    name: Mapped[str] = mapped_column(String(200), default="")
    sha1_salt: Mapped[bytes] = mapped_column(LargeBinary(64))
    sha1_iterations: Mapped[int] = mapped_column(Integer)
    sha1_stored_key: Mapped[bytes] = mapped_column(LargeBinary(64))
    sha1_server_key: Mapped[bytes] = mapped_column(LargeBinary(64))
    sha256_salt: Mapped[bytes] = mapped_column(LargeBinary(64))
    sha256_iterations: Mapped[int] = mapped_column(Integer)
    sha256_stored_key: Mapped[bytes] = mapped_column(LargeBinary(64))
    sha256_server_key: Mapped[bytes] = mapped_column(LargeBinary(64))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str] = mapped_column(String(500), default="")
    password_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    client_version: Mapped[str | None] = mapped_column(String(300), default=None)
    """XEP-0092 answer of the last client (``name version (os)``), for troubleshooting."""
    roster_version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class XmppRosterItem(IdMixin, Base):
    """RFC 6121 §2.1.2 roster item with its subscription state."""

    __tablename__ = "xmpp_roster_items"
    __table_args__ = (UniqueConstraint("account_id", "jid"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("xmpp_accounts.id", ondelete="CASCADE"), index=True
    )
    jid: Mapped[str] = mapped_column(String(2047))
    name: Mapped[str | None] = mapped_column(String(1023), default=None)
    subscription: Mapped[str] = mapped_column(String(4), default="none")
    ask: Mapped[bool] = mapped_column(Boolean, default=False)
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)


class XmppPendingSubscription(IdMixin, Base):
    """An inbound subscription request not yet answered (RFC 6121 §3.1.3)."""

    __tablename__ = "xmpp_pending_subscriptions"
    __table_args__ = (UniqueConstraint("account_id", "jid"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("xmpp_accounts.id", ondelete="CASCADE"), index=True
    )
    jid: Mapped[str] = mapped_column(String(2047))
    stanza: Mapped[str] = mapped_column(Text)


class XmppOfflineMessage(Base):
    """XEP-0160 offline message; ``id`` orders them (oldest first)."""

    __tablename__ = "xmpp_offline_messages"
    __table_args__ = (Index("ix_xmpp_offline_messages_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("xmpp_accounts.id", ondelete="CASCADE"))
    service_id: Mapped[str] = mapped_column(String(32), index=True)
    stanza: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime())


class XmppPrivateXml(IdMixin, Base):
    """XEP-0049 private XML storage, one element per ``key`` (name and namespace)."""

    __tablename__ = "xmpp_private_xml"
    __table_args__ = (UniqueConstraint("account_id", "key"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("xmpp_accounts.id", ondelete="CASCADE"), index=True
    )
    service_id: Mapped[str] = mapped_column(String(32), index=True)
    key: Mapped[str] = mapped_column(String(1024))
    xml: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)


class XmppVCard(Base):
    """XEP-0054 vcard-temp of an account."""

    __tablename__ = "xmpp_vcards"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("xmpp_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    xml: Mapped[str] = mapped_column(Text)


class XmppBlockedJid(IdMixin, Base):
    """XEP-0191: one blocked JID (bare, full or domain) of an account."""

    __tablename__ = "xmpp_blocked_jids"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("xmpp_accounts.id", ondelete="CASCADE"), index=True
    )
    jid: Mapped[str] = mapped_column(String(3071))


class XmppRoom(IdMixin, CreatedMixin, Base):
    """A persistent XEP-0045 room of a service's conference service (``conference.<domain>``):
    what the engine keeps across restarts (its occupants and history live in the engine)."""

    __tablename__ = "xmpp_rooms"
    __table_args__ = (UniqueConstraint("service_id", "name"),)

    service_id: Mapped[str] = mapped_column(
        ForeignKey("hosted_services.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(1023))
    """The room's localpart (prepared)."""
    config: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """``muc#roomconfig`` values by field var."""
    affiliations: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """Bare JID -> owner, admin, member or outcast."""
    nicks: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """Bare JID -> registered nickname."""
    subject: Mapped[str] = mapped_column(Text, default="")
    subject_by: Mapped[str] = mapped_column(String(1023), default="")
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class EngineNode(Base):
    """One node of the built-in engine, named by ``IMHOST_XMPP__NODE_ID``, and the lease of the
    process running it (:mod:`imhost.hosting.nodes`).

    The process that holds an unexpired lease owns the name; it renews the lease while it
    runs and gives it back when it stops. A second process with the same name refuses to
    start; after a crash the name is free again when the lease expires.
    """

    __tablename__ = "engine_nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incarnation: Mapped[str] = mapped_column(String(32))
    """This run of the node: in every usage key it writes, new at every start."""
    holder: Mapped[str] = mapped_column(String(300))
    """``host:pid`` of the process, to name it in the refusal."""
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


class XmppArchivedMessage(Base):
    """One message in an account's XEP-0313 archive (the sender's and the recipient's copies
    are two rows). ``archive_id`` is the XEP-0359 stanza id the owner's clients saw; pages
    are ordered by ``(stamp, archive_id)``."""

    __tablename__ = "xmpp_archive"
    __table_args__ = (
        UniqueConstraint("account_id", "archive_id"),
        Index("ix_xmpp_archive_owner_stamp", "account_id", "stamp", "archive_id"),
        Index("ix_xmpp_archive_owner_with_stamp", "account_id", "with_jid", "stamp"),
        Index("ix_xmpp_archive_service_stamp", "service_id", "stamp"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("xmpp_accounts.id", ondelete="CASCADE"))
    service_id: Mapped[str] = mapped_column(String(32))
    """The service of the owner (retention and the ``archive_storage_bytes`` gauge)."""
    archive_id: Mapped[str] = mapped_column(String(40))
    with_jid: Mapped[str] = mapped_column(String(1023))
    """The other party's bare JID."""
    with_resource: Mapped[str] = mapped_column(String(1023), default="")
    stamp: Mapped[datetime] = mapped_column(UtcDateTime())
    outgoing: Mapped[bool] = mapped_column(Boolean)
    stanza: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(Integer)


class XmppArchivePrefs(Base):
    """An account's XEP-0313 §6 preferences (absent: archive everything)."""

    __tablename__ = "xmpp_archive_prefs"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("xmpp_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    default: Mapped[str] = mapped_column(String(8), default="always")
    always: Mapped[list[str]] = mapped_column(JSON, default=list)
    never: Mapped[list[str]] = mapped_column(JSON, default=list)
