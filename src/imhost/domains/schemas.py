"""API shapes of custom domains."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from imhost.config import Settings
from imhost.domains import service as domains
from imhost.domains.checks import RecordCheck
from imhost.domains.models import CustomDomain
from imhost.domains.names import display_name
from imhost.kit.text import PlainText


class DomainIn(BaseModel):
    name: PlainText = Field(
        max_length=300, description="The domain, e.g. chat.example.com (Unicode or A-labels)."
    )
    self_hosted: bool = Field(
        False,
        description="The domain itself points at the provider (A/AAAA) instead of SRV records "
        "to the provider's host.",
    )


class RecordOut(BaseModel):
    kind: str = Field(description="TXT, SRV, A or AAAA.")
    name: str = Field(description="Owner name, ASCII, without the final dot.")
    expected: str = Field(description="The value the record must hold.")
    zone_line: str = Field(description="The record as one zone-file line, ready to paste.")
    state: str = Field(description="ok, missing, wrong or unknown (the resolver did not answer).")
    found: list[str] = Field(description="What DNS holds now under that name and type.")
    message: str

    @classmethod
    def of(cls, record: RecordCheck, checked: bool) -> RecordOut:
        return cls(
            kind=record.kind,
            name=record.name,
            expected=record.expected,
            zone_line=record.zone_line,
            state=record.state.value if checked else "unchecked",
            found=list(record.found),
            message=record.message,
        )


class DomainOut(BaseModel):
    id: str
    organization_id: str
    service_id: str
    name: str = Field(description="A-label (ASCII) form.")
    display_name: str = Field(description="Unicode form, for people.")
    status: str = Field(description="pending, failing or verified.")
    self_hosted: bool
    verification_token: str
    created_at: datetime
    last_checked_at: datetime | None
    next_check_at: datetime | None
    verified_at: datetime | None
    records: list[RecordOut]

    @classmethod
    def of(cls, domain: CustomDomain, settings: Settings) -> DomainOut:
        checked = bool(domain.checks)
        return cls(
            id=domain.id,
            organization_id=domain.organization_id,
            service_id=domain.service_id,
            name=domain.name,
            display_name=display_name(domain.name),
            status=domain.status,
            self_hosted=domain.self_hosted,
            verification_token=domain.token,
            created_at=domain.created_at,
            last_checked_at=domain.last_checked_at,
            next_check_at=domain.next_check_at,
            verified_at=domain.verified_at,
            records=[RecordOut.of(r, checked) for r in domains.expected_records(settings, domain)],
        )


class DomainPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[DomainOut]
