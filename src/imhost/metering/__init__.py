"""Metering: usage records in, billable quantities out, forecasts and budgets."""
