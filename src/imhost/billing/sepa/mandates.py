"""SEPA Core mandates: given in the portal by a customer's owner or billing member, revoked
there too. The mandate records what the EPC SDD Core rulebook asks a creditor to keep (4.7.2):
the unique mandate reference, the creditor's name and identifier, the debtor's name and
account, the date of signature, and here also who signed and from which address, with the
text they accepted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imhost import events
from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.billing import audit
from imhost.billing.models import PaymentMethod, PaymentMethodStatus
from imhost.billing.payment_methods import add_method, default_method, forget_method
from imhost.billing.sepa.gateway import (
    GATEWAY,
    METHOD_KIND,
    fail_attempt_of,
    method_label,
)
from imhost.billing.sepa.identifiers import (
    format_iban,
    normalize_bic,
    normalize_iban,
    sepa_text,
)
from imhost.billing.sepa.models import (
    CollectionStatus,
    MandateStatus,
    SepaCollection,
    SepaMandate,
)
from imhost.billing.sepa.settings import Creditor, ready_creditor
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.ids import public_code


def mandate_text(creditor: Creditor, *, reference: str | None = None) -> str:
    """The mandate a customer reads before accepting (the EPC's standard wording)."""
    ref = reference or "given when you accept"
    ci = creditor.creditor_id or "not set up yet"
    return (
        f"SEPA Direct Debit Mandate (SEPA Core)\n"
        f"Creditor: {creditor.name}\n"
        f"Creditor identifier: {ci}\n"
        f"Mandate reference: {ref}\n\n"
        f"By accepting this mandate, you authorise (A) {creditor.name} to send instructions "
        f"to your bank to debit your account and (B) your bank to debit your account in "
        f"accordance with the instructions from {creditor.name}.\n"
        "As part of your rights, you are entitled to a refund from your bank under the terms "
        "and conditions of your agreement with your bank. A refund must be claimed within 8 "
        "weeks starting from the date on which your account was debited.\n"
        "Your rights are explained in a statement that you can obtain from your bank.\n"
        f"We tell you the amount and date of each debit at least "
        f"{creditor.pre_notification_days} days before we collect it."
    )


def _new_reference(session: Session) -> str:
    for _ in range(10):
        reference = public_code("IMH", 12)
        if session.scalar(select(SepaMandate.id).where(SepaMandate.reference == reference)) is None:
            return reference
    raise Conflict("no free mandate reference; try again")  # 60 bits: never in practice


def sign_mandate(
    session: Session,
    clock: Clock,
    organization_id: str,
    *,
    account_holder: str,
    iban: str,
    bic: str = "",
    accepted: bool,
    signed_by: str,
    signed_from: str,
    actor: Actor | None = None,
) -> SepaMandate:
    """Record a mandate the customer accepted; an earlier active mandate is replaced."""
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"no organization {organization_id!r}")
    problems: dict[str, str] = {}
    holder = sepa_text(account_holder, 70)
    if not holder:
        problems["account_holder"] = "Fill in the account holder's name."
    account = swift = None
    try:
        account = normalize_iban(iban)
    except InvalidInput as exc:
        problems["iban"] = exc.detail
    try:
        swift = normalize_bic(bic)
    except InvalidInput as exc:
        problems["bic"] = exc.detail
    if not accepted:
        problems["accept"] = "Tick the box to accept the mandate."
    if problems or account is None:
        name, message = next(iter(problems.items()))
        raise InvalidInput(message, field=name, field_errors=problems)
    creditor = ready_creditor(session)
    now = clock.now()
    reference = _new_reference(session)
    current = default_method(session, organization_id)
    replaces_default = current is not None and current.gateway == GATEWAY
    for old in active_mandates(session, organization_id):
        _revoke(session, clock, old, revoked_by=signed_by, actor=actor, replaced=True)
    mandate = SepaMandate(
        organization_id=organization_id,
        reference=reference,
        status=MandateStatus.ACTIVE.value,
        account_holder=holder,
        iban=account,
        bic=swift,
        creditor_name=creditor.name,
        creditor_id=creditor.creditor_id,
        mandate_text=mandate_text(creditor, reference=reference)
        + f"\n\nAccount holder: {holder}\nIBAN: {format_iban(account)}"
        + (f"\nBIC: {swift}" if swift else ""),
        signed_at=now,
        signed_by=signed_by[:320],
        signed_from=(signed_from or "unknown")[:64],
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(mandate)
    except IntegrityError:
        raise Conflict("the mandate could not be saved; try again") from None
    events.publish(
        session,
        events.SepaMandateEvent(
            at=now, organization_id=organization_id, mandate_id=mandate.id, kind="signed"
        ),
    )
    # The mandate is a saved payment method: the default if there is none.
    add_method(
        session,
        clock,
        organization_id,
        gateway=GATEWAY,
        external_id=mandate.id,
        label=method_label(mandate),
        kind=METHOD_KIND,
        make_default=replaces_default,
        actor=actor,
    )
    audit.record(
        session,
        clock,
        actor,
        "sepa_mandate_signed",
        organization_id=organization_id,
        target_type="sepa_mandate",
        target_id=mandate.id,
        reference=reference,
        iban_last4=account[-4:],
        signed_from=mandate.signed_from,
    )
    return mandate


def _revoke(
    session: Session,
    clock: Clock,
    mandate: SepaMandate,
    *,
    revoked_by: str,
    actor: Actor | None,
    replaced: bool = False,
) -> None:
    now = clock.now()
    mandate.status = MandateStatus.REVOKED.value
    mandate.revoked_at = now
    mandate.revoked_by = revoked_by[:320]
    queued = session.scalars(
        select(SepaCollection).where(
            SepaCollection.mandate_id == mandate.id,
            SepaCollection.status == CollectionStatus.QUEUED.value,
        )
    )
    cancelled = 0
    for collection in queued:
        collection.status = CollectionStatus.CANCELLED.value
        cancelled += 1
        fail_attempt_of(
            session, clock, collection, "The direct debit mandate was withdrawn before the debit."
        )
    session.flush()
    forget_method(
        session,
        clock,
        mandate.organization_id,
        gateway=GATEWAY,
        external_id=mandate.id,
        actor=actor,
    )
    events.publish(
        session,
        events.SepaMandateEvent(
            at=now, organization_id=mandate.organization_id, mandate_id=mandate.id, kind="revoked"
        ),
    )
    audit.record(
        session,
        clock,
        actor,
        "sepa_mandate_revoked",
        organization_id=mandate.organization_id,
        target_type="sepa_mandate",
        target_id=mandate.id,
        reference=mandate.reference,
        replaced=replaced or None,
        collections_cancelled=cancelled or None,
    )


def revoke_mandate(
    session: Session,
    clock: Clock,
    organization_id: str,
    mandate_id: str,
    *,
    revoked_by: str,
    actor: Actor | None = None,
) -> SepaMandate:
    """Withdraw a mandate: collections not yet sent to the bank are cancelled."""
    mandate = get_mandate(session, organization_id, mandate_id)
    if mandate.status != MandateStatus.ACTIVE.value:
        raise Conflict("This mandate is revoked already.")
    _revoke(session, clock, mandate, revoked_by=revoked_by, actor=actor)
    return mandate


def get_mandate(session: Session, organization_id: str | None, mandate_id: str) -> SepaMandate:
    mandate = session.get(SepaMandate, mandate_id)
    if mandate is None or (organization_id and mandate.organization_id != organization_id):
        raise NotFound("no such mandate")
    return mandate


def active_mandates(session: Session, organization_id: str) -> list[SepaMandate]:
    return list(
        session.scalars(
            select(SepaMandate)
            .where(
                SepaMandate.organization_id == organization_id,
                SepaMandate.status == MandateStatus.ACTIVE.value,
            )
            .order_by(SepaMandate.signed_at.desc())
        )
    )


def active_mandate(session: Session, organization_id: str) -> SepaMandate | None:
    found = active_mandates(session, organization_id)
    return found[0] if found else None


def list_mandates(session: Session, organization_id: str) -> list[SepaMandate]:
    return list(
        session.scalars(
            select(SepaMandate)
            .where(SepaMandate.organization_id == organization_id)
            .order_by(SepaMandate.signed_at.desc(), SepaMandate.id)
        )
    )


def ensure_mandate_methods(session: Session, clock: Clock) -> int:
    """Keep every active mandate as a saved payment method (the mandates given before
    mandates were payment methods); idempotent. How many methods were added."""
    kept = select(PaymentMethod.external_id).where(
        PaymentMethod.gateway == GATEWAY,
        PaymentMethod.status == PaymentMethodStatus.ACTIVE.value,
    )
    missing = session.scalars(
        select(SepaMandate).where(
            SepaMandate.status == MandateStatus.ACTIVE.value, SepaMandate.id.not_in(kept)
        )
    ).all()
    for mandate in missing:
        add_method(
            session,
            clock,
            mandate.organization_id,
            gateway=GATEWAY,
            external_id=mandate.id,
            label=method_label(mandate),
            kind=METHOD_KIND,
        )
    return len(missing)
