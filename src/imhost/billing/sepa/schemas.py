"""API shapes of SEPA direct debit. Amounts travel as decimal strings; IBANs go out masked."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from imhost.billing.sepa.identifiers import mask_iban
from imhost.billing.sepa.models import SepaMandate
from imhost.kit.decimals import Amount, CurrencyAmounts
from imhost.kit.text import PlainText


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(CurrencyAmounts):
    model_config = ConfigDict(from_attributes=True)


class MandateIn(_In):
    account_holder: PlainText = Field(min_length=1, max_length=200)
    iban: PlainText = Field(min_length=1, max_length=64)
    bic: PlainText = Field(default="", max_length=20)
    accept: bool = Field(description="True: the caller accepts the mandate text (mandate_text)")


class MandateOut(BaseModel):
    id: str
    organization_id: str
    reference: str
    status: str
    account_holder: str
    iban: str = Field(description="Masked: country, check digits and the last four characters")
    bic: str | None
    creditor_name: str
    creditor_id: str
    mandate_text: str
    signed_at: datetime
    signed_by: str
    revoked_at: datetime | None

    @classmethod
    def of(cls, mandate: SepaMandate) -> MandateOut:
        return cls(
            id=mandate.id,
            organization_id=mandate.organization_id,
            reference=mandate.reference,
            status=mandate.status,
            account_holder=mandate.account_holder,
            iban=mask_iban(mandate.iban),
            bic=mandate.bic,
            creditor_name=mandate.creditor_name,
            creditor_id=mandate.creditor_id,
            mandate_text=mandate.mandate_text.replace(mandate.iban, mask_iban(mandate.iban)),
            signed_at=mandate.signed_at,
            signed_by=mandate.signed_by,
            revoked_at=mandate.revoked_at,
        )


class MandateTextOut(BaseModel):
    creditor_name: str
    creditor_id: str
    available: bool
    mandate_text: str


class CollectionOut(_Out):
    id: str
    organization_id: str
    invoice_id: str
    mandate_id: str
    attempt: int
    end_to_end_id: str
    amount: Amount
    currency: str
    sequence_type: str
    collection_date: date
    status: str
    batch_id: str | None
    return_reason: str | None


class CreditorIn(_In):
    creditor_name: PlainText = Field(min_length=1, max_length=200)
    creditor_id: PlainText = Field(min_length=1, max_length=64)
    iban: PlainText = Field(min_length=1, max_length=64)
    bic: PlainText = Field(default="", max_length=20)
    pre_notification_days: int = Field(default=14, ge=1, le=60)


class CreditorOut(BaseModel):
    creditor_name: str
    creditor_id: str
    iban: str
    bic: str | None
    pre_notification_days: int
    ready: bool


class ExportIn(_In):
    up_to: date = Field(description="Export the queued debits due up to this date")


class BatchOut(_Out):
    id: str
    message_id: str
    schema_name: str = Field(description="The pain.008 version of the file")
    up_to: date
    count: int
    control_sum: Amount
    currency: str
    exported_by: str
    created_at: datetime
    file_url: str


class EntryOut(_Out):
    id: str
    statement_id: str
    bank_reference: str
    booking_date: date | None
    direction: str
    amount: Amount
    currency: str
    end_to_end_id: str | None
    return_reason: str | None
    counterparty: str
    remittance: str
    outcome: str
    collection_id: str | None
    invoice_id: str | None
    payment_id: str | None
    note: str


class StatementOut(BaseModel):
    id: str
    message_id: str
    statement_ids: str
    account_iban: str | None
    imported_by: str
    created_at: datetime
    already_imported: bool = False
    seen_before: int = 0
    not_booked: int = 0
    entries: list[EntryOut] = []


class AssignIn(_In):
    invoice: PlainText = Field(min_length=1, max_length=64, description="The invoice number")


class SetAsideIn(_In):
    reason: PlainText = Field(min_length=1, max_length=500)
