"""E-mail (SMTP, or an outbox folder in the data dir by default) and signed webhooks.

Messages are queued in the database inside the transaction that caused them and delivered
after it commits, so a rolled-back change never sends mail and a crash never loses one.
"""
