"""Demo data for ``imhost serve --demo``: a provider ready to try at once.

Created once, on first start (idempotent): a staff admin, the default plans, a demo customer
with an owner and a few members, and (when the hosting package is present) its XMPP service
on ``demo.<base domain>`` with the accounts alice and bob. Generated passwords are kept in
``<data dir>/demo-logins.json`` (mode 0600) so later starts print the same logins.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import OrgRole, StaffRole
from imhost.billing import demo as billing_demo
from imhost.catalog import demo as catalog_demo
from imhost.db.engine import transaction
from imhost.hosting import demo as hosting_demo
from imhost.runtime import Runtime

ADMIN_EMAIL = "admin@provider.example.com"
OWNER_EMAIL = "owner@demo.example.com"
MEMBERS = (
    ("admin@demo.example.com", "Ada Admin", OrgRole.ADMIN),
    ("billing@demo.example.com", "Bill Ing", OrgRole.BILLING),
    ("tech@demo.example.com", "Tess Tech", OrgRole.TECHNICAL),
)


@dataclass
class DemoLogins:
    web: list[tuple[str, str, str]] = field(default_factory=list)  # (who, email, password)
    xmpp: list[tuple[str, str]] = field(default_factory=list)  # (jid, password)
    notes: list[str] = field(default_factory=list)


def _password() -> str:
    # 16 random URL-safe characters: ~96 bits, passes any policy we ship.
    return "demo-" + secrets.token_urlsafe(12)


def _load(path: Path) -> dict[str, str]:
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    return {}


def _save(path: Path, data: dict[str, str]) -> None:
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)


def seed_demo(runtime: Runtime) -> DemoLogins:
    path = runtime.settings.data_dir / "demo-logins.json"
    saved = _load(path)
    logins = DemoLogins()
    with transaction(runtime.session_factory) as session:
        clock = runtime.clock

        def person(email: str, name: str, staff: StaffRole | None = None) -> str:
            user = accounts.get_user_by_email(session, email)
            if user is None:
                user = accounts.create_user(
                    session, clock, email=email, name=name, staff_role=staff, email_verified=True
                )
                saved[email] = saved.get(email) or _password()
                runtime.auth.set_password_directly(session, user, saved[email])
            return user.id

        person(ADMIN_EMAIL, "Provider Admin", StaffRole.ADMIN)
        owner_id = person(OWNER_EMAIL, "Olivia Owner")
        owner = accounts.get_user(session, owner_id)
        orgs = accounts.organizations_of(session, owner_id)
        if orgs:
            org = orgs[0][0]
        else:
            org = accounts.create_organization(
                session, clock, name="Demo Co", owner=owner, country="DE", slug="demo"
            )
        for email, name, role in MEMBERS:
            uid = person(email, name)
            if accounts.get_membership(session, org.id, uid) is None:
                accounts.add_member(
                    session,
                    clock,
                    org,
                    accounts.get_user(session, uid),
                    role,
                    actor=Actor(user_id=owner_id, label=OWNER_EMAIL),
                )
        # Contributions of the domain packages: plans, subscription, XMPP service.
        catalog_demo.seed(session, runtime, org, saved, logins)
        billing_demo.seed(session, runtime, org, saved, logins)
        hosting_demo.seed(session, runtime, org, saved, logins)
    _save(path, saved)
    logins.web = [
        (
            "staff admin (console; sets up two-factor authentication at first sign-in)",
            ADMIN_EMAIL,
            saved[ADMIN_EMAIL],
        ),
        ("customer owner (portal)", OWNER_EMAIL, saved[OWNER_EMAIL]),
        *[(f"customer {role.value}", email, saved[email]) for email, _n, role in MEMBERS],
    ]
    return logins
