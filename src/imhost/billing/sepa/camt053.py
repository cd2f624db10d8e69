"""Reading a camt.053 bank statement (ISO 20022 BankToCustomerStatement, versions
camt.053.001.02 to .08 share the parts read here).

Every booked transaction becomes a ``BankTransaction``: an entry (``Ntry``) with several
transaction details (a batch booking) gives one per detail, with its own amount where the
bank states it. The parser refuses DTDs and entities: a statement is data, never a program.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from lxml import etree

from imhost.kit.errors import InvalidInput

NOT_A_STATEMENT = "This is not a camt.053 bank statement."
MAX_STATEMENT_BYTES = 10 * 1024 * 1024

_NS = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d{2})$")


@dataclass(frozen=True)
class BankTransaction:
    bank_reference: str
    statement_id: str
    booking_date: date | None
    direction: str  # CRDT (money in) | DBIT (money out)
    amount: Decimal
    currency: str
    end_to_end_id: str | None
    return_reason: str | None
    is_return: bool
    counterparty: str
    remittance: str
    booked: bool


@dataclass(frozen=True)
class BankStatement:
    version: str
    message_id: str
    statement_ids: tuple[str, ...]
    account_iban: str | None
    transactions: tuple[BankTransaction, ...]


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


class _Reader:
    def __init__(self, namespace: str) -> None:
        self.ns = {"c": namespace}

    def text(self, element: etree._Element, path: str) -> str | None:
        found = element.find(path, self.ns)
        if found is None or found.text is None:
            return None
        value = found.text.strip()
        return value or None

    def all(self, element: etree._Element, path: str) -> list[etree._Element]:
        return list(element.findall(path, self.ns))

    def amount(self, element: etree._Element, path: str) -> tuple[Decimal, str] | None:
        found = element.find(path, self.ns)
        if found is None or found.text is None:
            return None
        try:
            value = Decimal(found.text.strip())
        except InvalidOperation:
            raise InvalidInput(f"{NOT_A_STATEMENT} An amount is not a number.") from None
        if not value.is_finite() or value < 0:
            raise InvalidInput(f"{NOT_A_STATEMENT} An amount is not a number.")
        currency = (found.get("Ccy") or "").strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise InvalidInput(f"{NOT_A_STATEMENT} An amount has no currency.")
        return value, currency


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise InvalidInput(f"{NOT_A_STATEMENT} A booking date is not a date.") from None


def parse_camt053(data: bytes) -> BankStatement:
    """Parse a statement, or refuse it with a plain ``InvalidInput``."""
    if not data.strip():
        raise InvalidInput(f"{NOT_A_STATEMENT} The file is empty.", field="file")
    if len(data) > MAX_STATEMENT_BYTES:
        raise InvalidInput(
            f"{NOT_A_STATEMENT} The file is larger than 10 MB; ask the bank for daily statements.",
            field="file",
        )
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise InvalidInput(NOT_A_STATEMENT, field="file")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError:
        raise InvalidInput(f"{NOT_A_STATEMENT} The file is not XML.", field="file") from None
    namespace = etree.QName(root).namespace or ""
    match = _NS.match(namespace)
    if etree.QName(root).localname != "Document" or match is None:
        raise InvalidInput(NOT_A_STATEMENT, field="file")
    r = _Reader(namespace)
    report = root.find("c:BkToCstmrStmt", r.ns)
    if report is None:
        raise InvalidInput(NOT_A_STATEMENT, field="file")
    message_id = r.text(report, "c:GrpHdr/c:MsgId")
    statements = r.all(report, "c:Stmt")
    if not message_id or not statements:
        raise InvalidInput(f"{NOT_A_STATEMENT} It has no statement in it.", field="file")
    transactions: list[BankTransaction] = []
    ids: list[str] = []
    account: str | None = None
    for statement in statements:
        stmt_id = r.text(statement, "c:Id") or message_id
        ids.append(stmt_id)
        account = account or r.text(statement, "c:Acct/c:Id/c:IBAN")
        for index, entry in enumerate(r.all(statement, "c:Ntry"), start=1):
            transactions.extend(_entry(r, entry, stmt_id, index))
    return BankStatement(
        version=f"camt.053.001.{match.group(1)}",
        message_id=message_id[:35],
        statement_ids=tuple(ids),
        account_iban=account,
        transactions=tuple(transactions),
    )


def _entry(
    r: _Reader, entry: etree._Element, stmt_id: str, index: int
) -> Iterator[BankTransaction]:
    total = r.amount(entry, "c:Amt")
    direction = r.text(entry, "c:CdtDbtInd")
    if total is None or direction not in ("CRDT", "DBIT"):
        raise InvalidInput(f"{NOT_A_STATEMENT} An entry has no amount or direction.", field="file")
    status = r.text(entry, "c:Sts") or r.text(entry, "c:Sts/c:Cd") or "BOOK"
    reversal = (r.text(entry, "c:RvslInd") or "").lower() == "true"
    booking = _date(r.text(entry, "c:BookgDt/c:Dt") or r.text(entry, "c:BookgDt/c:DtTm"))
    entry_ref = r.text(entry, "c:AcctSvcrRef") or r.text(entry, "c:NtryRef")
    details = [d for block in r.all(entry, "c:NtryDtls") for d in r.all(block, "c:TxDtls")]
    if not details:
        details = [entry]
        single = True
    else:
        single = len(details) == 1
    for number, tx in enumerate(details, start=1):
        if tx is entry or single:
            amount, currency = total
        else:
            own = r.amount(tx, "c:AmtDtls/c:TxAmt/c:Amt") or r.amount(
                tx, "c:AmtDtls/c:InstdAmt/c:Amt"
            )
            if own is None:
                raise InvalidInput(
                    f"{NOT_A_STATEMENT} A batch entry does not give each transaction's amount.",
                    field="file",
                )
            amount, currency = own
        e2e = None if tx is entry else r.text(tx, "c:Refs/c:EndToEndId")
        if e2e == "NOTPROVIDED":
            e2e = None
        reason = (
            None
            if tx is entry
            else (r.text(tx, "c:RtrInf/c:Rsn/c:Cd") or r.text(tx, "c:RtrInf/c:Rsn/c:Prtry"))
        )
        has_return = tx is not entry and tx.find("c:RtrInf", r.ns) is not None
        tx_ref = None if tx is entry else r.text(tx, "c:Refs/c:AcctSvcrRef")
        if tx_ref:
            reference = tx_ref
        elif entry_ref:
            reference = entry_ref if single else f"{entry_ref}/{number}"
        else:
            reference = (
                "sha256:"
                + hashlib.sha256(
                    f"{stmt_id}|{index}|{number}|{amount}|{currency}|{e2e}".encode()
                ).hexdigest()[:40]
            )
        ustrd = (
            [] if tx is entry else [(u.text or "").strip() for u in r.all(tx, "c:RmtInf/c:Ustrd")]
        )
        if tx is entry:
            ustrd = [(r.text(entry, "c:AddtlNtryInf") or "")]
        party_path = "c:RltdPties/c:Dbtr/c:Nm" if direction == "CRDT" else "c:RltdPties/c:Cdtr/c:Nm"
        party = None if tx is entry else r.text(tx, party_path)
        yield BankTransaction(
            bank_reference=reference[:200],
            statement_id=stmt_id,
            booking_date=booking,
            direction=direction,
            amount=amount,
            currency=currency,
            end_to_end_id=e2e[:35] if e2e else None,
            return_reason=reason[:8] if reason else None,
            is_return=has_return or reversal,
            counterparty=(party or "")[:140],
            remittance=" ".join(u for u in ustrd if u)[:500],
            booked=status.upper() == "BOOK",
        )
