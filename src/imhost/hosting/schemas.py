"""API shapes of hosted services and XMPP accounts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from imhost.hosting.models import HostedService, XmppAccount
from imhost.kit.text import MultilineText, PlainText


class LimitsOut(BaseModel):
    max_accounts: int | None
    max_connections: int | None
    max_connections_per_account: int | None
    message_rate: int | None
    message_burst: int
    max_stanza_bytes: int
    max_offline_messages: int
    storage_mb: int | None
    max_rooms: int | None = None
    max_room_occupants: int | None = None
    archive_days: int | None = None
    registration_allowed: bool


class UsageOut(BaseModel):
    accounts: int
    connections: int | None
    """Sessions open now; None when no engine runs in this process."""


class ConnectionInfo(BaseModel):
    host: str
    c2s_port: int
    direct_tls_port: int | None
    websocket_url: str
    uri: str
    """``xmpp:`` URI of the service (RFC 5122)."""


class ServiceOut(BaseModel):
    id: str
    organization_id: str
    domain: str
    status: str
    status_reason: str
    budget_block_reason: str | None
    created_at: datetime
    limits: LimitsOut
    usage: UsageOut | None = None
    connection: ConnectionInfo | None = None

    @classmethod
    def of(cls, service: HostedService) -> ServiceOut:
        return cls(
            id=service.id,
            organization_id=service.organization_id,
            domain=service.domain,
            status=service.status,
            status_reason=service.status_reason,
            budget_block_reason=service.budget_block_reason,
            created_at=service.created_at,
            limits=LimitsOut(
                max_accounts=service.max_accounts,
                max_connections=service.max_connections,
                max_connections_per_account=service.max_connections_per_account,
                message_rate=service.message_rate,
                message_burst=service.message_burst,
                max_stanza_bytes=service.max_stanza_bytes,
                max_offline_messages=service.max_offline_messages,
                storage_mb=service.storage_mb,
                max_rooms=service.max_rooms,
                max_room_occupants=service.max_room_occupants,
                archive_days=service.archive_days,
                registration_allowed=service.registration_allowed,
            ),
        )


class ServicePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ServiceOut]


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    localpart: str
    jid: str
    name: str
    disabled: bool
    disabled_reason: str
    created_at: datetime
    last_login_at: datetime | None
    password_changed_at: datetime | None
    client_version: str | None

    @classmethod
    def of(cls, service: HostedService, account: XmppAccount) -> AccountOut:
        return cls(
            id=account.id,
            localpart=account.localpart,
            jid=f"{account.localpart}@{service.domain}",
            name=account.name,
            disabled=account.disabled,
            disabled_reason=account.disabled_reason,
            created_at=account.created_at,
            last_login_at=account.last_login_at,
            password_changed_at=account.password_changed_at,
            client_version=account.client_version,
        )


class AccountPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AccountOut]


class AccountIn(BaseModel):
    username: PlainText = Field(min_length=1, max_length=1023)
    password: str | None = Field(
        default=None,
        max_length=1024,
        description="Leave out to have a strong password generated and shown once.",
    )
    name: PlainText = Field(default="", max_length=200)


class AccountCreatedOut(BaseModel):
    account: AccountOut
    generated_password: str | None = Field(
        description="Only when the password was generated; shown this once, never stored."
    )


class PasswordIn(BaseModel):
    password: str | None = Field(
        default=None, max_length=1024, description="Leave out to generate a strong one."
    )


class PasswordOut(BaseModel):
    generated_password: str | None


class RoomOut(BaseModel):
    """A group chat room (XEP-0045) of the service's conference service."""

    name: str
    jid: str
    title: str
    persistent: bool
    """Kept when empty and across restarts (stored); a temporary room goes with its last
    occupant."""
    occupants: int | None
    """People in the room now; None when no engine runs in this process."""


class RoomList(BaseModel):
    conference: str
    """The conference service's address (``conference.<domain>``)."""
    max_rooms: int | None
    max_room_occupants: int | None
    items: list[RoomOut]


class ReasonIn(BaseModel):
    reason: MultilineText = Field(min_length=1, max_length=500)


class ImportRowOut(BaseModel):
    line: int
    username: str
    status: str
    reason: str


class ImportReportOut(BaseModel):
    created: int
    refused: int
    rows: list[ImportRowOut]


class LimitsIn(BaseModel):
    """Staff: change a service's limits (only the fields sent)."""

    model_config = ConfigDict(extra="forbid")

    max_accounts: int | None = None
    max_connections: int | None = None
    max_connections_per_account: int | None = None
    message_rate: int | None = None
    message_burst: int | None = None
    max_stanza_bytes: int | None = None
    max_offline_messages: int | None = None
    storage_mb: int | None = None
    max_rooms: int | None = None
    max_room_occupants: int | None = None
    archive_days: int | None = None
    registration_allowed: bool | None = None
