"""Pydantic shapes of the accounts API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from imhost.accounts.models import OrgRole, StaffRole
from imhost.kit.text import MultilineText, PlainText


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class LoginIn(BaseModel):
    email: PlainText = Field(max_length=320)
    password: str = Field(max_length=1024)


class LoginOut(BaseModel):
    user_id: str
    email: str
    mfa_pending: bool = Field(description="A TOTP or recovery code is needed (POST /auth/mfa).")
    mfa_enrolment_required: bool = Field(
        description="Two-factor authentication is required and must be set up first."
    )
    csrf_token: str = Field(description="Send as X-CSRF-Token with unsafe requests.")


class CodeIn(BaseModel):
    code: PlainText = Field(min_length=1, max_length=64)


class PasswordIn(BaseModel):
    password: str = Field(max_length=1024)


class PasswordChangeIn(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class SignupIn(BaseModel):
    email: PlainText = Field(max_length=320)
    password: str = Field(max_length=1024)
    name: PlainText = Field(default="", max_length=200)
    organization_name: PlainText = Field(min_length=1, max_length=200)
    country: PlainText | None = Field(default=None, min_length=2, max_length=2)


class AcceptedOut(BaseModel):
    """The answer to a request continued by e-mail (the same whether or not an account
    has the address)."""

    detail: str


class PasswordResetRequestIn(BaseModel):
    email: str = Field(max_length=320)


class PasswordResetIn(BaseModel):
    token: str = Field(min_length=10, max_length=200)
    new_password: str = Field(max_length=1024)


class SignupCompleteIn(BaseModel):
    token: str = Field(min_length=10, max_length=200)


class UserOut(Out):
    id: str
    email: str
    name: str
    staff_role: str | None
    email_verified_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None


class ProfileIn(BaseModel):
    name: PlainText = Field(max_length=200)


class MeOut(BaseModel):
    user: UserOut
    mfa_enabled: bool
    mfa_required: bool
    organizations: list[dict[str, str]]


class SessionOut(Out):
    id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    address: str | None
    user_agent: str | None
    current: bool = False


class TotpEnrolmentOut(BaseModel):
    factor_id: str
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpConfirmIn(BaseModel):
    factor_id: PlainText = Field(max_length=32)
    code: PlainText = Field(min_length=1, max_length=16)


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="Shown once. Store them somewhere safe.")


class OrganizationOut(Out):
    id: str
    name: str
    slug: str
    status: str
    status_reason: str | None
    country: str | None
    tax_id: str | None
    billing_email: str | None
    require_mfa: bool
    password_min_length: int | None
    password_min_score: int | None
    expire_stale_tokens: bool
    created_at: datetime


class OrganizationIn(BaseModel):
    name: PlainText | None = Field(default=None, max_length=200)
    country: PlainText | None = Field(default=None, max_length=2)
    tax_id: PlainText | None = Field(default=None, max_length=64)
    billing_email: PlainText | None = Field(default=None, max_length=320)
    require_mfa: bool | None = None
    password_min_length: int | None = Field(default=None, ge=8, le=128)
    password_min_score: int | None = Field(default=None, ge=0, le=4)
    expire_stale_tokens: bool | None = None


class OrganizationCreateIn(BaseModel):
    name: PlainText = Field(min_length=1, max_length=200)
    country: PlainText | None = Field(default=None, min_length=2, max_length=2)


class MemberOut(BaseModel):
    id: str
    user_id: str
    email: str
    name: str
    role: OrgRole
    created_at: datetime
    last_active_at: datetime | None


class RoleIn(BaseModel):
    role: OrgRole


class InvitationIn(BaseModel):
    email: PlainText = Field(max_length=320)
    role: OrgRole


class InvitationOut(Out):
    id: str
    email: str
    role: str
    created_at: datetime
    expires_at: datetime


class AcceptInvitationIn(BaseModel):
    token: PlainText = Field(min_length=10, max_length=200)


class InvitationRegisterIn(BaseModel):
    token: PlainText = Field(min_length=10, max_length=200)
    name: PlainText = Field(default="", max_length=200)
    password: str = Field(max_length=1024)


class TokenIn(BaseModel):
    name: PlainText = Field(min_length=1, max_length=100)
    scopes: list[PlainText] = Field(min_length=1, max_length=64)
    role: PlainText | None = Field(
        default=None, description="Defaults to the creator's role; never more than it."
    )
    expires_at: datetime | None = None


class TokenOut(Out):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    role: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    last_used_address: str | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="Shown once. Only its hash is stored.")


class AuditEventOut(Out):
    id: str
    at: datetime
    action: str
    organization_id: str | None
    actor_label: str
    actor_user_id: str | None
    actor_token_id: str | None
    target_type: str | None
    target_id: str | None
    target_label: str | None
    address: str | None
    details: dict[str, Any]


class AlertOut(Out):
    id: str
    created_at: datetime
    rule: str
    severity: str
    organization_id: str | None
    user_id: str | None
    summary: str
    acknowledged_at: datetime | None


class ReviewOut(Out):
    id: str
    period_label: str
    created_at: datetime
    due_at: datetime
    completed_at: datetime | None


class ReviewItemOut(Out):
    id: str
    subject_type: str
    subject_id: str
    subject_label: str
    role: str
    last_activity_at: datetime | None
    flagged_stale: bool
    decision: str | None
    decided_at: datetime | None


class ReviewDetailOut(ReviewOut):
    items: list[ReviewItemOut]


class DecisionIn(BaseModel):
    decision: PlainText = Field(pattern="^(keep|revoke)$")


class StatusIn(BaseModel):
    suspended: bool
    reason: MultilineText = Field(default="", max_length=500)


class StaffIn(BaseModel):
    email: PlainText = Field(max_length=320)
    name: PlainText = Field(default="", max_length=200)
    role: StaffRole
    password: str = Field(max_length=1024)


class StaffRoleIn(BaseModel):
    role: StaffRole | None


class WebhookIn(BaseModel):
    url: PlainText = Field(max_length=500)
    event_types: list[PlainText] = Field(default_factory=list, max_length=50)


class WebhookOut(Out):
    id: str
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="Signing secret (HMAC-SHA256).")


class WebhookDeliveryOut(Out):
    id: str
    event_type: str
    status: str = Field(description="queued, delivered or failed (no more attempts).")
    attempts: int
    response_status: int | None = Field(description="The HTTP status the receiver answered.")
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class Paged(BaseModel):
    total: int
    limit: int
    offset: int
