"""Custom domains of hosted services and their DNS verification (docs/domains.md).

Customers: ``/api/v1/orgs/{org_id}/services/{service_id}/domains`` (area ``hosting``). Staff:
``/api/v1/admin/domains`` (area ``hosting-admin``), filterable by status.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from imhost.accounts.permissions import Access, Scope
from imhost.domains import service as domains
from imhost.domains.models import CustomDomain
from imhost.domains.schemas import DomainIn, DomainOut, DomainPage
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.kit.errors import NotFound
from imhost.web.deps import Db, PageDep, Principal, RuntimeDep, require

router = APIRouter(tags=["domains"])

HostingRead = Annotated[Principal, Depends(require("hosting", Access.READ))]
HostingWrite = Annotated[Principal, Depends(require("hosting", Access.WRITE))]
AdminRead = Annotated[Principal, Depends(require("hosting-admin", Access.READ, scope=Scope.STAFF))]
AdminWrite = Annotated[
    Principal, Depends(require("hosting-admin", Access.WRITE, scope=Scope.STAFF))
]


def _service(db: Db, principal: Principal, service_id: str) -> HostedService:
    return hosting.get_service(db, service_id[:64], organization_id=principal.org_id)


def _domain(db: Db, principal: Principal, service_id: str, domain_id: str) -> CustomDomain:
    service = _service(db, principal, service_id)
    domain = domains.get_domain(db, domain_id, organization_id=principal.org_id)
    if domain.service_id != service.id:
        raise NotFound("no such domain")
    return domain


@router.get("/orgs/{org_id}/services/{service_id}/domains", response_model=list[DomainOut])
def list_domains(
    service_id: str, principal: HostingRead, db: Db, runtime: RuntimeDep
) -> list[DomainOut]:
    service = _service(db, principal, service_id)
    return [DomainOut.of(d, runtime.settings) for d in domains.domains_of_service(db, service.id)]


@router.post(
    "/orgs/{org_id}/services/{service_id}/domains",
    response_model=DomainOut,
    status_code=status.HTTP_201_CREATED,
)
def add_domain(
    service_id: str, body: DomainIn, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> DomainOut:
    """Claim a domain for the service; the answer lists the records to add to its zone."""
    service = _service(db, principal, service_id)
    domain = domains.add_domain(
        db,
        runtime.clock,
        runtime.settings,
        organization_id=service.organization_id,
        service_id=service.id,
        name=body.name,
        self_hosted=body.self_hosted,
        actor=principal.actor,
    )
    return DomainOut.of(domain, runtime.settings)


@router.get("/orgs/{org_id}/services/{service_id}/domains/{domain_id}", response_model=DomainOut)
def get_domain(
    service_id: str, domain_id: str, principal: HostingRead, db: Db, runtime: RuntimeDep
) -> DomainOut:
    return DomainOut.of(_domain(db, principal, service_id, domain_id), runtime.settings)


@router.post(
    "/orgs/{org_id}/services/{service_id}/domains/{domain_id}/check", response_model=DomainOut
)
def check_domain(
    service_id: str, domain_id: str, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> DomainOut:
    """Ask DNS now (at most once per 10 seconds per domain) and return every record's state."""
    domain = _domain(db, principal, service_id, domain_id)
    db.commit()  # end the unit before the DNS lookup (network): no lock held meanwhile
    domains.check_now(db, runtime.clock, runtime.settings, domain, actor=principal.actor)
    return DomainOut.of(domain, runtime.settings)


@router.delete(
    "/orgs/{org_id}/services/{service_id}/domains/{domain_id}",
    status_code=status.HTTP_204_NO_CONTENT,
)
def remove_domain(
    service_id: str, domain_id: str, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> Response:
    domain = _domain(db, principal, service_id, domain_id)
    domains.remove_domain(db, runtime.clock, domain, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/admin/domains", response_model=DomainPage)
def admin_list_domains(
    principal: AdminRead,
    db: Db,
    runtime: RuntimeDep,
    page: PageDep,
    status_filter: Annotated[
        str | None, Query(alias="status", max_length=20, description="pending, failing, verified")
    ] = None,
    q: Annotated[str | None, Query(max_length=100, description="Part of the name.")] = None,
) -> DomainPage:
    rows, total = domains.list_domains(
        db, status=status_filter or None, search=q or None, limit=page.limit, offset=page.offset
    )
    return DomainPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[DomainOut.of(d, runtime.settings) for d in rows],
    )


@router.post("/admin/domains/{domain_id}/check", response_model=DomainOut)
def admin_check_domain(
    domain_id: str, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> DomainOut:
    domain = domains.get_domain(db, domain_id)
    db.commit()  # end the unit before the DNS lookup (network): no lock held meanwhile
    domains.check_now(db, runtime.clock, runtime.settings, domain, actor=principal.actor)
    return DomainOut.of(domain, runtime.settings)
