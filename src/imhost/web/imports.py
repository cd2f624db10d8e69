"""The CSV import of XMPP accounts as a web request runs it: never holding the write lock
while passwords are derived.

A 2,000-row file takes ~30 s of key derivation. Run in the request's one transaction (as
``hosting.import_accounts_csv`` does for the CLI), that is 30 s of SQLite's write lock, and
every other tenant's request waits. Here the steps are split: read the password policy, end
the transaction, derive every password with no transaction open, then insert the accounts in
transactions of ``IMPORT_WRITE_CHUNK`` rows, each a short write.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.runtime import Runtime


def import_accounts_in_steps(
    db: Session,
    runtime: Runtime,
    service: HostedService,
    text: str,
    *,
    actor: Actor,
) -> hosting.ImportReport:
    """Import ``text`` for ``service``; commits ``db`` between the steps (the route's unit of
    work so far is kept: the permission check's own writes are part of it)."""
    policy = hosting.import_policy(db, runtime.settings.security, service)
    db.commit()  # no lock is held while passwords are derived
    prepared = hosting.prepare_import(text, service, policy)
    for start in range(0, len(prepared.ready), hosting.IMPORT_WRITE_CHUNK):
        hosting.apply_import(
            db,
            runtime.clock,
            service,
            prepared,
            actor=actor,
            start=start,
            stop=start + hosting.IMPORT_WRITE_CHUNK,
        )
        db.commit()
    return hosting.import_report(prepared)
