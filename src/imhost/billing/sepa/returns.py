"""ISO 20022 return reason codes of SEPA direct debits (EPC guidance on the use of reason
codes, EPC173-14), in the plain words a customer reads."""

from __future__ import annotations

RETURN_REASONS: dict[str, str] = {
    "AC01": "the account number (IBAN) is not correct",
    "AC04": "the account is closed",
    "AC06": "the account is blocked",
    "AC13": "the account does not accept direct debits from businesses",
    "AG01": "the account does not allow direct debits",
    "AG02": "the bank could not process the debit",
    "AM04": "the account did not have enough money on the day",
    "AM05": "the debit was sent twice",
    "BE05": "the bank does not know us as the creditor",
    "FF01": "the bank could not read the debit",
    "MD01": "the bank has no mandate for this debit",
    "MD02": "the mandate details did not match",
    "MD06": "the account holder asked the bank to refund it",
    "MD07": "the account holder has died",
    "MS02": "the account holder refused it",
    "MS03": "the bank gave no reason",
    "RC01": "the bank code (BIC) is not correct",
    "RR01": "the bank needed more details about the account holder",
    "RR02": "the bank needed the account holder's name and address",
    "RR03": "the bank needed our name and address",
    "RR04": "the bank refused it for regulatory reasons",
    "SL01": "the account holder's bank has a service that blocks it",
    "CNOR": "our bank could not reach your bank",
    "DNOR": "your bank does not take part in SEPA direct debit",
    "FOCR": "it was cancelled on request",
}


def return_reason_words(code: str | None) -> str:
    """Why a debit came back, in plain words (never the bare code)."""
    if not code:
        return "the bank gave no reason"
    return RETURN_REASONS.get(code.upper(), "the bank gave a reason we do not know")
