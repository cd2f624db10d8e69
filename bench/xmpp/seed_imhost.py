"""Seed a data dir for ``imhost serve`` the way a provider would, for ``bench/xmpp``.

    IMHOST_DATA_DIR=DIR python3 bench/xmpp/seed_imhost.py --domain bench.local \\
        --users 1000 --password PASSWORD

Through the package's own service functions, in this order: the database migrated, a staff
admin, a plan whose limits are all unlimited (no per-account message rate, the "shaper"; no
account or connection limits), an organization with the slug of the domain's first label and
a subscription to that plan (which provisions its hosted service on ``<slug>.<base domain>``
with the plan's limits), then the XMPP accounts ``u0``.. through the CSV import
(``hosting.service.prepare_import`` / ``apply_import``), the password derivations spread
over the machine's cores. Prints ``seeded N accounts on DOMAIN`` and the time it took.

Run once per benchmark run into a template dir; ``servers.ImhostServe`` copies the result for
every fresh process, so every measurement starts on the same data.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path

from imhost.accounts import service as accounts
from imhost.accounts.audit import Actor
from imhost.accounts.models import StaffRole
from imhost.billing import service as billing
from imhost.catalog import service as catalog
from imhost.catalog.schemas import LimitsIn, PlanCreate, PlanVersionIn
from imhost.config import load_settings
from imhost.db.engine import transaction
from imhost.db.migrations import upgrade
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.runtime import build_runtime

ACTOR = Actor(label="bench seed")
ADMIN_EMAIL = "admin@bench.example.com"
OWNER_EMAIL = "owner@bench.example.com"
CHUNK = 250


def _prepare(
    text: str, service: HostedService, policy: hosting.ImportPolicy
) -> hosting.PreparedImport:
    return hosting.prepare_import(text, service, policy)


def seed(domain: str, users: int, password: str, prefix: str) -> None:
    slug, _, base = domain.partition(".")
    settings = load_settings(base_domain=base)
    runtime = build_runtime(settings)
    upgrade(settings.resolved_database_url)
    clock = runtime.clock
    with transaction(runtime.session_factory) as session:
        admin = accounts.create_user(
            session,
            clock,
            email=ADMIN_EMAIL,
            name="Bench Admin",
            staff_role=StaffRole.ADMIN,
            email_verified=True,
            actor=ACTOR,
        )
        runtime.auth.set_password_directly(session, admin, password)
        plan = catalog.create_plan(
            session,
            clock,
            PlanCreate(
                code="bench",
                name="Bench (no limits)",
                is_public=False,
                version=PlanVersionIn(base_fee=Decimal(0), limits=LimitsIn()),
            ),
            actor=ACTOR,
        )
        version = catalog.current_plan_version(session, plan.code, "EUR")
        owner = accounts.create_user(
            session, clock, email=OWNER_EMAIL, name="Bench Owner", email_verified=True
        )
        org = accounts.create_organization(
            session, clock, name="Bench", owner=owner, country="DE", slug=slug, actor=ACTOR
        )
        billing.start_subscription(session, clock, org.id, version.id, actor=ACTOR)
    with transaction(runtime.session_factory) as session:
        service = hosting.get_service_by_domain(session, domain)
        if service.message_rate is not None:
            sys.exit(f"the bench plan left a message rate limit on {domain}")
        policy = hosting.import_policy(session, settings.security, service)
        session.expunge(service)
    names = [f"{prefix}{i}" for i in range(users)]
    texts = [
        "".join(f"{n},{password}\n" for n in names[i : i + CHUNK])
        for i in range(0, len(names), CHUNK)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        prepared = list(pool.map(_prepare, texts, [service] * len(texts), [policy] * len(texts)))
    created = 0
    for part in prepared:
        with transaction(runtime.session_factory) as session:
            live = session.merge(service, load=False)
            hosting.apply_import(session, clock, live, part, actor=ACTOR)
        report = hosting.import_report(part)
        refused = [r for r in report.rows if r.status != "created"]
        if refused:
            sys.exit(f"the import refused {len(refused)} rows, e.g. {refused[0]}")
        created += report.created
    runtime.engine.dispose()
    print(f"seeded {created} accounts on {domain}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="seed_imhost.py")
    p.add_argument("--domain", required=True, help="<slug>.<base domain>, e.g. bench.local")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--prefix", default="u")
    args = p.parse_args()
    data = Path(os.environ.get("IMHOST_DATA_DIR", ""))
    if not os.environ.get("IMHOST_DATA_DIR") or (data.exists() and any(data.iterdir())):
        sys.exit("set IMHOST_DATA_DIR to a new, empty directory")
    t0 = time.monotonic()
    seed(args.domain, args.users, args.password, args.prefix)
    print(f"in {time.monotonic() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
