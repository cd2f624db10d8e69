"""The rules of billing in one import: ``from imhost.billing import service``.

Every function takes a Session (and a Clock where time matters) and never commits: the
caller owns the transaction. The functions live in the modules named after what they do.
"""

from __future__ import annotations

from imhost.billing.charges import (
    add_one_off_charge,
    add_pending_charge,
    check_one_off_charge,
    list_pending_charges,
    remove_pending_charge,
)
from imhost.billing.credits import (
    add_credit,
    apply_coupon,
    create_coupon,
    credit_balance,
    credit_balances,
    credit_history,
    delete_coupon,
    get_coupon,
    list_coupons,
    update_coupon,
)
from imhost.billing.documents import get_credit_note
from imhost.billing.dunning import dunning_status, late_fee
from imhost.billing.einvoice import credit_note_xml, invoice_xml
from imhost.billing.invoicing import (
    finalize_invoice,
    get_invoice,
    invoice_lines,
    list_invoices,
    void_invoice,
)
from imhost.billing.parties import get_customer_details, update_customer_details
from imhost.billing.payments import (
    invoice_payments,
    issue_credit_note,
    list_credit_notes,
    list_payments,
    pay_from_credit,
    record_payment,
    refund_credit,
)
from imhost.billing.settings import (
    delete_tax_rate,
    get_profile,
    list_tax_rates,
    set_tax_rate,
    tax_for,
    update_profile,
)
from imhost.billing.subscriptions import (
    cancel_subscription,
    change_plan,
    current_subscription,
    pause_subscription,
    preview_cancel,
    preview_change,
    resume_subscription,
    start_subscription,
    undo_cancel,
)

__all__ = [
    "add_credit",
    "add_one_off_charge",
    "add_pending_charge",
    "apply_coupon",
    "cancel_subscription",
    "change_plan",
    "check_one_off_charge",
    "create_coupon",
    "credit_balance",
    "credit_balances",
    "credit_history",
    "credit_note_xml",
    "current_subscription",
    "delete_coupon",
    "delete_tax_rate",
    "dunning_status",
    "finalize_invoice",
    "get_coupon",
    "get_credit_note",
    "get_customer_details",
    "get_invoice",
    "get_profile",
    "invoice_lines",
    "invoice_payments",
    "invoice_xml",
    "issue_credit_note",
    "late_fee",
    "list_coupons",
    "list_credit_notes",
    "list_invoices",
    "list_payments",
    "list_pending_charges",
    "list_tax_rates",
    "pause_subscription",
    "pay_from_credit",
    "preview_cancel",
    "preview_change",
    "record_payment",
    "refund_credit",
    "remove_pending_charge",
    "resume_subscription",
    "set_tax_rate",
    "start_subscription",
    "tax_for",
    "undo_cancel",
    "update_coupon",
    "update_customer_details",
    "update_profile",
    "void_invoice",
]
