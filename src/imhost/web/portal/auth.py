"""Signing in (password, then the second factor), signing out, signing up with a plan,
confirming an e-mail address and accepting an invitation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from imhost.accounts import recovery, sessions
from imhost.accounts import service as accounts
from imhost.accounts.auth import confirmed_factor
from imhost.accounts.models import OrgRole, OrgStatus, User, WebSession
from imhost.accounts.permissions import Access, Scope
from imhost.accounts.sessions import COOKIE_NAME
from imhost.accounts.signup import SignupForm, find_signup, join_by_invitation, request_signup
from imhost.catalog import service as catalog
from imhost.kit.errors import DomainError, InvalidInput, NotFound, TooManyRequests, Unauthenticated
from imhost.web.api.v1.auth import finish_signup, set_session_cookie
from imhost.web.deps import Db, Principal, RuntimeDep, client_address, commit_even_on_refusal
from imhost.web.pages import (
    Form,
    FormErrors,
    commit_now,
    page_public,
    page_require,
    redirect,
    render,
    safe_next,
    text,
    values_of,
)

router = APIRouter(include_in_schema=False)

PublicPage = Annotated[Principal, Depends(page_public())]
SelfPage = Annotated[Principal, Depends(page_require("self", Access.WRITE, scope=Scope.SELF))]
SelfPending = Annotated[
    Principal,
    Depends(page_require("self", Access.WRITE, scope=Scope.SELF, allow_mfa_pending=True)),
]


def home_for(db: Db, user: User) -> str:
    """Where signing in lands: the first open organization; the list of organizations when
    all of the person's organizations are closed."""
    orgs = accounts.organizations_of(db, user.id)
    open_orgs = [org for org, _ in orgs if org.status != OrgStatus.CLOSED.value]
    if open_orgs:
        return f"/portal/orgs/{open_orgs[0].slug}/"
    if orgs:
        return "/portal/orgs"
    if user.staff_role:
        return "/console/"
    return "/portal/account"


@router.get("/")
def root(_: PublicPage) -> Response:
    return RedirectResponse("/portal/", status_code=303)


@router.get("/portal/")
def portal_home(principal: SelfPage, db: Db) -> Response:
    assert principal.user is not None
    return RedirectResponse(home_for(db, principal.user), status_code=303)


@router.get("/portal/orgs")
def organizations_page(request: Request, principal: SelfPage, db: Db) -> Response:
    """Every organization the person belongs to, with their role and its status."""
    assert principal.user is not None
    return render(
        request,
        "portal/orgs.html",
        {"title": "Your organizations", "orgs": accounts.organizations_of(db, principal.user.id)},
        principal=principal,
        db=db,
        section="Organizations",
    )


# --- sign in -------------------------------------------------------------------------------


@router.get("/portal/sign-in")
def sign_in_page(request: Request, principal: PublicPage, next: str = "") -> Response:
    return render(
        request,
        "portal/sign_in.html",
        {"values": {"next": safe_next(next, "")}, "errors": FormErrors(), "title": "Sign in"},
        principal=principal,
    )


@router.post("/portal/sign-in")
def sign_in(
    request: Request, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    values = values_of(form)
    email = text(form, "email", max_length=320)
    try:
        with commit_even_on_refusal(db):
            result = runtime.auth.login(
                db,
                email=email,
                password=text(form, "password", max_length=1024),
                address=client_address(request),
                user_agent=request.headers.get("user-agent"),
            )
    except (Unauthenticated, TooManyRequests) as exc:
        return render(
            request,
            "portal/sign_in.html",
            {"values": values, "errors": FormErrors(general=[exc.detail]), "title": "Sign in"},
            principal=principal,
            error=exc,
        )
    target = safe_next(text(form, "next"), "")
    if result.mfa_pending:
        location = "/portal/sign-in/code" + (f"?next={target}" if target else "")
    elif result.mfa_enrolment_required:
        location = "/portal/account/mfa"
    else:
        location = target or home_for(db, result.user)
    commit_now(request)
    response = RedirectResponse(location, status_code=303)
    set_session_cookie(response, runtime, result.cookie_value)
    return response


@router.get("/portal/sign-in/code")
def code_page(request: Request, principal: SelfPending, db: Db, next: str = "") -> Response:
    assert principal.web_session is not None
    if principal.web_session.mfa_verified:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(
        request,
        "portal/sign_in_code.html",
        {
            "values": {"next": safe_next(next, "")},
            "errors": FormErrors(),
            "title": "Enter your code",
        },
        principal=principal,
        db=db,
    )


@router.post("/portal/sign-in/code")
def verify_code(
    request: Request, principal: SelfPending, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None and principal.user is not None
    try:
        with commit_even_on_refusal(db):
            runtime.auth.verify_second_factor(
                db, principal.web_session, text(form, "code", max_length=64).strip()
            )
    except (Unauthenticated, TooManyRequests, DomainError) as exc:
        return render(
            request,
            "portal/sign_in_code.html",
            {
                "values": {"next": safe_next(text(form, "next"), "")},
                "errors": FormErrors(fields={"code": exc.detail}),
                "title": "Enter your code",
            },
            principal=principal,
            db=db,
            error=exc,
        )
    commit_now(request)
    return RedirectResponse(
        safe_next(text(form, "next"), home_for(db, principal.user)), status_code=303
    )


@router.post("/portal/sign-out")
def sign_out(request: Request, principal: SelfPending, db: Db, runtime: RuntimeDep) -> Response:
    assert principal.web_session is not None
    sessions.end_session(
        db, runtime.clock, principal.web_session, reason="signed out", actor=principal.actor
    )
    response = redirect(request, "/portal/sign-in", "You are signed out.")
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


# --- sign up -------------------------------------------------------------------------------


def public_plans(db: Db) -> list[Any]:
    return [catalog.plan_out(v) for v in catalog.list_plans(db) if v.versions]


def _signup_page(
    request: Request,
    principal: Principal,
    db: Db,
    values: dict[str, str],
    errors: FormErrors,
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/sign_up.html",
        {"values": values, "errors": errors, "plans": public_plans(db), "title": "Sign up"},
        principal=principal,
        status_code=status,
    )


@router.get("/portal/sign-up")
def sign_up_page(request: Request, principal: PublicPage, db: Db, plan: str = "") -> Response:
    return _signup_page(request, principal, db, {"plan": plan[:64]}, FormErrors())


SIGNUP_FIELDS = {"email", "password", "name", "organization_name", "country", "plan"}


@router.post("/portal/sign-up")
def sign_up(
    request: Request, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    """Check the form and answer "check your e-mail" whether or not the address has an
    account; the link in the message finishes the sign-up (accounts.signup)."""
    values = values_of(form)
    plan_version_id = text(form, "plan", max_length=64)
    try:
        plans = public_plans(db)
        if plans and not any(v.id == plan_version_id for p in plans for v in p.versions):
            raise InvalidInput("Pick a plan.", field="plan")
        message = request_signup(
            db,
            runtime.clock,
            runtime.settings.security,
            SignupForm(
                email=text(form, "email", max_length=320),
                password=text(form, "password", max_length=1024),
                name=text(form, "name", max_length=200),
                organization_name=text(form, "organization_name", max_length=200),
                country=text(form, "country", max_length=2).strip() or None,
                plan_version_id=plan_version_id or None,
            ),
            address=client_address(request),
        )
    except DomainError as exc:
        db.rollback()
        return _signup_page(
            request, principal, db, values, FormErrors.of(exc, SIGNUP_FIELDS), exc.status
        )
    commit_now(request)
    return render(
        request,
        "portal/check_email.html",
        {"title": "Check your e-mail", "message": message, "again_href": "/portal/sign-up"},
        principal=principal,
        status_code=202,
    )


@router.get("/portal/sign-up/{token}")
def sign_up_finish_page(
    request: Request, token: str, principal: PublicPage, db: Db, runtime: RuntimeDep
) -> Response:
    """The link of the sign-up e-mail: a button (a GET must not make the account: mail
    scanners open links)."""
    try:
        pending = find_signup(db, runtime.clock, token[:200])
    except NotFound as exc:
        return render(
            request,
            "portal/sign_up_finish.html",
            {"error": exc.detail, "title": "Finish signing up"},
            principal=principal,
            status_code=404,
        )
    return render(
        request,
        "portal/sign_up_finish.html",
        {
            "token": token[:200],
            "email": pending.email,
            "organization_name": pending.organization_name,
            "title": "Finish signing up",
        },
        principal=principal,
    )


@router.post("/portal/sign-up/{token}")
def sign_up_finish(
    request: Request, token: str, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        done = finish_signup(db, runtime, token[:200], client_address(request))
    except DomainError as exc:
        db.rollback()
        return render(
            request,
            "portal/sign_up_finish.html",
            {"error": exc.detail, "title": "Finish signing up"},
            principal=principal,
            status_code=exc.status,
        )
    new = sessions.start_session(
        db,
        runtime.clock,
        runtime.settings.security,
        user_id=done.user.id,
        address=client_address(request),
        user_agent=request.headers.get("user-agent"),
        mfa_verified=True,
    )
    response = redirect(
        request, f"/portal/orgs/{done.organization.slug}/", "Welcome! Your account is ready."
    )
    set_session_cookie(response, runtime, new.cookie_value)
    return response


# --- forgotten passwords --------------------------------------------------------------------


@router.get("/portal/forgot-password")
def forgot_password_page(request: Request, principal: PublicPage) -> Response:
    return render(
        request,
        "portal/forgot_password.html",
        {"values": {}, "errors": FormErrors(), "title": "Forgot your password?"},
        principal=principal,
    )


@router.post("/portal/forgot-password")
def forgot_password(
    request: Request, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    """The same page whether or not an account has the address (accounts.recovery)."""
    values = values_of(form)
    try:
        message = recovery.request_reset(
            db,
            runtime.clock,
            runtime.settings.security,
            email=text(form, "email", max_length=320),
            address=client_address(request),
        )
    except DomainError as exc:
        db.rollback()
        return render(
            request,
            "portal/forgot_password.html",
            {
                "values": values,
                "errors": FormErrors.of(exc, {"email"}),
                "title": "Forgot your password?",
            },
            principal=principal,
            status_code=exc.status,
        )
    commit_now(request)
    return render(
        request,
        "portal/check_email.html",
        {"title": "Check your e-mail", "message": message, "again_href": "/portal/forgot-password"},
        principal=principal,
        status_code=202,
    )


def _reset_page(
    request: Request,
    principal: Principal,
    *,
    token: str,
    email: str = "",
    invalid: str = "",
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/reset_password.html",
        {
            "token": token,
            "email": email,
            "invalid": invalid,
            "values": {},
            "errors": errors or FormErrors(),
            "title": "Choose a new password",
        },
        principal=principal,
        status_code=status,
    )


@router.get("/portal/reset-password/{token}")
def reset_password_page(
    request: Request, token: str, principal: PublicPage, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        _, user = recovery.find_reset(db, runtime.clock, token[:200])
    except NotFound as exc:
        return _reset_page(request, principal, token="", invalid=exc.detail, status=404)
    return _reset_page(request, principal, token=token[:200], email=user.email)


@router.post("/portal/reset-password/{token}")
def reset_password(
    request: Request, token: str, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        user = recovery.complete_reset(
            db,
            runtime.clock,
            runtime.settings.security,
            token=token[:200],
            new_password=text(form, "new_password", max_length=1024),
            address=client_address(request),
        )
    except NotFound as exc:
        db.rollback()
        return _reset_page(request, principal, token="", invalid=exc.detail, status=404)
    except DomainError as exc:
        db.rollback()
        _, user = recovery.find_reset(db, runtime.clock, token[:200])
        return _reset_page(
            request,
            principal,
            token=token[:200],
            email=user.email,
            errors=FormErrors.of(exc, {"new_password"}),
            status=exc.status,
        )
    response = redirect(
        request,
        "/portal/sign-in",
        f"Your new password is saved. Sign in with it, {user.email}.",
    )
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


# --- e-mail verification and invitations ----------------------------------------------------


@router.get("/portal/verify-email/{token}")
def verify_email_page(request: Request, token: str, principal: PublicPage) -> Response:
    return render(
        request,
        "portal/verify_email.html",
        {"token": token[:200], "title": "Confirm your e-mail"},
        principal=principal,
    )


@router.post("/portal/verify-email/{token}")
def verify_email(
    request: Request, token: str, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    from imhost.accounts.verification import confirm

    try:
        user = confirm(db, runtime.clock, token[:200])
    except NotFound as exc:
        return render(
            request,
            "portal/verify_email.html",
            {"token": token[:200], "error": exc.detail, "title": "Confirm your e-mail"},
            principal=principal,
            status_code=404,
        )
    return redirect(request, "/portal/sign-in", f"Thank you: {user.email} is confirmed.")


def _invitation_context(db: Db, runtime: RuntimeDep, token: str) -> dict[str, Any]:
    try:
        inv = accounts.find_invitation(db, runtime.clock, token[:200])
    except NotFound as exc:
        return {"error": exc.detail, "token": token}
    org = accounts.get_organization(db, inv.organization_id)
    return {
        "invitation": inv,
        "org_name": org.name,
        "role": OrgRole(inv.role).value,
        "token": token,
    }


@router.get("/portal/invitations/{token}")
def invitation_page(
    request: Request, token: str, principal: PublicPage, db: Db, runtime: RuntimeDep
) -> Response:
    ctx = _invitation_context(db, runtime, token)
    web = _signed_in(request, db, runtime)
    user = db.get(User, web.user_id) if web is not None else None
    ctx.update(
        signed_in_as=user.email if user else None,
        title="Invitation",
        values={},
        errors=FormErrors(),
    )
    if web is not None:
        ctx["csrf_token"] = web.csrf_token
    return render(
        request,
        "portal/invitation.html",
        ctx,
        principal=principal,
        status_code=404 if "error" in ctx else 200,
    )


def _signed_in(request: Request, db: Db, runtime: RuntimeDep) -> WebSession | None:
    cookie = request.cookies.get(COOKIE_NAME)
    web = (
        sessions.lookup_session(db, runtime.clock, runtime.settings.security, cookie)
        if cookie
        else None
    )
    return web if web is not None and web.mfa_verified else None


@router.post("/portal/invitations/{token}")
def accept_invitation(
    request: Request, token: str, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.user is not None
    try:
        membership = accounts.accept_invitation(db, runtime.clock, token[:200], principal.user)
    except DomainError as exc:
        db.rollback()
        ctx = _invitation_context(db, runtime, token)
        ctx.update(
            signed_in_as=principal.user.email,
            error=exc.detail,
            title="Invitation",
            values={},
            errors=FormErrors(),
        )
        return render(
            request,
            "portal/invitation.html",
            ctx,
            principal=principal,
            db=db,
            error=exc,
        )
    org = accounts.get_organization(db, membership.organization_id)
    return redirect(request, f"/portal/orgs/{org.slug}/", f"You joined {org.name}.")


@router.post("/portal/invitations/{token}/join")
def join_invitation(
    request: Request, token: str, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    """An invited person without an account makes just their user (name and password; the
    invited address counts as verified) and lands in the inviting organization."""
    values = values_of(form)
    try:
        password = text(form, "password", max_length=1024)
        if password != text(form, "repeat_password", max_length=1024):
            raise InvalidInput("The two passwords differ.", field="repeat_password")
        joined = join_by_invitation(
            db,
            runtime.clock,
            runtime.settings.security,
            token[:200],
            name=text(form, "name", max_length=300),
            password=password,
        )
    except DomainError as exc:
        db.rollback()
        ctx = _invitation_context(db, runtime, token)
        ctx.update(
            title="Invitation",
            signed_in_as=None,
            values=values,
            errors=FormErrors.of(exc, {"name", "password", "repeat_password"}),
        )
        return render(
            request, "portal/invitation.html", ctx, principal=principal, status_code=exc.status
        )
    new = sessions.start_session(
        db,
        runtime.clock,
        runtime.settings.security,
        user_id=joined.user.id,
        address=client_address(request),
        user_agent=request.headers.get("user-agent"),
        mfa_verified=True,
    )
    response = redirect(
        request,
        f"/portal/orgs/{joined.organization.slug}/",
        f"Welcome! You joined {joined.organization.name}.",
    )
    set_session_cookie(response, runtime, new.cookie_value)
    return response


def has_mfa(db: Db, user_id: str) -> bool:
    return confirmed_factor(db, user_id) is not None


# --- links in e-mails that name no organization ------------------------------------------------


@router.get("/portal/security")
def security_link(principal: SelfPage, db: Db) -> Response:
    """The security e-mails link here: the security page of the person's first organization."""
    assert principal.user is not None
    orgs = accounts.organizations_of(db, principal.user.id)
    if not orgs:
        return RedirectResponse("/portal/account/sessions", status_code=303)
    return RedirectResponse(f"/portal/orgs/{orgs[0][0].slug}/security", status_code=303)


@router.get("/portal/security/reviews/{review_id}")
def review_link(review_id: str, principal: SelfPage, db: Db) -> Response:
    """The access-review e-mail links here: the review in its organization's pages."""
    from imhost.accounts.models import AccessReview

    assert principal.user is not None
    review = db.get(AccessReview, review_id[:64])
    if (
        review is None
        or accounts.get_membership(db, review.organization_id, principal.user.id) is None
    ):
        raise NotFound("no such access review")
    org = accounts.get_organization(db, review.organization_id)
    return RedirectResponse(
        f"/portal/orgs/{org.slug}/security/reviews/{review.id}", status_code=303
    )
