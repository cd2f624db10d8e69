"""The signed-in person's own account: profile, password, two-factor authentication with its
recovery codes, and active sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from starlette.responses import Response

from imhost.accounts import email_change, sessions
from imhost.accounts.auth import confirmed_factor, mfa_required
from imhost.accounts.models import EmailChange, User
from imhost.kit.errors import DomainError, InvalidInput, TooManyRequests, Unauthenticated
from imhost.web.api.v1.auth import set_session_cookie
from imhost.web.deps import Db, Principal, RuntimeDep, client_address, commit_even_on_refusal
from imhost.web.pages import (
    Form,
    FormErrors,
    confirmation,
    markup,
    page_public,
    redirect,
    render,
    text,
    values_of,
)
from imhost.web.portal.auth import SelfPage, SelfPending

router = APIRouter(prefix="/portal/account", include_in_schema=False)

PublicPage = Annotated[Principal, Depends(page_public())]


def _account(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    *,
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    user = principal.user
    assert user is not None
    return render(
        request,
        "portal/account.html",
        {
            "title": "Your account",
            "user": user,
            "values": values or {"name": user.name},
            "errors": errors or FormErrors(),
            "mfa_on": confirmed_factor(db, user.id) is not None,
            "mfa_required": mfa_required(db, user),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Account",
    )


@router.get("")
def account(request: Request, principal: SelfPage, db: Db, runtime: RuntimeDep) -> Response:
    return _account(request, principal, db, runtime)


@router.post("")
def update_profile(
    request: Request, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.user is not None
    name = text(form, "name", max_length=300).strip()
    if len(name) > 200:
        return _account(
            request,
            principal,
            db,
            runtime,
            values=values_of(form),
            errors=FormErrors(fields={"name": "Use at most 200 characters."}),
            status=422,
        )
    principal.user.name = name
    return redirect(request, "/portal/account", "Your profile is saved.")


# --- password -------------------------------------------------------------------------------


def _password_page(
    request: Request,
    principal: Principal,
    db: Db,
    errors: FormErrors | None = None,
    status: int = 200,
    *,
    error: DomainError | None = None,
) -> Response:
    return render(
        request,
        "portal/password.html",
        {"title": "Change password", "errors": errors or FormErrors(), "values": {}},
        principal=principal,
        db=db,
        status_code=status,
        error=error,
        section="Account",
    )


@router.get("/password")
def password_page(request: Request, principal: SelfPage, db: Db) -> Response:
    return _password_page(request, principal, db)


@router.post("/password")
def change_password(
    request: Request, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None
    new_password = text(form, "new_password", max_length=1024)
    if new_password != text(form, "repeat_password", max_length=1024):
        return _password_page(
            request,
            principal,
            db,
            FormErrors(fields={"repeat_password": "The two new passwords differ."}),
            422,
        )
    try:
        with commit_even_on_refusal(db):
            new = runtime.auth.change_password(
                db,
                principal.web_session,
                current=text(form, "current_password", max_length=1024),
                new=new_password,
            )
    except (Unauthenticated, TooManyRequests) as exc:
        return _password_page(
            request,
            principal,
            db,
            FormErrors(fields={"current_password": exc.detail}),
            error=exc,
        )
    except DomainError as exc:
        db.rollback()
        return _password_page(
            request,
            principal,
            db,
            FormErrors.of(exc, {"new_password", "current_password"}),
            error=exc,
        )
    response = redirect(
        request, "/portal/account", "Your password is changed; your other sessions have ended."
    )
    set_session_cookie(response, runtime, new.cookie_value)
    return response


# --- e-mail address ---------------------------------------------------------------------------


def _email_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    error: DomainError | None = None,
    status: int = 200,
) -> Response:
    user = user_of(principal)
    pending = db.scalar(
        select(EmailChange)
        .where(
            EmailChange.user_id == user.id,
            EmailChange.used_at.is_(None),
            EmailChange.cancelled_at.is_(None),
            EmailChange.expires_at > runtime.clock.now(),
        )
        .order_by(EmailChange.created_at.desc())
    )
    return render(
        request,
        "portal/email.html",
        {
            "title": "Change your e-mail address",
            "user": user,
            "pending": pending,
            "values": values or {},
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        error=error,
        section="Account",
    )


@router.get("/email")
def email_page(request: Request, principal: SelfPage, db: Db, runtime: RuntimeDep) -> Response:
    return _email_page(request, principal, db, runtime)


@router.post("/email")
def request_email_change(
    request: Request, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    """Send the confirmation link to the new address (and a notice to the old one); nothing
    changes until the link is opened."""
    assert principal.web_session is not None
    values = values_of(form)
    try:
        password = text(form, "password", max_length=1024)
        if not password:
            raise InvalidInput("Type your password to confirm this change.", field="password")
        try:
            with commit_even_on_refusal(db):
                runtime.auth.reauthenticate(db, principal.web_session, password)
        except (Unauthenticated, TooManyRequests) as exc:
            return _email_page(
                request,
                principal,
                db,
                runtime,
                values=values,
                errors=FormErrors(fields={"password": exc.detail}),
                error=exc,
            )
        change = email_change.request_change(
            db,
            runtime.clock,
            user_of(principal),
            text(form, "new_email", max_length=320),
            address=client_address(request),
        )
    except DomainError as exc:
        db.rollback()
        return _email_page(
            request,
            principal,
            db,
            runtime,
            values=values,
            errors=FormErrors.of(exc, {"new_email", "password"}),
            status=exc.status,
        )
    return redirect(
        request,
        "/portal/account/email",
        f"We sent a link to {change.new_email}. Open it to confirm the new address; until "
        "then your address stays as it is.",
    )


def _email_link_page(
    request: Request,
    principal: Principal,
    *,
    kind: str,
    token: str = "",
    change: EmailChange | None = None,
    error: str = "",
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/email_link.html",
        {
            "title": "Confirm your new e-mail address"
            if kind == "confirm"
            else "Stop the change of your e-mail address",
            "kind": kind,
            "token": token,
            "change": change,
            "error": error,
        },
        principal=principal,
        status_code=status,
    )


@router.get("/email/{token}")
def email_confirm_page(
    request: Request, token: str, principal: PublicPage, db: Db, runtime: RuntimeDep
) -> Response:
    """The link sent to the new address: a button (a GET changes nothing: mail scanners open
    links)."""
    try:
        change = email_change.find_change(db, runtime.clock, token[:200])
    except DomainError as exc:
        return _email_link_page(
            request, principal, kind="confirm", error=exc.detail, status=exc.status
        )
    return _email_link_page(request, principal, kind="confirm", token=token[:200], change=change)


@router.post("/email/{token}")
def email_confirm(
    request: Request, token: str, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        user = email_change.confirm_change(
            db, runtime.clock, token[:200], address=client_address(request)
        )
    except DomainError as exc:
        db.rollback()
        return _email_link_page(
            request, principal, kind="confirm", error=exc.detail, status=exc.status
        )
    return redirect(
        request, "/portal/account", f"Your e-mail address is now {user.email}; it is confirmed."
    )


@router.get("/email/cancel/{token}")
def email_cancel_page(
    request: Request, token: str, principal: PublicPage, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        change = email_change.find_change_to_cancel(db, runtime.clock, token[:200])
    except DomainError as exc:
        return _email_link_page(
            request, principal, kind="cancel", error=exc.detail, status=exc.status
        )
    return _email_link_page(request, principal, kind="cancel", token=token[:200], change=change)


@router.post("/email/cancel/{token}")
def email_cancel(
    request: Request, token: str, principal: PublicPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        change = email_change.cancel_change(
            db, runtime.clock, token[:200], address=client_address(request)
        )
    except DomainError as exc:
        db.rollback()
        return _email_link_page(
            request, principal, kind="cancel", error=exc.detail, status=exc.status
        )
    return redirect(
        request,
        "/portal/sign-in",
        f"The change is stopped: the account keeps {change.old_email}. If you did not ask for "
        "it, change your password now.",
    )


# --- two-factor authentication ------------------------------------------------------------------


def _mfa_page(request: Request, principal: Principal, db: Db, **ctx: object) -> Response:
    user = principal.user
    assert user is not None and principal.web_session is not None
    status = int(ctx.pop("status", 200))  # type: ignore[call-overload]
    error = ctx.pop("error", None)
    assert error is None or isinstance(error, DomainError)
    base: dict[str, object] = {
        "title": "Two-factor authentication",
        "mfa_on": confirmed_factor(db, user.id) is not None,
        "mfa_required": mfa_required(db, user),
        "pending": not principal.web_session.mfa_verified,
        "errors": FormErrors(),
    }
    base.update(ctx)
    return render(
        request,
        "portal/mfa.html",
        base,
        principal=principal,
        db=db,
        status_code=status,
        section="Account",
        error=error,
    )


@router.get("/mfa")
def mfa_page(request: Request, principal: SelfPending, db: Db) -> Response:
    return _mfa_page(request, principal, db)


def _reauthenticate(db: Db, runtime: RuntimeDep, principal: Principal, form: Form) -> None:
    """Security changes after the first enrolment need the password again."""
    assert principal.web_session is not None
    password = text(form, "password", max_length=1024)
    if not password:
        raise InvalidInput("Type your password to confirm this change.", field="password")
    with commit_even_on_refusal(db):
        runtime.auth.reauthenticate(db, principal.web_session, password)


@router.post("/mfa/start")
def start_mfa(
    request: Request, principal: SelfPending, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None and principal.user is not None
    try:
        if confirmed_factor(db, principal.user.id) is not None:
            if not principal.web_session.mfa_verified:
                raise Unauthenticated("Enter a code from your current app first.")
            _reauthenticate(db, runtime, principal, form)
        factor, uri, svg = runtime.auth.start_totp_enrolment(
            db, principal.web_session, issuer=runtime.settings.provider_name
        )
    except DomainError as exc:
        return _mfa_page(request, principal, db, errors=FormErrors.of(exc, {"password"}), error=exc)
    return _mfa_page(
        request, principal, db, factor_id=factor.id, secret=factor.secret, uri=uri, qr=markup(svg)
    )


@router.post("/mfa/confirm")
def confirm_mfa(
    request: Request, principal: SelfPending, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None and principal.user is not None
    factor_id = text(form, "factor_id", max_length=64)
    try:
        if (
            not principal.web_session.mfa_verified
            and confirmed_factor(db, principal.user.id) is not None
        ):
            raise Unauthenticated("Enter a code from your current app first.")
        codes = runtime.auth.confirm_totp_enrolment(
            db,
            principal.web_session,
            factor_id=factor_id,
            code=text(form, "code", max_length=64).strip(),
        )
    except DomainError as exc:
        from imhost.accounts.mfa import provisioning_uri, qr_svg
        from imhost.accounts.models import MfaFactor

        factor = db.get(MfaFactor, factor_id)
        if factor is None or factor.user_id != principal.user.id or factor.confirmed_at is not None:
            return _mfa_page(
                request, principal, db, errors=FormErrors(general=[exc.detail]), error=exc
            )
        uri = provisioning_uri(factor.secret, principal.user.email, runtime.settings.provider_name)
        return _mfa_page(
            request,
            principal,
            db,
            factor_id=factor.id,
            secret=factor.secret,
            uri=uri,
            qr=markup(qr_svg(uri)),
            errors=FormErrors(fields={"code": exc.detail}),
            error=exc,
        )
    return _mfa_page(request, principal, db, recovery_codes=codes, mfa_on=True, pending=False)


@router.post("/mfa/recovery-codes")
def new_recovery_codes(
    request: Request, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None
    try:
        _reauthenticate(db, runtime, principal, form)
        codes = runtime.auth.regenerate_recovery_codes(db, principal.web_session)
    except DomainError as exc:
        return _mfa_page(request, principal, db, errors=FormErrors.of(exc, {"password"}), error=exc)
    return _mfa_page(request, principal, db, recovery_codes=codes)


@router.post("/mfa/disable")
def disable_mfa(
    request: Request, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.web_session is not None
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question="Turn off two-factor authentication?",
        consequence="Anyone with your password could then sign in as you.",
        button="Turn it off",
        cancel_url="/portal/account/mfa",
    )
    if ask is not None:
        return ask
    try:
        _reauthenticate(db, runtime, principal, form)
        runtime.auth.disable_mfa(db, principal.web_session)
    except DomainError as exc:
        if not isinstance(exc, (Unauthenticated, TooManyRequests)):
            db.rollback()
        return _mfa_page(request, principal, db, errors=FormErrors.of(exc, {"password"}), error=exc)
    return redirect(request, "/portal/account/mfa", "Two-factor authentication is off.")


# --- sessions -------------------------------------------------------------------------------------


@router.get("/sessions")
def sessions_page(request: Request, principal: SelfPage, db: Db, runtime: RuntimeDep) -> Response:
    assert principal.user is not None and principal.web_session is not None
    return render(
        request,
        "portal/sessions.html",
        {
            "title": "Active sessions",
            "sessions": sessions.active_sessions(db, runtime.clock, principal.user.id),
            "current": principal.web_session.id,
        },
        principal=principal,
        db=db,
        section="Account",
    )


@router.post("/sessions/{session_id}/end")
def end_session(
    request: Request, session_id: str, principal: SelfPage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    assert principal.user is not None
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question="End this session?",
        consequence="That browser will have to sign in again.",
        button="End session",
        cancel_url="/portal/account/sessions",
    )
    if ask is not None:
        return ask
    sessions.end_user_session(
        db,
        runtime.clock,
        user_id=principal.user.id,
        session_id=session_id[:64],
        actor=principal.actor,
    )
    return redirect(request, "/portal/account/sessions", "The session has ended.")


def user_of(principal: Principal) -> User:
    assert principal.user is not None
    return principal.user
