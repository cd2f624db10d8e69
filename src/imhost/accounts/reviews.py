"""Access reviews: each quarter (configurable) an organization's owners review who has access.

A review lists every member with their role and last activity, and every live API token with
its scopes and last use; tokens unused for ``token_stale_days`` (default 90) are flagged, and
revoked at once when the organization's policy says stale tokens expire. Each decision (keep
or revoke) is recorded in the audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts import audit, service, tokens
from imhost.accounts.audit import Actor, AuditAction
from imhost.accounts.models import (
    AccessReview,
    AccessReviewItem,
    ApiToken,
    Membership,
    Organization,
    OrgRole,
    OrgStatus,
    User,
)
from imhost.config import SecuritySettings
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound


def period_label(at: datetime, months: int) -> str:
    """``2026-Q4`` for quarterly reviews; ``2026-P07`` style for other cadences."""
    index = (at.month - 1) // months
    if months == 3:
        return f"{at.year}-Q{index + 1}"
    return f"{at.year}-P{index + 1:02d}"


def _last_activity(member: Membership, user: User) -> datetime | None:
    candidates = [t for t in (member.last_active_at, user.last_login_at) if t is not None]
    return max(candidates) if candidates else None


def open_review(
    session: Session, clock: Clock, security: SecuritySettings, org: Organization
) -> AccessReview | None:
    """Open this period's review for ``org`` unless it exists already (idempotent)."""
    now = clock.now()
    label = period_label(now, security.access_review_months)
    existing = session.scalar(
        select(AccessReview).where(
            AccessReview.organization_id == org.id, AccessReview.period_label == label
        )
    )
    if existing is not None:
        return None
    review = AccessReview(
        created_at=now, organization_id=org.id, period_label=label, due_at=now + timedelta(days=14)
    )
    session.add(review)
    session.flush()
    stale_before = now - timedelta(days=security.token_stale_days)
    for member, user in service.list_members(session, org.id):
        session.add(
            AccessReviewItem(
                review_id=review.id,
                subject_type="member",
                subject_id=member.id,
                subject_label=user.email,
                role=member.role,
                last_activity_at=_last_activity(member, user),
            )
        )
    system = Actor.system()
    for token in tokens.list_tokens(session, org.id):
        if token.revoked_at is not None:
            continue
        if token.expires_at is not None and token.expires_at <= now:
            continue
        last = token.last_used_at or token.created_at
        stale = last < stale_before
        if stale and org.expire_stale_tokens:
            tokens.revoke_token(
                session,
                clock,
                token,
                actor=system,
                reason=f"unused for {security.token_stale_days} days (access review policy)",
                action=AuditAction.TOKEN_EXPIRED_STALE,
            )
            decision = "revoke"
        else:
            decision = None
        session.add(
            AccessReviewItem(
                review_id=review.id,
                subject_type="token",
                subject_id=token.id,
                subject_label=token.name,
                role=token.role,
                last_activity_at=token.last_used_at,
                flagged_stale=stale,
                decision=decision,
                decided_at=now if decision else None,
            )
        )
    session.flush()
    audit.record(
        session,
        clock,
        AuditAction.ACCESS_REVIEW_OPENED,
        organization_id=org.id,
        target_type="access_review",
        target_id=review.id,
        target_label=label,
    )
    owners = [u.email for m, u in service.list_members(session, org.id) if m.role == OrgRole.OWNER]
    events.publish(
        session,
        events.AccessReviewOpened(
            at=now,
            review_id=review.id,
            organization_id=org.id,
            organization_name=org.name,
            period_label=label,
            recipients=tuple(owners),
        ),
    )
    return review


def open_due_reviews(session: Session, clock: Clock, security: SecuritySettings) -> int:
    """The scheduled job: open the current period's review for every active organization."""
    opened = 0
    for org in session.scalars(select(Organization).where(Organization.status == OrgStatus.ACTIVE)):
        if open_review(session, clock, security, org) is not None:
            opened += 1
    return opened


def list_reviews(session: Session, organization_id: str) -> list[AccessReview]:
    stmt = select(AccessReview).where(AccessReview.organization_id == organization_id)
    return list(session.scalars(stmt.order_by(AccessReview.created_at.desc())))


def get_review(session: Session, organization_id: str, review_id: str) -> AccessReview:
    review = session.get(AccessReview, review_id)
    if review is None or review.organization_id != organization_id:
        raise NotFound("no such access review")
    return review


def review_items(session: Session, review_id: str) -> list[AccessReviewItem]:
    stmt = select(AccessReviewItem).where(AccessReviewItem.review_id == review_id)
    return list(
        session.scalars(
            stmt.order_by(AccessReviewItem.subject_type, AccessReviewItem.subject_label)
        )
    )


def decide(
    session: Session,
    clock: Clock,
    org: Organization,
    review: AccessReview,
    item_id: str,
    decision: str,
    *,
    actor: Actor,
    actor_role: OrgRole | None,
) -> AccessReviewItem:
    if decision not in ("keep", "revoke"):
        raise InvalidInput("decision is 'keep' or 'revoke'", field="decision")
    if review.completed_at is not None:
        raise Conflict("this review is completed")
    item = session.get(AccessReviewItem, item_id)
    if item is None or item.review_id != review.id:
        raise NotFound("no such review item")
    if decision == "revoke":
        if item.subject_type == "member":
            membership = session.get(Membership, item.subject_id)
            if membership is not None:
                service.remove_member(
                    session, clock, org, membership, actor=actor, actor_role=actor_role
                )
        else:
            token = session.get(ApiToken, item.subject_id)
            if token is not None:
                tokens.revoke_token(session, clock, token, actor=actor, reason="access review")
    item.decision = decision
    item.decided_at = clock.now()
    audit.record(
        session,
        clock,
        AuditAction.ACCESS_REVIEW_DECISION,
        actor=actor,
        organization_id=org.id,
        target_type=item.subject_type,
        target_id=item.subject_id,
        target_label=item.subject_label,
        decision=decision,
        review=review.period_label,
    )
    return item


def complete(
    session: Session, clock: Clock, org: Organization, review: AccessReview, *, actor: Actor
) -> AccessReview:
    undecided = [i for i in review_items(session, review.id) if i.decision is None]
    if undecided:
        raise Conflict(
            f"{len(undecided)} item(s) still need a decision: "
            + ", ".join(i.subject_label for i in undecided[:5])
        )
    review.completed_at = clock.now()
    review.completed_by_id = actor.user_id
    audit.record(
        session,
        clock,
        AuditAction.ACCESS_REVIEW_COMPLETED,
        actor=actor,
        organization_id=org.id,
        target_type="access_review",
        target_id=review.id,
        target_label=review.period_label,
    )
    return review
