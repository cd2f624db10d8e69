"""A customer organization's pages: overview, members and invitations, API tokens, the
security log and alerts, and access reviews."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from imhost.accounts import audit as audit_log
from imhost.accounts import reviews, threats, tokens
from imhost.accounts import service as accounts
from imhost.accounts.models import Membership, OrgRole, SecurityAlert
from imhost.accounts.permissions import Access, all_scopes
from imhost.kit.errors import DomainError, InvalidInput, NotFound, PermissionDenied
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    PageNo,
    confirmation,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/portal/orgs/{org_id}", include_in_schema=False)

OrgRead = Annotated[Principal, Depends(page_require("organization", Access.READ))]
MembersRead = Annotated[Principal, Depends(page_require("members", Access.READ))]
MembersWrite = Annotated[Principal, Depends(page_require("members", Access.WRITE))]
TokensRead = Annotated[Principal, Depends(page_require("tokens", Access.READ))]
TokensWrite = Annotated[Principal, Depends(page_require("tokens", Access.WRITE))]
AuditRead = Annotated[Principal, Depends(page_require("audit", Access.READ))]
SecurityRead = Annotated[Principal, Depends(page_require("security", Access.READ))]
SecurityWrite = Annotated[Principal, Depends(page_require("security", Access.WRITE))]

_ROLE_RANK = {
    OrgRole.READ_ONLY: 0,
    OrgRole.BILLING: 1,
    OrgRole.TECHNICAL: 1,
    OrgRole.ADMIN: 2,
    OrgRole.OWNER: 3,
}
ROLE_CHOICES = [(r.value, r.value.replace("-", " ")) for r in OrgRole]


def base_url(principal: Principal) -> str:
    return f"/portal/orgs/{principal.org.slug}"


@router.get("/")
def overview(request: Request, principal: OrgRead, db: Db, runtime: RuntimeDep) -> Response:
    from imhost.web.portal.billing import billing_summary
    from imhost.web.portal.home import at_a_glance

    org = principal.org
    summary = billing_summary(db, runtime, principal)
    return render(
        request,
        "portal/overview.html",
        {
            "title": org.name,
            "org": org,
            "members": len(accounts.list_members(db, org.id)),
            "billing": summary,
            "glance": at_a_glance(db, runtime, principal, summary),
        },
        principal=principal,
        db=db,
        section="Overview",
    )


# The sections of an organization's pages (the first part of the path after its name), and
# the area a member must be allowed to read to open each.
SECTION_AREAS = {
    "service": "hosting",
    "billing": "usage",
    "members": "members",
    "tokens": "tokens",
    "security": "security",
    "settings": "organization",
    "close": "closure",
}


@router.get("/switch")
def switch(principal: OrgRead, section: str = "") -> Response:
    """Go to another organization, on the same section when it exists there and the member's
    role there may open it (else its overview)."""
    from imhost.web.portal.home import may_read

    area = SECTION_AREAS.get(section[:32])
    target = base_url(principal) + "/"
    if area is not None and may_read(principal, area):
        target += section
    return RedirectResponse(target, status_code=303)


# --- members and invitations ---------------------------------------------------------------------


def _members_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/members.html",
        {
            "title": "Members",
            "members": accounts.list_members(db, principal.org_id),
            "invitations": accounts.list_invitations(db, runtime.clock, principal.org_id),
            "roles": ROLE_CHOICES,
            "values": values or {"role": "technical"},
            "errors": errors or FormErrors(),
            "me": principal.user.id if principal.user else None,
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Members",
    )


@router.get("/members")
def members(request: Request, principal: MembersRead, db: Db, runtime: RuntimeDep) -> Response:
    return _members_page(request, principal, db, runtime)


def _membership(db: Db, principal: Principal, member_id: str) -> Membership:
    m = db.get(Membership, member_id[:64])
    if m is None or m.organization_id != principal.org_id:
        raise NotFound("no such member")
    return m


def _role(value: str, field: str = "role") -> OrgRole:
    try:
        return OrgRole(value)
    except ValueError:
        raise InvalidInput("Pick one of the roles.", field=field) from None


@router.post("/invitations")
def invite(
    request: Request, principal: MembersWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        _invitation, _token = accounts.invite(
            db,
            runtime.clock,
            principal.org,
            email=text(form, "email", max_length=320),
            role=_role(text(form, "role")),
            actor=principal.actor,
            actor_role=principal.role_for_rules,
        )
    except DomainError as exc:
        db.rollback()
        return _members_page(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors.of(exc, {"email", "role"}),
            status=exc.status,
        )
    return redirect(
        request, base_url(principal) + "/members", f"Invitation sent to {_invitation.email}."
    )


@router.post("/invitations/{invitation_id}/revoke")
def revoke_invitation(
    request: Request,
    invitation_id: str,
    principal: MembersWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question="Withdraw this invitation?",
        consequence="Its link stops working.",
        button="Withdraw",
        cancel_url=base_url(principal) + "/members",
    )
    if ask is not None:
        return ask
    accounts.revoke_invitation(
        db, runtime.clock, principal.org_id, invitation_id[:64], actor=principal.actor
    )
    return redirect(request, base_url(principal) + "/members", "The invitation is withdrawn.")


@router.post("/members/{member_id}/role")
def change_role(
    request: Request,
    member_id: str,
    principal: MembersWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    m = _membership(db, principal, member_id)
    try:
        accounts.change_role(
            db,
            runtime.clock,
            principal.org,
            m,
            _role(text(form, "role")),
            actor=principal.actor,
            actor_role=principal.role_for_rules,
        )
    except DomainError as exc:
        db.rollback()
        return _members_page(
            request,
            principal,
            db,
            runtime,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(request, base_url(principal) + "/members", "The role is changed.")


@router.post("/members/{member_id}/remove")
def remove_member(
    request: Request,
    member_id: str,
    principal: MembersWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    m = _membership(db, principal, member_id)
    user = accounts.get_user(db, m.user_id)
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Remove {user.email} from {principal.org.name}?",
        consequence="Their sessions end and the API tokens they made here are revoked.",
        button="Remove member",
        cancel_url=base_url(principal) + "/members",
    )
    if ask is not None:
        return ask
    try:
        accounts.remove_member(
            db,
            runtime.clock,
            principal.org,
            m,
            actor=principal.actor,
            actor_role=principal.role_for_rules,
        )
    except DomainError as exc:
        db.rollback()
        return _members_page(
            request,
            principal,
            db,
            runtime,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(request, base_url(principal) + "/members", f"{user.email} is removed.")


# --- API tokens -----------------------------------------------------------------------------------


def _tokens_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    created: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/tokens.html",
        {
            "title": "API tokens",
            "tokens": tokens.list_tokens(db, principal.org_id),
            "scopes": all_scopes(staff=False),
            "roles": ROLE_CHOICES,
            "values": values or {},
            "checked": set(values.get("__scopes", "").split()) if values else set(),
            "errors": errors or FormErrors(),
            "created": created,
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Tokens",
    )


@router.get("/tokens")
def tokens_page(request: Request, principal: TokensRead, db: Db) -> Response:
    return _tokens_page(request, principal, db)


@router.post("/tokens")
def create_token(
    request: Request, principal: TokensWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    scopes = [str(s) for s in form.getlist("scopes") if isinstance(s, str)][:64]
    values = values_of(form)
    values["__scopes"] = " ".join(scopes)
    try:
        if not scopes:
            raise InvalidInput("Choose at least one scope.", field="scopes")
        creator = principal.role_for_rules or OrgRole.OWNER
        role = _role(text(form, "role") or creator.value)
        if _ROLE_RANK[role] > _ROLE_RANK[creator] or (
            role is OrgRole.OWNER and creator is not OrgRole.OWNER
        ):
            raise PermissionDenied("A token cannot have a higher role than yours.", field="role")
        issued = tokens.create_token(
            db,
            runtime.clock,
            organization_id=principal.org_id,
            name=text(form, "name", max_length=200),
            scopes=scopes,
            role=role.value,
            created_by=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _tokens_page(
            request,
            principal,
            db,
            values=values,
            errors=FormErrors.of(exc, {"name", "scopes", "role"}),
            status=exc.status,
        )
    return _tokens_page(request, principal, db, created=issued.plaintext)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: str, principal: TokensWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    token = tokens.get_token(db, principal.org_id, token_id[:64])
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Revoke the token {token.name}?",
        consequence="Programs using it stop working at once.",
        button="Revoke token",
        cancel_url=base_url(principal) + "/tokens",
    )
    if ask is not None:
        return ask
    tokens.revoke_token(db, runtime.clock, token, actor=principal.actor)
    return redirect(request, base_url(principal) + "/tokens", f"The token {token.name} is revoked.")


# --- security log, alerts -------------------------------------------------------------------------


@router.get("/security")
def security(request: Request, principal: SecurityRead, db: Db, page: PageNo) -> Response:
    alerts, total = threats.list_alerts(db, organization_id=principal.org_id, limit=10, offset=0)
    return render(
        request,
        "portal/security.html",
        {"title": "Security", "alerts": alerts, "alert_total": total},
        principal=principal,
        db=db,
        section="Security",
    )


@router.get("/security/log")
def security_log(
    request: Request, principal: AuditRead, db: Db, page: PageNo, action: str = ""
) -> Response:
    rows, total = audit_log.list_events(
        db,
        organization_id=principal.org_id,
        action=action[:64] or None,
        limit=page.per_page,
        offset=page.offset,
    )
    return render(
        request,
        "portal/security_log.html",
        {
            "title": "Security log",
            "events": rows,
            "pg": page.with_total(total),
            "action": action[:64],
        },
        principal=principal,
        db=db,
        section="Security",
    )


@router.get("/security/alerts")
def alerts_page(request: Request, principal: SecurityRead, db: Db, page: PageNo) -> Response:
    rows, total = threats.list_alerts(
        db, organization_id=principal.org_id, limit=page.per_page, offset=page.offset
    )
    return render(
        request,
        "portal/alerts.html",
        {"title": "Security alerts", "alerts": rows, "pg": page.with_total(total)},
        principal=principal,
        db=db,
        section="Security",
    )


@router.post("/security/alerts/{alert_id}/acknowledge")
def acknowledge(
    request: Request, alert_id: str, principal: SecurityWrite, db: Db, runtime: RuntimeDep
) -> Response:
    alert = db.get(SecurityAlert, alert_id[:64])
    if alert is None or alert.organization_id != principal.org_id:
        raise NotFound("no such alert")
    alert.acknowledged_at = alert.acknowledged_at or runtime.clock.now()
    return redirect(request, base_url(principal) + "/security/alerts", "Alert acknowledged.")


# --- access reviews -------------------------------------------------------------------------------


@router.get("/security/reviews")
def reviews_page(request: Request, principal: SecurityRead, db: Db) -> Response:
    return render(
        request,
        "portal/reviews.html",
        {"title": "Access reviews", "reviews": reviews.list_reviews(db, principal.org_id)},
        principal=principal,
        db=db,
        section="Security",
    )


@router.post("/security/reviews")
def open_review(
    request: Request, principal: SecurityWrite, db: Db, runtime: RuntimeDep
) -> Response:
    review = reviews.open_review(db, runtime.clock, runtime.settings.security, principal.org)
    if review is None:
        return redirect(
            request,
            base_url(principal) + "/security/reviews",
            "This period's review is open already.",
        )
    return redirect(request, f"{base_url(principal)}/security/reviews/{review.id}")


@router.get("/security/reviews/{review_id}")
def review_page(request: Request, review_id: str, principal: SecurityRead, db: Db) -> Response:
    review = reviews.get_review(db, principal.org_id, review_id[:64])
    return render(
        request,
        "portal/review.html",
        {
            "title": f"Access review {review.period_label}",
            "review": review,
            "items": reviews.review_items(db, review.id),
        },
        principal=principal,
        db=db,
        section="Security",
    )


@router.post("/security/reviews/{review_id}/items/{item_id}")
def decide(
    request: Request,
    review_id: str,
    item_id: str,
    principal: SecurityWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    review = reviews.get_review(db, principal.org_id, review_id[:64])
    decision = text(form, "decision", max_length=16)
    url = f"{base_url(principal)}/security/reviews/{review.id}"
    if decision == "revoke":
        ask = confirmation(
            request,
            form,
            principal=principal,
            db=db,
            question="Revoke this access?",
            consequence="A member is removed from the organization; a token is revoked.",
            button="Revoke access",
            cancel_url=url,
        )
        if ask is not None:
            return ask
    try:
        reviews.decide(
            db,
            runtime.clock,
            principal.org,
            review,
            item_id[:64],
            decision,
            actor=principal.actor,
            actor_role=principal.role_for_rules,
        )
    except DomainError as exc:
        db.rollback()
        return redirect(request, url, exc.detail)
    return redirect(request, url, "Decision recorded.")


@router.post("/security/reviews/{review_id}/complete")
def complete_review(
    request: Request, review_id: str, principal: SecurityWrite, db: Db, runtime: RuntimeDep
) -> Response:
    review = reviews.get_review(db, principal.org_id, review_id[:64])
    url = f"{base_url(principal)}/security/reviews/{review.id}"
    try:
        reviews.complete(db, runtime.clock, principal.org, review, actor=principal.actor)
    except DomainError as exc:
        db.rollback()
        return redirect(request, url, exc.detail)
    return redirect(request, url, "The review is complete.")


# --- organization settings --------------------------------------------------------------------

OrgWrite = Annotated[Principal, Depends(page_require("organization", Access.WRITE))]
SETTINGS_FIELDS = {"name", "country", "tax_id", "billing_email", "password_min_length"}


def _settings_page(
    request: Request,
    principal: Principal,
    db: Db,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    org = principal.org
    current = {
        "name": org.name,
        "country": org.country or "",
        "tax_id": org.tax_id or "",
        "billing_email": org.billing_email or "",
        "password_min_length": str(org.password_min_length or ""),
        "require_mfa": "on" if org.require_mfa else "",
    }
    return render(
        request,
        "portal/settings.html",
        {
            "title": "Organization settings",
            "values": values if values is not None else current,
            "errors": errors or FormErrors(),
            "is_owner": principal.role_for_rules in (OrgRole.OWNER, None),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Settings",
    )


@router.get("/settings")
def settings_page(request: Request, principal: OrgRead, db: Db) -> Response:
    return _settings_page(request, principal, db)


@router.post("/settings")
def save_settings(
    request: Request, principal: OrgWrite, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    org = principal.org
    require_mfa = form.get("require_mfa") == "on"
    try:
        if require_mfa != org.require_mfa and principal.role_for_rules not in (OrgRole.OWNER, None):
            raise PermissionDenied("Only an owner can require two-factor authentication.")
        length = text(form, "password_min_length", max_length=5).strip()
        try:
            min_length = int(length) if length else None
        except ValueError:
            raise InvalidInput("Type a whole number.", field="password_min_length") from None
        accounts.update_organization(
            db,
            runtime.clock,
            org,
            actor=principal.actor,
            name=text(form, "name", max_length=300),
            country=text(form, "country", max_length=10) or None,
            tax_id=text(form, "tax_id", max_length=100),
            billing_email=text(form, "billing_email", max_length=320) or None,
            password_min_length=min_length,
            require_mfa=require_mfa if require_mfa != org.require_mfa else None,
        )
    except DomainError as exc:
        db.rollback()
        return _settings_page(
            request,
            principal,
            db,
            values=values_of(form),
            errors=FormErrors.of(exc, SETTINGS_FIELDS),
            status=exc.status,
        )
    return redirect(request, base_url(principal) + "/settings", "Settings saved.")
