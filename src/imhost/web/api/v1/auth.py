"""Signing in and out, the second factor, sign-up and invitations."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from imhost.accounts import recovery, sessions
from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import WebSession
from imhost.accounts.schemas import (
    AcceptedOut,
    AcceptInvitationIn,
    CodeIn,
    InvitationRegisterIn,
    LoginIn,
    LoginOut,
    OrganizationOut,
    PasswordResetIn,
    PasswordResetRequestIn,
    SignupCompleteIn,
    SignupIn,
)
from imhost.accounts.signup import CompletedSignup, SignupForm, complete_signup, request_signup
from imhost.billing import service as billing
from imhost.runtime import Runtime
from imhost.web.deps import (
    Db,
    Public,
    RuntimeDep,
    SelfMfaPending,
    SelfUser,
    client_address,
    commit_even_on_refusal,
)

router = APIRouter(tags=["auth"])


def set_session_cookie(response: Response, runtime: Runtime, value: str) -> None:
    response.set_cookie(
        sessions.COOKIE_NAME,
        value,
        max_age=runtime.settings.security.session_absolute_hours * 3600,
        httponly=True,
        secure=runtime.settings.security.cookie_secure,
        samesite="lax",
        path="/",
    )


def _login_out(
    user_id: str, email: str, web: WebSession, *, pending: bool, enrol: bool
) -> LoginOut:
    return LoginOut(
        user_id=user_id,
        email=email,
        mfa_pending=pending,
        mfa_enrolment_required=enrol,
        csrf_token=web.csrf_token,
    )


@router.post("/auth/login", response_model=LoginOut)
def login(
    body: LoginIn, request: Request, response: Response, db: Db, runtime: RuntimeDep, _: Public
) -> LoginOut:
    """Sign in with e-mail and password; sets the session cookie.

    When the person has a second factor, the session can do nothing but ``POST /auth/mfa``
    until a code is verified.
    """
    with commit_even_on_refusal(db):
        result = runtime.auth.login(
            db,
            email=body.email,
            password=body.password,
            address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    set_session_cookie(response, runtime, result.cookie_value)
    return _login_out(
        result.user.id,
        result.user.email,
        result.web,
        pending=result.mfa_pending,
        enrol=result.mfa_enrolment_required,
    )


@router.post("/auth/mfa", response_model=LoginOut)
def verify_mfa(body: CodeIn, principal: SelfMfaPending, db: Db, runtime: RuntimeDep) -> LoginOut:
    """Verify a TOTP code (or a recovery code) for a session that waits for it."""
    assert principal.web_session is not None and principal.user is not None
    with commit_even_on_refusal(db):
        runtime.auth.verify_second_factor(db, principal.web_session, body.code)
    return _login_out(
        principal.user.id, principal.user.email, principal.web_session, pending=False, enrol=False
    )


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(principal: SelfMfaPending, db: Db, runtime: RuntimeDep, response: Response) -> Response:
    assert principal.web_session is not None
    sessions.end_session(
        db, runtime.clock, principal.web_session, reason="signed out", actor=principal.actor
    )
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(sessions.COOKIE_NAME, path="/")
    return response


@router.post("/signup", response_model=AcceptedOut, status_code=status.HTTP_202_ACCEPTED)
def signup(body: SignupIn, request: Request, db: Db, runtime: RuntimeDep, _: Public) -> AcceptedOut:
    """Ask for an account and its organization; the link mailed to the address finishes it.

    The answer is the same whether or not the address has an account (its owner gets a
    message saying so instead of a link). Limited per e-mail and per client address (429).
    """
    answer = request_signup(
        db,
        runtime.clock,
        runtime.settings.security,
        SignupForm(
            email=body.email,
            password=body.password,
            name=body.name,
            organization_name=body.organization_name,
            country=body.country,
        ),
        address=client_address(request),
    )
    return AcceptedOut(detail=answer)


def finish_signup(
    db: Session, runtime: Runtime, token: str, address: str | None = None
) -> CompletedSignup:
    """The sign-up link: the account, its organization, and the plan chosen, if any."""
    done = complete_signup(db, runtime.clock, token)
    if done.plan_version_id:
        user = done.user
        billing.start_subscription(
            db,
            runtime.clock,
            done.organization.id,
            done.plan_version_id,
            actor=Actor(user_id=user.id, label=user.email, address=address),
        )
    return done


@router.post("/signup/complete", response_model=LoginOut, status_code=status.HTTP_201_CREATED)
def signup_complete(
    body: SignupCompleteIn,
    request: Request,
    response: Response,
    db: Db,
    runtime: RuntimeDep,
    _: Public,
) -> LoginOut:
    """Finish a sign-up with the token of its e-mail link: the account is made, signed in."""
    done = finish_signup(db, runtime, body.token, client_address(request))
    new = sessions.start_session(
        db,
        runtime.clock,
        runtime.settings.security,
        user_id=done.user.id,
        address=client_address(request),
        user_agent=request.headers.get("user-agent"),
        mfa_verified=True,
    )
    set_session_cookie(response, runtime, new.cookie_value)
    return _login_out(done.user.id, done.user.email, new.session, pending=False, enrol=False)


@router.post(
    "/auth/password-reset", response_model=AcceptedOut, status_code=status.HTTP_202_ACCEPTED
)
def password_reset_request(
    body: PasswordResetRequestIn, request: Request, db: Db, runtime: RuntimeDep, _: Public
) -> AcceptedOut:
    """Mail a link to choose a new password. The same answer whether or not an account has
    the address; limited per e-mail and per client address (429)."""
    answer = recovery.request_reset(
        db,
        runtime.clock,
        runtime.settings.security,
        email=body.email,
        address=client_address(request),
    )
    return AcceptedOut(detail=answer)


@router.post("/auth/password-reset/complete", status_code=status.HTTP_204_NO_CONTENT)
def password_reset_complete(
    body: PasswordResetIn, request: Request, db: Db, runtime: RuntimeDep, _: Public
) -> Response:
    """Choose a new password with the token of a reset link (used once). Ends every session
    of the account and clears its lockout; sign in afterwards."""
    recovery.complete_reset(
        db,
        runtime.clock,
        runtime.settings.security,
        token=body.token,
        new_password=body.new_password,
        address=client_address(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/verify-email", status_code=status.HTTP_204_NO_CONTENT)
def verify_email(body: AcceptInvitationIn, db: Db, runtime: RuntimeDep, _: Public) -> Response:
    """Confirm an e-mail address with the token from the verification message."""
    from imhost.accounts.verification import confirm

    confirm(db, runtime.clock, body.token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/invitations/register", response_model=LoginOut, status_code=status.HTTP_201_CREATED)
def register_with_invitation(
    body: InvitationRegisterIn,
    request: Request,
    response: Response,
    db: Db,
    runtime: RuntimeDep,
    _: Public,
) -> LoginOut:
    """Create an account from an invitation link (for people without one) and join, signed in.

    The e-mail address is the one the invitation was sent to, so it counts as verified.
    """
    from imhost.accounts.signup import join_by_invitation

    user = join_by_invitation(
        db,
        runtime.clock,
        runtime.settings.security,
        body.token,
        name=body.name,
        password=body.password,
    ).user
    new = sessions.start_session(
        db,
        runtime.clock,
        runtime.settings.security,
        user_id=user.id,
        address=client_address(request),
        user_agent=request.headers.get("user-agent"),
        mfa_verified=False,
    )
    set_session_cookie(response, runtime, new.cookie_value)
    required = runtime.auth.mfa_required_for(db, user)
    if not required:
        new.session.mfa_verified = True
    return _login_out(user.id, user.email, new.session, pending=False, enrol=required)


@router.post("/invitations/accept", response_model=OrganizationOut)
def accept_invitation(
    body: AcceptInvitationIn, principal: SelfUser, db: Db, runtime: RuntimeDep
) -> OrganizationOut:
    """Join the organization of an invitation, as the signed-in person it was sent to."""
    assert principal.user is not None
    membership = accounts.accept_invitation(db, runtime.clock, body.token, principal.user)
    return OrganizationOut.model_validate(accounts.get_organization(db, membership.organization_id))
