"""Support: the help center (articles, categories, search, votes, suggestions); tickets later.

Imports billing, hosting, domains, metering, catalog, accounts, events, db, config and kit;
web, worker and cli import it (ARCHITECTURE.md).
"""
