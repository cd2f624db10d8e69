"""Test data for SEPA: a ready creditor, customers with open invoices, camt.053 statements
written by hand (camt.053.001.02), and validation against the ISO 20022 schemas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path

from lxml import etree
from sqlalchemy.orm import Session

from imhost.billing.composition import DraftLine
from imhost.billing.invoicing import issue_standalone_invoice
from imhost.billing.models import Invoice
from imhost.billing.sepa.mandates import sign_mandate
from imhost.billing.sepa.models import SepaMandate
from imhost.billing.sepa.settings import update_creditor
from imhost.kit.clock import Clock

from ..factories import make_org

SCHEMAS = Path(__file__).parent / "schemas"
CREDITOR_ID = "DE98ZZZ09999999999"
CREDITOR_IBAN = "DE02120300000000202051"
DEBTOR_IBAN = "DE89370400440532013000"
DEBTOR_BIC = "DEUTDEFF500"


@cache
def schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / f"{name}.xsd")))


def assert_schema_valid(name: str, data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    checker = schema(name)
    assert checker.validate(root), checker.error_log
    return root


def set_up_creditor(session: Session, clock: Clock, *, days: int = 14) -> None:
    update_creditor(
        session,
        clock,
        creditor_name="Hosting Provider GmbH",
        creditor_id=CREDITOR_ID,
        iban=CREDITOR_IBAN,
        bic="BYLADEM1001",
        pre_notification_days=days,
    )


def open_invoice(session: Session, clock: Clock, org_id: str, amount: str = "49.00") -> Invoice:
    return issue_standalone_invoice(
        session,
        clock,
        org_id,
        [DraftLine(kind="one_off", description="Hosting", amount=Decimal(amount), taxable=False)],
        currency="EUR",
        kind="subscription",
    )


@dataclass
class Customer:
    org_id: str
    mandate: SepaMandate


def customer_with_mandate(
    session: Session,
    clock: Clock,
    *,
    name: str = "Müller & Söhne",
    iban: str = DEBTOR_IBAN,
    bic: str = DEBTOR_BIC,
) -> Customer:
    org = make_org(session, clock, name=name, country="US")
    mandate = sign_mandate(
        session,
        clock,
        org.id,
        account_holder=name,
        iban=iban,
        bic=bic,
        accepted=True,
        signed_by="owner@example.com",
        signed_from="192.0.2.7",
    )
    return Customer(org.id, mandate)


@dataclass
class Tx:
    """One transaction of a hand-written statement."""

    amount: str
    direction: str = "CRDT"
    end_to_end_id: str | None = None
    remittance: str | None = None
    reference: str | None = None
    return_reason: str | None = None
    status: str = "BOOK"
    booked_on: date = date(2026, 2, 10)


def camt053(txs: list[Tx], *, message_id: str = "STMT-1", batch: bool = False) -> bytes:
    """A camt.053.001.02 statement; ``batch`` books all transactions as one entry."""

    def details(tx: Tx, with_amount: bool) -> str:
        refs = f"<AcctSvcrRef>{tx.reference}</AcctSvcrRef>" if tx.reference else ""
        refs += f"<EndToEndId>{tx.end_to_end_id}</EndToEndId>" if tx.end_to_end_id else ""
        amount = (
            f'<AmtDtls><TxAmt><Amt Ccy="EUR">{tx.amount}</Amt></TxAmt></AmtDtls>'
            if with_amount
            else ""
        )
        party = (
            "<RltdPties><Dbtr><Nm>Customer</Nm></Dbtr></RltdPties>"
            if tx.direction == "CRDT"
            else "<RltdPties><Cdtr><Nm>Customer</Nm></Cdtr></RltdPties>"
        )
        rmt = f"<RmtInf><Ustrd>{tx.remittance}</Ustrd></RmtInf>" if tx.remittance else ""
        rtr = f"<RtrInf><Rsn><Cd>{tx.return_reason}</Cd></Rsn></RtrInf>" if tx.return_reason else ""
        refs = f"<Refs>{refs}</Refs>" if refs else ""
        return f"<TxDtls>{refs}{amount}{party}{rmt}{rtr}</TxDtls>"

    def entry(amount: str, direction: str, status: str, day: date, inner: str) -> str:
        return (
            f'<Ntry><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>{direction}</CdtDbtInd>'
            f"<Sts>{status}</Sts><BookgDt><Dt>{day.isoformat()}</Dt></BookgDt>"
            f"<ValDt><Dt>{day.isoformat()}</Dt></ValDt>"
            "<BkTxCd><Prtry><Cd>NTRF</Cd><Issr>BANK</Issr></Prtry></BkTxCd>"
            f"<NtryDtls>{inner}</NtryDtls></Ntry>"
        )

    if batch:
        total = sum((Decimal(t.amount) for t in txs), Decimal(0))
        inner = "".join(details(t, True) for t in txs)
        entries = entry(f"{total:.2f}", "CRDT", "BOOK", txs[0].booked_on, inner)
    else:
        entries = "".join(
            entry(t.amount, t.direction, t.status, t.booked_on, details(t, False)) for t in txs
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
        "<BkToCstmrStmt>"
        f"<GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>2026-02-10T18:00:00</CreDtTm></GrpHdr>"
        f"<Stmt><Id>{message_id}-S1</Id><CreDtTm>2026-02-10T18:00:00</CreDtTm>"
        f"<Acct><Id><IBAN>{CREDITOR_IBAN}</IBAN></Id></Acct>"
        '<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">1000.00</Amt>'
        "<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-02-10</Dt></Dt></Bal>"
        f"{entries}</Stmt></BkToCstmrStmt></Document>"
    ).encode()
