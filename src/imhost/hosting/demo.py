"""Demo data of the hosting package for ``imhost serve --demo`` (called by ``cli/demo.py``).

The demo customer gets a service on ``demo.localhost`` with the accounts alice and bob.
Idempotent: a second start finds them and prints the same passwords (kept in ``saved``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.audit import Actor
from imhost.accounts.models import Organization
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService, XmppAccount

if TYPE_CHECKING:
    from imhost.runtime import Runtime

DEMO_DOMAIN = "demo.localhost"
DEMO_ACCOUNTS = (("alice", "Alice Liddell"), ("bob", "Bob Builder"))
DEMO_ACTOR = Actor(label="demo data")


def seed(
    session: Session, runtime: Runtime, org: Organization, saved: dict[str, str], logins: Any
) -> None:
    clock = runtime.clock
    service = session.scalar(select(HostedService).where(HostedService.domain == DEMO_DOMAIN))
    if service is None:
        service = hosting.create_service(
            session,
            clock,
            org,
            base_domain=runtime.settings.base_domain,
            domain=DEMO_DOMAIN,
            actor=DEMO_ACTOR,
        )
    for localpart, name in DEMO_ACCOUNTS:
        jid = f"{localpart}@{DEMO_DOMAIN}"
        account = session.scalar(
            select(XmppAccount).where(
                XmppAccount.service_id == service.id, XmppAccount.localpart == localpart
            )
        )
        password = saved.get(jid)
        if account is None:  # first start (or a new database): a new password
            account, password = hosting.create_account(
                session,
                clock,
                service,
                username=localpart,
                password=None,
                security=runtime.settings.security,
                name=name,
                actor=DEMO_ACTOR,
            )
        elif password is None:  # the logins file was lost: give it a new password
            password = hosting.reset_password(
                session,
                clock,
                service,
                account,
                password=None,
                security=runtime.settings.security,
                actor=DEMO_ACTOR,
            )
        assert password is not None
        saved[jid] = password
        logins.xmpp.append((jid, password))
    x = runtime.settings.xmpp
    logins.notes.append(
        f"XMPP: connect to {x.bind} port {x.c2s_port} (STARTTLS) or {x.c2s_direct_tls_port} "
        "(Direct TLS); the certificate is self-signed, so accept it in the client "
        f"(it is in {runtime.settings.data_dir / 'tls'})."
    )
