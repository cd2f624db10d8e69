"""SEPA direct debit (SEPA Core): mandates, collections, pain.008 export, camt.053 import.

Self-contained inside billing: it records payments through ``billing.payments`` and publishes
``events.SepaMandateEvent`` and ``events.DirectDebitEvent``; notify turns those into e-mails.
A mandate is a saved payment method of the ``sepa`` gateway (``sepa.gateway``), registered
here, so that every process that loads SEPA can charge it: Pay now, dunning and the hourly job
queue collections through ``billing.collection`` alike. See docs/billing.md, "SEPA direct
debit".
"""

from __future__ import annotations

from imhost.billing.drivers import register_gateway
from imhost.billing.sepa.collections import queue_collection, queue_due_collections
from imhost.billing.sepa.exports import export_batch
from imhost.billing.sepa.gateway import SepaGateway
from imhost.billing.sepa.imports import assign_entry, ignore_entry, import_statement
from imhost.billing.sepa.mandates import active_mandate, revoke_mandate, sign_mandate

register_gateway(SepaGateway())

__all__ = [
    "SepaGateway",
    "active_mandate",
    "assign_entry",
    "export_batch",
    "ignore_entry",
    "import_statement",
    "queue_collection",
    "queue_due_collections",
    "revoke_mandate",
    "sign_mandate",
]
