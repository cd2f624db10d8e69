"""The two parties of an invoice: the seller (the provider) and the customer.

The provider's details are its billing profile (``settings``); a customer's are its billing
details here (name, postal address, invoice e-mail) plus its organization's country and VAT
ID, which also decide the tax. An invoice copies both when it is made
(:func:`seller_snapshot`, :func:`customer_snapshot`), so that changing them later never
changes an issued invoice; :func:`seller_of` and :func:`buyer_of` read the copies back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.billing import audit
from imhost.billing.models import BillingProfile, CustomerBillingDetails, Invoice
from imhost.kit.clock import Clock
from imhost.kit.errors import InvalidInput
from imhost.kit.vat import check_tax_id

MAX_STREET_LINES = 3  # EN 16931 has three address lines (BT-35, BT-36, BT-162)


@dataclass(frozen=True)
class Party:
    name: str
    street_lines: tuple[str, ...] = ()
    postcode: str = ""
    city: str = ""
    country: str | None = None
    vat_id: str | None = None
    registration_number: str | None = None
    email: str | None = None

    @property
    def address_lines(self) -> list[str]:
        """The postal address as printed: street lines, postcode and city, country."""
        lines = list(self.street_lines)
        place = " ".join(part for part in (self.postcode, self.city) if part)
        if place:
            lines.append(place)
        if self.country:
            lines.append(self.country)
        return lines

    @property
    def has_postal_address(self) -> bool:
        return bool(self.street_lines and self.city and self.country)


def missing_seller_details(profile: BillingProfile) -> list[str]:
    """What the provider's details lack for an invoice that names its seller in full (and
    for a valid EN 16931 e-invoice: BR-6, BR-8, BR-9, BR-S-02 need them)."""
    wanted = {
        "street address": street_lines(profile.address),
        "city": profile.city,
        "postcode": profile.postcode,
        "VAT ID": profile.provider_tax_id,
    }
    return [label for label, value in wanted.items() if not value]


def street_lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def seller_snapshot(profile: BillingProfile) -> dict[str, Any]:
    """The provider as an invoice keeps it (JSON), with the bank details payments go to."""
    return {
        "name": profile.legal_name,
        "street_lines": list(street_lines(profile.address)),
        "postcode": profile.postcode or "",
        "city": profile.city or "",
        "country": profile.home_country,
        "vat_id": profile.provider_tax_id or None,
        "registration_number": profile.registration_number or None,
        "email": profile.contact_email or None,
        "bank_details": profile.bank_details or "",
    }


def customer_snapshot(details: CustomerBillingDetails | None) -> dict[str, Any]:
    """A customer's postal address as an invoice keeps it (JSON)."""
    if details is None:
        return {"street_lines": [], "postcode": "", "city": ""}
    return {
        "street_lines": list(street_lines(details.address)),
        "postcode": details.postcode,
        "city": details.city,
    }


def customer_name(org: Organization, details: CustomerBillingDetails | None) -> str:
    return (details.name if details is not None and details.name else "") or org.name


def invoice_email(org: Organization, details: CustomerBillingDetails | None) -> str | None:
    """Where the customer's invoices go: its invoice e-mail, else its billing e-mail (else
    the notifications fall back to the owner, as before)."""
    if details is not None and details.invoice_email:
        return details.invoice_email
    return org.billing_email


def _party(data: dict[str, Any]) -> Party:
    return Party(
        name=str(data.get("name") or ""),
        street_lines=tuple(str(line) for line in data.get("street_lines") or ()),
        postcode=str(data.get("postcode") or ""),
        city=str(data.get("city") or ""),
        country=data.get("country") or None,
        vat_id=data.get("vat_id") or None,
        registration_number=data.get("registration_number") or None,
        email=data.get("email") or None,
    )


def seller_of(invoice: Invoice, profile: BillingProfile) -> Party:
    """The seller as the invoice was issued (the current profile for invoices made before
    invoices kept their seller)."""
    return _party(invoice.seller if invoice.seller is not None else seller_snapshot(profile))


def bank_details_of(invoice: Invoice, profile: BillingProfile) -> str:
    if invoice.seller is not None:
        return str(invoice.seller.get("bank_details") or "")
    return profile.bank_details or ""


def buyer_of(invoice: Invoice) -> Party:
    address = invoice.customer_address or {}
    return _party(
        {
            **address,
            "name": invoice.customer_name,
            "country": invoice.customer_country,
            "vat_id": invoice.customer_tax_id,
            "email": invoice.customer_email,
        }
    )


# --- a customer's billing details -------------------------------------------------------------


def get_customer_details(session: Session, organization_id: str) -> CustomerBillingDetails | None:
    return session.scalar(
        select(CustomerBillingDetails).where(
            CustomerBillingDetails.organization_id == organization_id
        )
    )


def customer_details_many(
    session: Session, organization_ids: list[str]
) -> dict[str, CustomerBillingDetails]:
    if not organization_ids:
        return {}
    return {
        d.organization_id: d
        for d in session.scalars(
            select(CustomerBillingDetails).where(
                CustomerBillingDetails.organization_id.in_(organization_ids)
            )
        )
    }


def check_email(value: str, field: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidInput(
            "Type an e-mail address such as invoices@example.com.", field=field
        ) from None
    return str(info.normalized).lower()


def check_line(value: str, field: str, label: str, max_length: int) -> str:
    value = " ".join(value.split())
    if len(value) > max_length:
        raise InvalidInput(f"The {label} is at most {max_length} characters.", field=field)
    return value


def check_street(value: str, field: str = "address") -> str:
    lines = street_lines(value)
    if len(lines) > MAX_STREET_LINES:
        raise InvalidInput(f"The street address has at most {MAX_STREET_LINES} lines.", field=field)
    if any(len(line) > 100 for line in lines):
        raise InvalidInput("A line of the street address is at most 100 characters.", field=field)
    return "\n".join(lines)


def check_country_code(value: str, field: str = "country") -> str:
    code = value.strip().upper()
    if len(code) != 2 or not code.isalpha() or not code.isascii():
        raise InvalidInput("Type the country's two letters, such as DE or FR.", field=field)
    return code


def update_customer_details(
    session: Session,
    clock: Clock,
    org: Organization,
    *,
    actor: Actor | None = None,
    name: str,
    address: str,
    postcode: str,
    city: str,
    country: str,
    tax_id: str,
    invoice_email: str,
) -> CustomerBillingDetails:
    """Set what the customer's invoices are addressed to (all fields at once, as a form).

    The country is required (it decides the tax); a VAT ID is checked by ``kit.vat`` (an EU
    one must be valid for the country). Later invoices use the new details; issued ones keep
    theirs. Audited as ``billing.customer_details_changed`` with the fields that changed.
    """
    code = check_country_code(country)
    values: dict[str, Any] = {
        "name": check_line(name, "name", "name", 200),
        "address": check_street(address),
        "postcode": check_line(postcode, "postcode", "postcode", 16),
        "city": check_line(city, "city", "city", 100),
        "invoice_email": check_email(invoice_email, "invoice_email"),
    }
    vat_id = check_tax_id(tax_id, code)
    if values["address"] and not values["city"]:
        raise InvalidInput("Fill in the city of the address.", field="city")
    details = get_customer_details(session, org.id)
    if details is None:
        details = CustomerBillingDetails(organization_id=org.id, created_at=clock.now())
        session.add(details)
    changed = sorted(
        [key for key, value in values.items() if getattr(details, key, None) != value]
        + (["country"] if org.country != code else [])
        + (["tax_id"] if org.tax_id != vat_id else [])
    )
    for key, value in values.items():
        setattr(details, key, value)
    details.updated_at = clock.now()
    org.country = code
    org.tax_id = vat_id
    session.flush()
    if changed:
        audit.record(
            session,
            clock,
            actor,
            "customer_details_changed",
            organization_id=org.id,
            target_type="organization",
            target_id=org.id,
            changed=changed,
        )
    return details
