"""pain.008.001.02 (ISO 20022 CustomerDirectDebitInitiationV02) as the EPC's SDD Core
implementation guidelines (EPC130-08) use it: one group header, one payment information block
per sequence type and collection date, one transaction per collection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from lxml import etree

from imhost.billing.sepa.identifiers import sepa_id, sepa_text
from imhost.billing.sepa.settings import Creditor

PAIN_008_NS = "urn:iso:std:iso:20022:tech:xsd:pain.008.001.02"
PAIN_008_SCHEMA = "pain.008.001.02"


@dataclass(frozen=True)
class DebitLine:
    """One collection as the file needs it."""

    end_to_end_id: str
    amount: Decimal
    currency: str
    sequence_type: str
    collection_date: date
    mandate_reference: str
    mandate_signed_on: date
    debtor_name: str
    debtor_iban: str
    debtor_bic: str | None
    remittance: str


@dataclass(frozen=True)
class PaymentBlock:
    payment_info_id: str
    sequence_type: str
    collection_date: date
    lines: tuple[DebitLine, ...]

    @property
    def control_sum(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


def group_blocks(message_id: str, lines: Sequence[DebitLine]) -> list[PaymentBlock]:
    """One block per (sequence type, collection date), in date order, FRST before RCUR."""
    keys = sorted({(line.collection_date, line.sequence_type) for line in lines})
    blocks = []
    for number, (day, sequence) in enumerate(keys, start=1):
        members = tuple(
            sorted(
                (x for x in lines if (x.collection_date, x.sequence_type) == (day, sequence)),
                key=lambda x: x.end_to_end_id,
            )
        )
        blocks.append(
            PaymentBlock(
                payment_info_id=sepa_id(f"{message_id}-{number}", 35),
                sequence_type=sequence,
                collection_date=day,
                lines=members,
            )
        )
    return blocks


def _amount(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def _sub(
    parent: etree._Element, tag: str, text: str | None = None, **attrib: str
) -> etree._Element:
    element = etree.SubElement(parent, f"{{{PAIN_008_NS}}}{tag}", attrib)
    if text is not None:
        element.text = text
    return element


def _agent(parent: etree._Element, tag: str, bic: str | None) -> None:
    institution = _sub(_sub(parent, tag), "FinInstnId")
    if bic:
        _sub(institution, "BIC", bic)
    else:  # IBAN-only: the EPC guidelines' "NOTPROVIDED"
        _sub(_sub(institution, "Othr"), "Id", "NOTPROVIDED")


def build_pain008(
    *,
    message_id: str,
    created_at: datetime,
    creditor: Creditor,
    lines: Sequence[DebitLine],
) -> bytes:
    """The file's bytes (UTF-8, with an XML declaration)."""
    if not lines:
        raise ValueError("a pain.008 file has at least one transaction")
    default_namespace: Any = {None: PAIN_008_NS}  # the stubs know only prefixed maps
    root = etree.Element(f"{{{PAIN_008_NS}}}Document", nsmap=default_namespace)
    initiation = _sub(root, "CstmrDrctDbtInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", message_id)
    _sub(header, "CreDtTm", created_at.strftime("%Y-%m-%dT%H:%M:%S"))
    _sub(header, "NbOfTxs", str(len(lines)))
    _sub(header, "CtrlSum", _amount(sum((x.amount for x in lines), Decimal(0))))
    _sub(_sub(header, "InitgPty"), "Nm", sepa_text(creditor.name, 70))
    for block in group_blocks(message_id, lines):
        info = _sub(initiation, "PmtInf")
        _sub(info, "PmtInfId", block.payment_info_id)
        _sub(info, "PmtMtd", "DD")
        _sub(info, "BtchBookg", "true")
        _sub(info, "NbOfTxs", str(len(block.lines)))
        _sub(info, "CtrlSum", _amount(block.control_sum))
        kind = _sub(info, "PmtTpInf")
        _sub(_sub(kind, "SvcLvl"), "Cd", "SEPA")
        _sub(_sub(kind, "LclInstrm"), "Cd", "CORE")
        _sub(kind, "SeqTp", block.sequence_type)
        _sub(info, "ReqdColltnDt", block.collection_date.isoformat())
        _sub(_sub(info, "Cdtr"), "Nm", sepa_text(creditor.name, 70))
        _sub(_sub(_sub(info, "CdtrAcct"), "Id"), "IBAN", creditor.iban)
        _agent(info, "CdtrAgt", creditor.bic)
        _sub(info, "ChrgBr", "SLEV")
        other = _sub(_sub(_sub(_sub(info, "CdtrSchmeId"), "Id"), "PrvtId"), "Othr")
        _sub(other, "Id", creditor.creditor_id)
        _sub(_sub(other, "SchmeNm"), "Prtry", "SEPA")
        for line in block.lines:
            tx = _sub(info, "DrctDbtTxInf")
            _sub(_sub(tx, "PmtId"), "EndToEndId", line.end_to_end_id)
            _sub(tx, "InstdAmt", _amount(line.amount), Ccy=line.currency)
            mandate = _sub(_sub(tx, "DrctDbtTx"), "MndtRltdInf")
            _sub(mandate, "MndtId", line.mandate_reference)
            _sub(mandate, "DtOfSgntr", line.mandate_signed_on.isoformat())
            _agent(tx, "DbtrAgt", line.debtor_bic)
            _sub(_sub(tx, "Dbtr"), "Nm", sepa_text(line.debtor_name, 70))
            _sub(_sub(_sub(tx, "DbtrAcct"), "Id"), "IBAN", line.debtor_iban)
            _sub(_sub(tx, "RmtInf"), "Ustrd", sepa_text(line.remittance, 140))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
