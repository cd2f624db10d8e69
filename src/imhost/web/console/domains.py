"""Console: every customer's custom domains, filtered by status (failing verification first
of all) or name, with the records each one misses, and a staff "Check now"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts import service as accounts
from imhost.accounts.models import Organization
from imhost.accounts.permissions import Access, Scope
from imhost.domains import service as domains
from imhost.domains.checks import RecordCheck
from imhost.domains.models import DOMAIN_STATUS_LABELS, DomainStatus
from imhost.domains.names import display_name
from imhost.kit.errors import InvalidInput
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import PageNo, page_require, redirect, render

router = APIRouter(prefix="/console", include_in_schema=False)

CustomersRead = Annotated[
    Principal, Depends(page_require("customers", Access.READ, scope=Scope.STAFF))
]
HostingAdminWrite = Annotated[
    Principal, Depends(page_require("hosting-admin", Access.WRITE, scope=Scope.STAFF))
]
STATUS_CHOICES = [("", "Any status")] + [
    (s.value, label)
    for s, label in (
        (DomainStatus.FAILING, "Failing verification"),
        (DomainStatus.PENDING, "Waiting for the first check"),
        (DomainStatus.VERIFIED, "Verified"),
    )
]


@router.get("/domains")
def domains_page(
    request: Request,
    principal: CustomersRead,
    db: Db,
    runtime: RuntimeDep,
    page: PageNo,
    status: str = "",
    q: str = "",
) -> Response:
    status, q = status[:20], q[:100]
    if status not in {value for value, _ in STATUS_CHOICES}:
        raise InvalidInput("Choose a status from the list.", field="status")
    rows, total = domains.list_domains(
        db, status=status or None, search=q or None, limit=page.per_page, offset=page.offset
    )
    orgs: dict[str, Organization] = {}
    items = []
    for d in rows:
        if d.organization_id not in orgs:
            orgs[d.organization_id] = accounts.get_organization(db, d.organization_id)
        problems: list[RecordCheck] = [
            r for r in domains.expected_records(runtime.settings, d) if r.state != "ok"
        ]
        items.append(
            {
                "domain": d,
                "display": display_name(d.name),
                "org": orgs[d.organization_id],
                "problems": problems if d.checks else [],
            }
        )
    return render(
        request,
        "console/domains.html",
        {
            "title": "Custom domains",
            "items": items,
            "pg": page.with_total(total),
            "status": status,
            "q": q,
            "choices": STATUS_CHOICES,
            "counts": domains.count_by_status(db),
        },
        principal=principal,
        db=db,
        section="Domains",
    )


@router.post("/domains/{domain_id}/check")
def check_domain(
    request: Request, domain_id: str, principal: HostingAdminWrite, db: Db, runtime: RuntimeDep
) -> Response:
    domain = domains.get_domain(db, domain_id)
    db.commit()  # end the unit before the DNS lookup (network): no lock held meanwhile
    domains.check_now(db, runtime.clock, runtime.settings, domain, actor=principal.actor)
    return redirect(
        request,
        f"/console/domains?q={domain.name}",
        f"{display_name(domain.name)}: {DOMAIN_STATUS_LABELS[domain.status].lower()}.",
    )
