"""Billing: subscriptions, rating, invoices, payments, taxes, credits, dunning.

docs/billing.md explains the rules for a provider's billing staff. Entry points:
``billing.service`` (rules, never commits), ``billing.flows.run_billing`` (the billing run),
``billing.tasks`` (scheduled jobs).
"""
