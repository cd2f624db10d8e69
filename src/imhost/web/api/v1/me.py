"""The signed-in person's own account: profile, password, MFA, sessions."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from imhost.accounts import service as accounts
from imhost.accounts import sessions
from imhost.accounts.auth import confirmed_factor, mfa_required
from imhost.accounts.schemas import (
    MeOut,
    PasswordChangeIn,
    PasswordIn,
    ProfileIn,
    RecoveryCodesOut,
    SessionOut,
    TotpConfirmIn,
    TotpEnrolmentOut,
    UserOut,
)
from imhost.web.api.v1.auth import set_session_cookie
from imhost.web.deps import Db, RuntimeDep, SelfMfaPending, SelfUser, commit_even_on_refusal

router = APIRouter(prefix="/me", tags=["me"])


@router.get("", response_model=MeOut)
def me(principal: SelfMfaPending, db: Db) -> MeOut:
    user = principal.user
    assert user is not None
    return MeOut(
        user=UserOut.model_validate(user),
        mfa_enabled=confirmed_factor(db, user.id) is not None,
        mfa_required=mfa_required(db, user),
        organizations=[
            {"id": org.id, "slug": org.slug, "name": org.name, "role": role}
            for org, role in accounts.organizations_of(db, user.id)
        ],
    )


@router.patch("", response_model=UserOut)
def update_profile(body: ProfileIn, principal: SelfUser) -> UserOut:
    assert principal.user is not None
    principal.user.name = body.name.strip()
    return UserOut.model_validate(principal.user)


@router.post("/reauthenticate", status_code=status.HTTP_204_NO_CONTENT)
def reauthenticate(
    body: PasswordIn, principal: SelfMfaPending, db: Db, runtime: RuntimeDep
) -> Response:
    """Confirm the password before a security change (valid for 10 minutes)."""
    assert principal.web_session is not None
    with commit_even_on_refusal(db):
        runtime.auth.reauthenticate(db, principal.web_session, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(
    body: PasswordChangeIn, principal: SelfUser, db: Db, runtime: RuntimeDep
) -> Response:
    """Change the password. Every session ends; the caller gets a fresh session cookie."""
    assert principal.web_session is not None
    with commit_even_on_refusal(db):
        new = runtime.auth.change_password(
            db, principal.web_session, current=body.current_password, new=body.new_password
        )
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    set_session_cookie(response, runtime, new.cookie_value)
    response.headers["X-CSRF-Token"] = new.session.csrf_token
    return response


@router.post("/mfa/totp", response_model=TotpEnrolmentOut)
def start_totp(principal: SelfMfaPending, db: Db, runtime: RuntimeDep) -> TotpEnrolmentOut:
    """Start TOTP enrolment: scan the QR code, then confirm with a code."""
    assert principal.web_session is not None and principal.user is not None
    if (
        not principal.web_session.mfa_verified
        and confirmed_factor(db, principal.user.id) is not None
    ):
        from imhost.kit.errors import Unauthenticated

        raise Unauthenticated("verify your current second factor first (POST /api/v1/auth/mfa)")
    factor, uri, svg = runtime.auth.start_totp_enrolment(
        db, principal.web_session, issuer=runtime.settings.provider_name
    )
    return TotpEnrolmentOut(factor_id=factor.id, secret=factor.secret, otpauth_uri=uri, qr_svg=svg)


@router.post("/mfa/totp/confirm", response_model=RecoveryCodesOut)
def confirm_totp(
    body: TotpConfirmIn, principal: SelfMfaPending, db: Db, runtime: RuntimeDep
) -> RecoveryCodesOut:
    assert principal.web_session is not None and principal.user is not None
    if (
        not principal.web_session.mfa_verified
        and confirmed_factor(db, principal.user.id) is not None
    ):
        from imhost.kit.errors import Unauthenticated

        raise Unauthenticated("verify your current second factor first (POST /api/v1/auth/mfa)")
    codes = runtime.auth.confirm_totp_enrolment(
        db, principal.web_session, factor_id=body.factor_id, code=body.code
    )
    return RecoveryCodesOut(recovery_codes=codes)


@router.post("/mfa/recovery-codes", response_model=RecoveryCodesOut)
def regenerate_recovery_codes(principal: SelfUser, db: Db, runtime: RuntimeDep) -> RecoveryCodesOut:
    assert principal.web_session is not None
    return RecoveryCodesOut(
        recovery_codes=runtime.auth.regenerate_recovery_codes(db, principal.web_session)
    )


@router.delete("/mfa", status_code=status.HTTP_204_NO_CONTENT)
def disable_mfa(principal: SelfUser, db: Db, runtime: RuntimeDep) -> Response:
    assert principal.web_session is not None
    runtime.auth.disable_mfa(db, principal.web_session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", response_model=list[SessionOut])
def list_sessions(principal: SelfUser, db: Db, runtime: RuntimeDep) -> list[SessionOut]:
    assert principal.user is not None and principal.web_session is not None
    current = principal.web_session.id
    return [
        SessionOut.model_validate(s).model_copy(update={"current": s.id == current})
        for s in sessions.active_sessions(db, runtime.clock, principal.user.id)
    ]


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
def end_session(session_id: str, principal: SelfUser, db: Db, runtime: RuntimeDep) -> Response:
    assert principal.user is not None
    sessions.end_user_session(
        db, runtime.clock, user_id=principal.user.id, session_id=session_id, actor=principal.actor
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
