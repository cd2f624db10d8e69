"""A customer organization: its settings, members, invitations, API tokens, audit log,
security alerts, access reviews and webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from imhost.accounts import audit as audit_log
from imhost.accounts import reviews, threats, tokens
from imhost.accounts import service as accounts
from imhost.accounts.models import Membership, OrgRole, SecurityAlert
from imhost.accounts.permissions import Access
from imhost.accounts.schemas import (
    AlertOut,
    AuditEventOut,
    DecisionIn,
    InvitationIn,
    InvitationOut,
    MemberOut,
    OrganizationCreateIn,
    OrganizationIn,
    OrganizationOut,
    Paged,
    ReviewDetailOut,
    ReviewItemOut,
    ReviewOut,
    RoleIn,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    WebhookCreatedOut,
    WebhookDeliveryOut,
    WebhookIn,
    WebhookOut,
)
from imhost.kit.errors import InvalidInput, NotFound, PermissionDenied
from imhost.web.deps import Db, PageDep, Principal, RuntimeDep, SelfUser, require

router = APIRouter(prefix="/orgs", tags=["organizations"])

OrgRead = Annotated[Principal, Depends(require("organization", Access.READ))]
OrgWrite = Annotated[Principal, Depends(require("organization", Access.WRITE))]
MembersRead = Annotated[Principal, Depends(require("members", Access.READ))]
MembersWrite = Annotated[Principal, Depends(require("members", Access.WRITE))]
TokensRead = Annotated[Principal, Depends(require("tokens", Access.READ))]
TokensWrite = Annotated[Principal, Depends(require("tokens", Access.WRITE))]
AuditRead = Annotated[Principal, Depends(require("audit", Access.READ))]
SecurityRead = Annotated[Principal, Depends(require("security", Access.READ))]
SecurityWrite = Annotated[Principal, Depends(require("security", Access.WRITE))]

_ROLE_RANK = {
    OrgRole.READ_ONLY: 0,
    OrgRole.BILLING: 1,
    OrgRole.TECHNICAL: 1,
    OrgRole.ADMIN: 2,
    OrgRole.OWNER: 3,
}


class AuditPage(Paged):
    items: list[AuditEventOut]


class AlertPage(Paged):
    items: list[AlertOut]


# --- organization -----------------------------------------------------------------------


@router.post("", response_model=OrganizationOut, status_code=status.HTTP_201_CREATED)
def create_organization(
    body: OrganizationCreateIn, principal: SelfUser, db: Db, runtime: RuntimeDep
) -> OrganizationOut:
    """Create another organization; the signed-in person becomes its owner."""
    assert principal.user is not None
    org = accounts.create_organization(
        db, runtime.clock, name=body.name, owner=principal.user, country=body.country
    )
    return OrganizationOut.model_validate(org)


@router.get("/{org_id}", response_model=OrganizationOut)
def get_organization(principal: OrgRead) -> OrganizationOut:
    return OrganizationOut.model_validate(principal.org)


@router.patch("/{org_id}", response_model=OrganizationOut)
def update_organization(
    body: OrganizationIn, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> OrganizationOut:
    if body.require_mfa is not None and principal.role_for_rules not in (OrgRole.OWNER, None):
        raise PermissionDenied("only an owner can require two-factor authentication")
    org = accounts.update_organization(
        db,
        runtime.clock,
        principal.org,
        actor=principal.actor,
        **body.model_dump(exclude_unset=True),
    )
    return OrganizationOut.model_validate(org)


# --- members ------------------------------------------------------------------------------


def _member_out(m: Membership, email: str, name: str) -> MemberOut:
    return MemberOut(
        id=m.id,
        user_id=m.user_id,
        email=email,
        name=name,
        role=OrgRole(m.role),
        created_at=m.created_at,
        last_active_at=m.last_active_at,
    )


def _membership(db: Db, principal: Principal, member_id: str) -> Membership:
    m = db.get(Membership, member_id)
    if m is None or m.organization_id != principal.org_id:
        raise NotFound("no such member")
    return m


@router.get("/{org_id}/members", response_model=list[MemberOut])
def list_members(principal: MembersRead, db: Db) -> list[MemberOut]:
    return [_member_out(m, u.email, u.name) for m, u in accounts.list_members(db, principal.org_id)]


@router.patch("/{org_id}/members/{member_id}", response_model=MemberOut)
def change_member_role(
    member_id: str, body: RoleIn, principal: MembersWrite, db: Db, runtime: RuntimeDep
) -> MemberOut:
    m = _membership(db, principal, member_id)
    accounts.change_role(
        db,
        runtime.clock,
        principal.org,
        m,
        body.role,
        actor=principal.actor,
        actor_role=principal.role_for_rules,
    )
    user = accounts.get_user(db, m.user_id)
    return _member_out(m, user.email, user.name)


@router.delete("/{org_id}/members/{member_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(member_id: str, principal: MembersWrite, db: Db, runtime: RuntimeDep) -> Response:
    """Remove a member: their sessions end and the tokens they created here are revoked."""
    m = _membership(db, principal, member_id)
    accounts.remove_member(
        db,
        runtime.clock,
        principal.org,
        m,
        actor=principal.actor,
        actor_role=principal.role_for_rules,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org_id}/invitations", response_model=list[InvitationOut])
def list_invitations(principal: MembersRead, db: Db, runtime: RuntimeDep) -> list[InvitationOut]:
    return [
        InvitationOut.model_validate(i)
        for i in accounts.list_invitations(db, runtime.clock, principal.org_id)
    ]


@router.post(
    "/{org_id}/invitations", response_model=InvitationOut, status_code=status.HTTP_201_CREATED
)
def invite(
    body: InvitationIn, principal: MembersWrite, db: Db, runtime: RuntimeDep
) -> InvitationOut:
    """Invite someone by e-mail; the link in the message is valid for 7 days."""
    invitation, _token = accounts.invite(
        db,
        runtime.clock,
        principal.org,
        email=body.email,
        role=body.role,
        actor=principal.actor,
        actor_role=principal.role_for_rules,
    )
    return InvitationOut.model_validate(invitation)


@router.delete("/{org_id}/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_invitation(
    invitation_id: str, principal: MembersWrite, db: Db, runtime: RuntimeDep
) -> Response:
    accounts.revoke_invitation(
        db, runtime.clock, principal.org_id, invitation_id, actor=principal.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- API tokens -----------------------------------------------------------------------------


@router.get("/{org_id}/tokens", response_model=list[TokenOut])
def list_tokens(principal: TokensRead, db: Db) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in tokens.list_tokens(db, principal.org_id)]


@router.post(
    "/{org_id}/tokens", response_model=TokenCreatedOut, status_code=status.HTTP_201_CREATED
)
def create_token(
    body: TokenIn, principal: TokensWrite, db: Db, runtime: RuntimeDep
) -> TokenCreatedOut:
    """Create a service-account token. The token is in this response only."""
    creator_role = principal.role_for_rules or OrgRole.OWNER
    try:
        role = OrgRole(body.role) if body.role else creator_role
    except ValueError:
        raise InvalidInput(
            "role must be one of " + ", ".join(r.value for r in OrgRole), field="role"
        ) from None
    if _ROLE_RANK[role] > _ROLE_RANK[creator_role] or (
        role is OrgRole.OWNER and creator_role is not OrgRole.OWNER
    ):
        raise PermissionDenied("a token cannot have a higher role than its creator")
    issued = tokens.create_token(
        db,
        runtime.clock,
        organization_id=principal.org_id,
        name=body.name,
        scopes=body.scopes,
        role=role.value,
        created_by=principal.actor,
        expires_at=body.expires_at,
    )
    out = TokenOut.model_validate(issued.token).model_dump()
    return TokenCreatedOut(**out, token=issued.plaintext)


@router.delete("/{org_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, principal: TokensWrite, db: Db, runtime: RuntimeDep) -> Response:
    token = tokens.get_token(db, principal.org_id, token_id)
    tokens.revoke_token(db, runtime.clock, token, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- audit log, alerts, access reviews -------------------------------------------------------


@router.get("/{org_id}/audit", response_model=AuditPage)
def list_audit(
    principal: AuditRead,
    db: Db,
    page: PageDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditPage:
    rows, total = audit_log.list_events(
        db,
        organization_id=principal.org_id,
        action=action,
        since=since,
        until=until,
        limit=page.limit,
        offset=page.offset,
    )
    return AuditPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[AuditEventOut.model_validate(r) for r in rows],
    )


@router.get("/{org_id}/security/alerts", response_model=AlertPage)
def list_alerts(principal: SecurityRead, db: Db, page: PageDep) -> AlertPage:
    rows, total = threats.list_alerts(
        db, organization_id=principal.org_id, limit=page.limit, offset=page.offset
    )
    return AlertPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[AlertOut.model_validate(r) for r in rows],
    )


@router.post("/{org_id}/security/alerts/{alert_id}/acknowledge", response_model=AlertOut)
def acknowledge_alert(
    alert_id: str, principal: SecurityWrite, db: Db, runtime: RuntimeDep
) -> AlertOut:
    alert = db.get(SecurityAlert, alert_id)
    if alert is None or alert.organization_id != principal.org_id:
        raise NotFound("no such alert")
    alert.acknowledged_at = alert.acknowledged_at or runtime.clock.now()
    return AlertOut.model_validate(alert)


@router.get("/{org_id}/access-reviews", response_model=list[ReviewOut])
def list_reviews(principal: SecurityRead, db: Db) -> list[ReviewOut]:
    return [ReviewOut.model_validate(r) for r in reviews.list_reviews(db, principal.org_id)]


@router.post(
    "/{org_id}/access-reviews", response_model=ReviewOut, status_code=status.HTTP_201_CREATED
)
def open_review(principal: SecurityWrite, db: Db, runtime: RuntimeDep) -> ReviewOut:
    """Open this period's review now (the worker opens it on schedule otherwise)."""
    review = reviews.open_review(db, runtime.clock, runtime.settings.security, principal.org)
    if review is None:
        raise InvalidInput("this period's access review is open already")
    return ReviewOut.model_validate(review)


@router.get("/{org_id}/access-reviews/{review_id}", response_model=ReviewDetailOut)
def get_review(review_id: str, principal: SecurityRead, db: Db) -> ReviewDetailOut:
    review = reviews.get_review(db, principal.org_id, review_id)
    items = [ReviewItemOut.model_validate(i) for i in reviews.review_items(db, review.id)]
    return ReviewDetailOut(**ReviewOut.model_validate(review).model_dump(), items=items)


@router.post("/{org_id}/access-reviews/{review_id}/items/{item_id}", response_model=ReviewItemOut)
def decide_review_item(
    review_id: str,
    item_id: str,
    body: DecisionIn,
    principal: SecurityWrite,
    db: Db,
    runtime: RuntimeDep,
) -> ReviewItemOut:
    review = reviews.get_review(db, principal.org_id, review_id)
    item = reviews.decide(
        db,
        runtime.clock,
        principal.org,
        review,
        item_id,
        body.decision,
        actor=principal.actor,
        actor_role=principal.role_for_rules,
    )
    return ReviewItemOut.model_validate(item)


@router.post("/{org_id}/access-reviews/{review_id}/complete", response_model=ReviewOut)
def complete_review(
    review_id: str, principal: SecurityWrite, db: Db, runtime: RuntimeDep
) -> ReviewOut:
    review = reviews.get_review(db, principal.org_id, review_id)
    return ReviewOut.model_validate(
        reviews.complete(db, runtime.clock, principal.org, review, actor=principal.actor)
    )


# --- webhooks -----------------------------------------------------------------------------


@router.get("/{org_id}/webhooks", response_model=list[WebhookOut])
def list_webhooks(principal: OrgWrite, db: Db, runtime: RuntimeDep) -> list[WebhookOut]:
    return [
        WebhookOut.model_validate(w) for w in runtime.webhooks.list_endpoints(db, principal.org_id)
    ]


@router.post(
    "/{org_id}/webhooks", response_model=WebhookCreatedOut, status_code=status.HTTP_201_CREATED
)
def create_webhook(
    body: WebhookIn, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> WebhookCreatedOut:
    endpoint = runtime.webhooks.create_endpoint(
        db,
        runtime.clock,
        organization_id=principal.org_id,
        url=body.url,
        event_types=body.event_types,
        actor=principal.actor,
    )
    return WebhookCreatedOut(
        **WebhookOut.model_validate(endpoint).model_dump(), secret=endpoint.secret
    )


@router.delete("/{org_id}/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep) -> Response:
    runtime.webhooks.delete_endpoint(
        db, principal.org_id, webhook_id, clock=runtime.clock, actor=principal.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{org_id}/webhooks/{webhook_id}/rotate-secret", response_model=WebhookCreatedOut)
def rotate_webhook_secret(
    webhook_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> WebhookCreatedOut:
    """A new signing secret, returned once; deliveries from now on are signed with it."""
    endpoint = runtime.webhooks.rotate_secret(
        db, runtime.clock, principal.org_id, webhook_id, actor=principal.actor
    )
    return WebhookCreatedOut(
        **WebhookOut.model_validate(endpoint).model_dump(), secret=endpoint.secret
    )


@router.post("/{org_id}/webhooks/{webhook_id}/disable", response_model=WebhookOut)
def disable_webhook(
    webhook_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> WebhookOut:
    endpoint = runtime.webhooks.set_active(
        db, runtime.clock, principal.org_id, webhook_id, False, actor=principal.actor
    )
    return WebhookOut.model_validate(endpoint)


@router.post("/{org_id}/webhooks/{webhook_id}/enable", response_model=WebhookOut)
def enable_webhook(webhook_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep) -> WebhookOut:
    endpoint = runtime.webhooks.set_active(
        db, runtime.clock, principal.org_id, webhook_id, True, actor=principal.actor
    )
    return WebhookOut.model_validate(endpoint)


@router.post(
    "/{org_id}/webhooks/{webhook_id}/test",
    response_model=WebhookDeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def send_test_webhook(
    webhook_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> WebhookDeliveryOut:
    """Queue a ``webhook.test`` event for this endpoint only (one already waiting is
    returned instead of a second)."""
    delivery = runtime.webhooks.send_test(
        db, runtime.clock, principal.org_id, webhook_id, actor=principal.actor
    )
    return WebhookDeliveryOut.model_validate(delivery)


@router.get("/{org_id}/webhooks/{webhook_id}/deliveries", response_model=list[WebhookDeliveryOut])
def list_webhook_deliveries(
    webhook_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> list[WebhookDeliveryOut]:
    """The endpoint's latest deliveries, newest first."""
    return [
        WebhookDeliveryOut.model_validate(d)
        for d in runtime.webhooks.recent_deliveries(db, principal.org_id, webhook_id)
    ]


@router.post(
    "/{org_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=WebhookDeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
)
def redeliver_webhook(
    webhook_id: str, delivery_id: str, principal: OrgWrite, db: Db, runtime: RuntimeDep
) -> WebhookDeliveryOut:
    """Send a delivered or failed event again now (one still waiting is left as it is)."""
    delivery = runtime.webhooks.redeliver(
        db, runtime.clock, principal.org_id, webhook_id, delivery_id, actor=principal.actor
    )
    return WebhookDeliveryOut.model_validate(delivery)
