"""A hosted service's custom domains: add one, see the DNS records to add with the state of
each, check now, remove (docs/domains.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts.permissions import Access
from imhost.domains import service as domains
from imhost.domains.models import CustomDomain
from imhost.domains.names import display_name
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.kit.errors import DomainError, NotFound
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    confirmation,
    page_require,
    redirect,
    render,
    text,
    values_of,
)

router = APIRouter(prefix="/portal/orgs/{org_id}/service", include_in_schema=False)

HostingRead = Annotated[Principal, Depends(page_require("hosting", Access.READ))]
HostingWrite = Annotated[Principal, Depends(page_require("hosting", Access.WRITE))]


def _service(db: Db, principal: Principal, service_id: str) -> HostedService:
    return hosting.get_service(db, service_id[:64], organization_id=principal.org_id)


def _domain(db: Db, principal: Principal, service: HostedService, domain_id: str) -> CustomDomain:
    domain = domains.get_domain(db, domain_id, organization_id=principal.org_id)
    if domain.service_id != service.id:
        raise NotFound("no such domain")
    return domain


def _url(principal: Principal, service: HostedService) -> str:
    return f"/portal/orgs/{principal.org.slug}/service/{service.id}/domains"


def _domains_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: RuntimeDep,
    service: HostedService,
    *,
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    settings = runtime.settings
    items = [
        {
            "domain": d,
            "display": display_name(d.name),
            "records": domains.expected_records(settings, d),
        }
        for d in domains.domains_of_service(db, service.id)
    ]
    return render(
        request,
        "portal/domains.html",
        {
            "title": f"Custom domains of {service.domain}",
            "service": service,
            "items": items,
            "values": values or {},
            "errors": errors or FormErrors(),
            "self_hosting_offered": bool(settings.dns.addresses),
            "target": settings.dns.srv_target or settings.base_domain,
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Service",
    )


@router.get("/{service_id}/domains")
def domains_page(
    request: Request, service_id: str, principal: HostingRead, db: Db, runtime: RuntimeDep
) -> Response:
    return _domains_page(request, principal, db, runtime, _service(db, principal, service_id))


@router.post("/{service_id}/domains")
def add_domain(
    request: Request,
    service_id: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = _service(db, principal, service_id)
    try:
        domain = domains.add_domain(
            db,
            runtime.clock,
            runtime.settings,
            organization_id=service.organization_id,
            service_id=service.id,
            name=text(form, "domain", max_length=300),
            self_hosted=text(form, "self_hosted", max_length=10) == "yes",
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _domains_page(
            request,
            principal,
            db,
            runtime,
            service,
            values=values_of(form),
            errors=FormErrors.of(exc, {"domain", "self_hosted"}),
            status=exc.status,
        )
    return redirect(
        request,
        _url(principal, service) + f"#d-{domain.id}",
        f"{display_name(domain.name)} is added. Add the records below to its DNS zone.",
    )


@router.post("/{service_id}/domains/{domain_id}/check")
def check_domain(
    request: Request,
    service_id: str,
    domain_id: str,
    principal: HostingWrite,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = _service(db, principal, service_id)
    domain = _domain(db, principal, service, domain_id)
    db.commit()  # end the unit before the DNS lookup (network): no lock held meanwhile
    domains.check_now(db, runtime.clock, runtime.settings, domain, actor=principal.actor)
    name = display_name(domain.name)
    message = (
        f"{name} is verified: every record is in place."
        if domain.status == "verified"
        else f"{name} is not verified yet: see the records marked below. DNS changes can "
        "take a while to show; we check again on our own."
    )
    return redirect(request, _url(principal, service) + f"#d-{domain.id}", message)


@router.post("/{service_id}/domains/{domain_id}/remove")
def remove_domain(
    request: Request,
    service_id: str,
    domain_id: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = _service(db, principal, service_id)
    domain = _domain(db, principal, service, domain_id)
    name = display_name(domain.name)
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Remove {name} from {service.domain}?",
        consequence="We stop checking its DNS records and the name is free to be added again. "
        "You can remove the records from your DNS zone afterwards.",
        button="Remove domain",
        cancel_url=_url(principal, service),
    )
    if ask is not None:
        return ask
    domains.remove_domain(db, runtime.clock, domain, actor=principal.actor)
    return redirect(request, _url(principal, service), f"{name} is removed.")
