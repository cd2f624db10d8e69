"""Signing in and the security changes a signed-in person makes.

The login flow (docs/security.md): admit the attempt under the lockout model (per account and
address, per account for strangers, per address), verify the password (or a dummy hash for an
unknown address, so time and answer do not tell whether an account exists), then the second
factor when the person has one. Password changes and MFA changes need a recent
re-authentication.

Every password or code check goes through :meth:`AuthFlows._admit`, which decides and counts
the attempt in a short transaction of its own and commits it *before* sleeping the delay and
checking the credential: the count is atomic (row locks, or SQLite's write lock), and no delay
is ever slept while a transaction holds the database's write lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imhost.accounts import audit, sessions
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.mfa import (
    generate_recovery_codes,
    hash_recovery_code,
    new_totp_secret,
    provisioning_uri,
    qr_svg,
    verify_recovery_code,
    verify_totp,
)
from imhost.accounts.models import (
    KnownLogin,
    Membership,
    MfaFactor,
    Organization,
    RecoveryCode,
    User,
    WebSession,
)
from imhost.accounts.passwords import PasswordHasher, PasswordPolicy, check_password
from imhost.accounts.service import get_user_by_email
from imhost.accounts.throttle import (
    Admission,
    AttemptKeys,
    LoginThrottleService,
    account_key,
    attempt_keys,
    login_person,
    too_many_attempts,
    totp_key,
)
from imhost.config import SecuritySettings
from imhost.db.engine import write_intent
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound, Unauthenticated

WRONG_CREDENTIALS = "The e-mail address or password is not right."
WRONG_CODE = "That code is not right. Use the current code from your app, or a recovery code."
REAUTH_WINDOW = timedelta(minutes=10)

hasher = PasswordHasher()


def client_label(user_agent: str | None) -> str:
    """A short, stable name for the client (browser family and OS), for 'new client' alerts."""
    ua = (user_agent or "").lower()
    browser = next(
        (
            b
            for b in ("edg", "firefox", "chrome", "chromium", "safari", "curl", "python", "httpx")
            if b in ua
        ),
        "other",
    )
    system = next(
        (s for s in ("windows", "android", "iphone", "mac os", "linux") if s in ua), "other"
    )
    return f"{browser}/{system}"


def password_policy_for(
    session: Session, settings: SecuritySettings, user: User | None
) -> PasswordPolicy:
    """The strictest of the provider's policy and that of every organization of ``user``."""
    min_length, min_score = settings.password_min_length, settings.password_min_score
    if user is not None:
        stmt = (
            select(Organization.password_min_length, Organization.password_min_score)
            .join(Membership, Membership.organization_id == Organization.id)
            .where(Membership.user_id == user.id)
        )
        for length, score in session.execute(stmt):
            min_length = max(min_length, length or 0)
            min_score = max(min_score, score or 0)
    return PasswordPolicy(min_length=min_length, min_score=min_score)


def validate_new_password(
    password: str, policy: PasswordPolicy, *, user_inputs: list[str], field_name: str = "password"
) -> None:
    problems = check_password(password, policy, user_inputs=user_inputs)
    if problems:
        raise InvalidInput(
            " ".join(p.message for p in problems),
            field=field_name,
            problems=[{"code": p.code, "message": p.message} for p in problems],
        )


def mfa_required(session: Session, user: User) -> bool:
    """Staff always; members of an organization whose owner requires it."""
    if user.staff_role:
        return True
    stmt = (
        select(Organization.id)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user.id, Organization.require_mfa.is_(True))
        .limit(1)
    )
    return session.scalar(stmt) is not None


def confirmed_factor(session: Session, user_id: str) -> MfaFactor | None:
    return session.scalar(
        select(MfaFactor).where(MfaFactor.user_id == user_id, MfaFactor.confirmed_at.is_not(None))
    )


@dataclass
class LoginResult:
    user: User
    web: WebSession
    cookie_value: str
    mfa_pending: bool  # a code is still needed before the session can act
    mfa_enrolment_required: bool  # MFA is required but the person has none yet


@dataclass
class AuthFlows:
    """The sign-in flows, with their dependencies injected (clock, policy, sleep)."""

    clock: Clock
    security: SecuritySettings
    sleep: Callable[[float], None] = field(default=time.sleep)

    def _throttle(self, session: Session) -> LoginThrottleService:
        return LoginThrottleService(session, self.clock, self.security)

    def _admit(
        self,
        session: Session,
        keys: AttemptKeys,
        *,
        locked_audit: tuple[User, Actor] | None = None,
    ) -> Admission:
        """Decide one attempt and count it, committed, then sleep its delay.

        The decision and the count are one short transaction (SQLite: ``BEGIN IMMEDIATE``;
        PostgreSQL: the throttle rows locked ``FOR UPDATE``), committed before anything
        else, so parallel attempts are counted one after the other and no more than a
        threshold of them ever reach the password check. The delay is slept after the
        commit, holding no lock. Raises :class:`TooManyRequests` when refused (the refusal
        is audited for an existing account). What the caller wrote before is committed too.
        """
        session.commit()
        write_intent(session)
        admission = self._throttle(session).admit(keys)
        if not admission.allowed and locked_audit is not None:
            user, actor = locked_audit
            audit.record(
                session,
                self.clock,
                AuditAction.LOGIN_LOCKED_OUT,
                actor=actor,
                target_type="user",
                target_id=user.id,
                target_label=user.email,
            )
        session.commit()
        if not admission.allowed:
            raise too_many_attempts(admission.decision)
        if admission.decision.delay_seconds > 0:
            self.sleep(admission.decision.delay_seconds)
        write_intent(session)  # the rest of the flow reads, then writes
        return admission

    def login(
        self,
        session: Session,
        *,
        email: str,
        password: str,
        address: str | None,
        user_agent: str | None,
    ) -> LoginResult:
        user = get_user_by_email(session, email)
        keys = attempt_keys(
            login_person(user_id=user.id if user else None, login_name=email), address
        )
        locked_audit = None
        if user is not None:
            locked_audit = (user, Actor(label=email[:320], address=address))
        admission = self._admit(session, keys, locked_audit=locked_audit)

        ok = False
        if user is not None and user.password_hash and user.is_active:
            ok = hasher.verify(user.password_hash, password)
        else:
            hasher.dummy_verify()
        if not ok:
            audit.record(
                session,
                self.clock,
                AuditAction.LOGIN_FAILED,
                actor=Actor(label=email.strip()[:320], address=address),
                target_type="user" if user else None,
                target_id=user.id if user else None,
                target_label=user.email if user else None,
            )
            self._throttle(session).address_failure(keys)
            raise Unauthenticated(WRONG_CREDENTIALS)
        assert user is not None and user.password_hash is not None
        self._throttle(session).settle_success(keys, admission)
        if hasher.needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(password)

        factor = confirmed_factor(session, user.id)
        required = mfa_required(session, user)
        new = sessions.start_session(
            session,
            self.clock,
            self.security,
            user_id=user.id,
            address=address,
            user_agent=user_agent,
            mfa_verified=factor is None and not required,
        )
        if factor is None:
            self._complete_login(session, user, new.session)
        return LoginResult(
            user=user,
            web=new.session,
            cookie_value=new.cookie_value,
            mfa_pending=factor is not None,
            mfa_enrolment_required=factor is None and required,
        )

    def _complete_login(self, session: Session, user: User, web: WebSession) -> None:
        now = self.clock.now()
        client = client_label(web.user_agent)
        address = web.address or "unknown"
        seen_any = session.scalar(
            select(KnownLogin.id).where(KnownLogin.user_id == user.id).limit(1)
        )
        seen_this = session.scalar(
            select(KnownLogin.id).where(
                KnownLogin.user_id == user.id,
                KnownLogin.address == address,
                KnownLogin.client == client,
            )
        )
        if seen_this is None:
            session.add(KnownLogin(created_at=now, user_id=user.id, address=address, client=client))
        user.last_login_at = now
        audit.record(
            session,
            self.clock,
            AuditAction.LOGIN_SUCCEEDED,
            actor=Actor(user_id=user.id, label=user.email, address=web.address),
            target_type="user",
            target_id=user.id,
            target_label=user.email,
            client=client,
            new_location=True if (seen_any is not None and seen_this is None) else None,
        )

    def verify_second_factor(self, session: Session, web: WebSession, code: str) -> bool:
        """Check a TOTP or recovery code for a session waiting for it. Raises when wrong."""
        user = session.get(User, web.user_id)
        factor = confirmed_factor(session, web.user_id)
        if user is None or factor is None:
            raise Conflict("this account has no second factor to verify")
        keys = attempt_keys(totp_key(user.id), web.address)
        admission = self._admit(session, keys)
        now = self.clock.now()
        actor = Actor(user_id=user.id, label=user.email, address=web.address)
        step = verify_totp(factor.secret, code, now, last_used_step=factor.last_used_step)
        if step is not None:
            factor.last_used_step = step
        elif self._use_recovery_code(session, user, code):
            audit.record(
                session,
                self.clock,
                AuditAction.RECOVERY_CODE_USED,
                actor=actor,
                target_type="user",
                target_id=user.id,
                target_label=user.email,
            )
        else:
            audit.record(
                session,
                self.clock,
                AuditAction.MFA_FAILED,
                actor=actor,
                target_type="user",
                target_id=user.id,
                target_label=user.email,
            )
            self._throttle(session).address_failure(keys)
            raise Unauthenticated(WRONG_CODE)
        self._throttle(session).settle_success(keys, admission)
        if not web.mfa_verified:
            web.mfa_verified = True
            self._complete_login(session, user, web)
        web.reauthenticated_at = now
        return True

    def _use_recovery_code(self, session: Session, user: User, code: str) -> bool:
        if len(code) > 64:
            return False
        for row in session.scalars(
            select(RecoveryCode).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        ):
            if verify_recovery_code(code, row.code_hash):
                row.used_at = self.clock.now()
                return True
        return False

    # --- security changes (need a recent re-authentication) ------------------------------

    def reauthenticate(self, session: Session, web: WebSession, password: str) -> None:
        keys = attempt_keys(account_key(web.user_id), web.address)
        admission = self._admit(session, keys)
        user = session.get(User, web.user_id)
        if (
            user is None
            or not user.password_hash
            or not hasher.verify(user.password_hash, password)
        ):
            self._throttle(session).address_failure(keys)
            raise Unauthenticated("That password is not right.")
        self._throttle(session).settle_success(keys, admission)
        web.reauthenticated_at = self.clock.now()

    def require_recent_auth(self, web: WebSession) -> None:
        at = web.reauthenticated_at
        if at is None or self.clock.now() - at > REAUTH_WINDOW:
            raise Unauthenticated(
                "Confirm your password first (POST /api/v1/me/reauthenticate): this change "
                "needs a sign-in from the last 10 minutes.",
                reauthentication_required=True,
            )

    def change_password(
        self, session: Session, web: WebSession, *, current: str, new: str
    ) -> sessions.NewSession:
        """Change the password, end every session, and return a fresh one for the caller."""
        user = session.get(User, web.user_id)
        if user is None:
            raise NotFound("no such user")
        self.reauthenticate(session, web, current)
        policy = password_policy_for(session, self.security, user)
        validate_new_password(
            new,
            policy,
            user_inputs=[user.email, user.name, *user.email.split("@")],
            field_name="new_password",
        )
        if hasher.verify(user.password_hash or "", new):
            raise InvalidInput("the new password is the same as the old one", field="new_password")
        user.password_hash = hasher.hash(new)
        user.password_changed_at = self.clock.now()
        sessions.end_all_sessions(session, self.clock, user.id, reason="password changed")
        audit.record(
            session,
            self.clock,
            AuditAction.PASSWORD_CHANGED,
            actor=Actor(user_id=user.id, label=user.email, address=web.address),
            target_type="user",
            target_id=user.id,
            target_label=user.email,
        )
        return sessions.start_session(
            session,
            self.clock,
            self.security,
            user_id=user.id,
            address=web.address,
            user_agent=web.user_agent,
            mfa_verified=web.mfa_verified,
        )

    def start_totp_enrolment(
        self, session: Session, web: WebSession, *, issuer: str
    ) -> tuple[MfaFactor, str, str]:
        """A new unconfirmed TOTP factor: (factor, otpauth URI, QR code as SVG)."""
        user = session.get(User, web.user_id)
        if user is None:
            raise NotFound("no such user")
        if confirmed_factor(session, user.id) is None:
            # First enrolment right after sign-in needs no extra password prompt.
            pass
        else:
            self.require_recent_auth(web)
        session.execute(
            delete(MfaFactor).where(MfaFactor.user_id == user.id, MfaFactor.confirmed_at.is_(None))
        )
        secret = new_totp_secret()
        factor = MfaFactor(created_at=self.clock.now(), user_id=user.id, kind="totp", secret=secret)
        session.add(factor)
        session.flush()
        uri = provisioning_uri(secret, user.email, issuer)
        return factor, uri, qr_svg(uri)

    def confirm_totp_enrolment(
        self, session: Session, web: WebSession, *, factor_id: str, code: str
    ) -> list[str]:
        """Confirm with a first code; returns ten recovery codes (shown once)."""
        factor = session.get(MfaFactor, factor_id)
        if factor is None or factor.user_id != web.user_id or factor.confirmed_at is not None:
            raise NotFound("no such pending enrolment; start again")
        user = session.get(User, web.user_id)
        assert user is not None
        step = verify_totp(factor.secret, code, self.clock.now(), last_used_step=None)
        if step is None:
            raise InvalidInput(
                "That code is not right; check the time on your device and try the next code.",
                field="code",
            )
        session.execute(
            delete(MfaFactor).where(MfaFactor.user_id == user.id, MfaFactor.id != factor.id)
        )
        factor.confirmed_at = self.clock.now()
        factor.last_used_step = step
        codes = self._new_recovery_codes(session, user.id)
        web.mfa_verified = True
        web.reauthenticated_at = self.clock.now()
        audit.record(
            session,
            self.clock,
            AuditAction.MFA_ENROLLED,
            actor=Actor(user_id=user.id, label=user.email, address=web.address),
            target_type="user",
            target_id=user.id,
            target_label=user.email,
            kind="totp",
        )
        return codes

    def _new_recovery_codes(self, session: Session, user_id: str) -> list[str]:
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes = generate_recovery_codes(10)
        now = self.clock.now()
        for code in codes:
            session.add(
                RecoveryCode(created_at=now, user_id=user_id, code_hash=hash_recovery_code(code))
            )
        session.flush()
        return codes

    def regenerate_recovery_codes(self, session: Session, web: WebSession) -> list[str]:
        self.require_recent_auth(web)
        if confirmed_factor(session, web.user_id) is None:
            raise Conflict("turn on two-factor authentication first")
        user = session.get(User, web.user_id)
        assert user is not None
        codes = self._new_recovery_codes(session, user.id)
        audit.record(
            session,
            self.clock,
            AuditAction.RECOVERY_CODES_REGENERATED,
            actor=Actor(user_id=user.id, label=user.email, address=web.address),
            target_type="user",
            target_id=user.id,
            target_label=user.email,
        )
        return codes

    def disable_mfa(self, session: Session, web: WebSession) -> None:
        self.require_recent_auth(web)
        user = session.get(User, web.user_id)
        assert user is not None
        if confirmed_factor(session, user.id) is None:
            raise Conflict("two-factor authentication is not on")
        if mfa_required(session, user):
            raise Conflict(
                "two-factor authentication is required for your account "
                "(staff, or an organization you belong to requires it)"
            )
        session.execute(delete(MfaFactor).where(MfaFactor.user_id == user.id))
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        orgs = list(
            session.scalars(select(Membership.organization_id).where(Membership.user_id == user.id))
        )
        targets: list[str | None] = [*orgs] or [None]
        for org_id in targets:
            audit.record(
                session,
                self.clock,
                AuditAction.MFA_DISABLED,
                actor=Actor(user_id=user.id, label=user.email, address=web.address),
                organization_id=org_id,
                target_type="user",
                target_id=user.id,
                target_label=user.email,
            )

    def mfa_required_for(self, session: Session, user: User) -> bool:
        return mfa_required(session, user)

    def set_password_directly(self, session: Session, user: User, password: str) -> None:
        """For `imhost admin create` and sign-up: check the policy, then hash."""
        policy = password_policy_for(session, self.security, user)
        validate_new_password(password, policy, user_inputs=[user.email, user.name])
        user.password_hash = hasher.hash(password)
        user.password_changed_at = self.clock.now()
