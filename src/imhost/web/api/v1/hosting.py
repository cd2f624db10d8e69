"""Hosted IM services and their XMPP accounts.

Customers: ``/api/v1/orgs/{org_id}/services`` (area ``hosting``). Staff:
``/api/v1/admin/services`` (area ``hosting-admin``). Passwords are write-only: a generated
one is returned once, in the response that created it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imhost.accounts import service as accounts
from imhost.accounts.permissions import Access, Scope
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.hosting.schemas import (
    AccountCreatedOut,
    AccountIn,
    AccountOut,
    AccountPage,
    ConnectionInfo,
    ImportReportOut,
    ImportRowOut,
    LimitsIn,
    PasswordIn,
    PasswordOut,
    ReasonIn,
    RoomList,
    ServiceOut,
    ServicePage,
    UsageOut,
)
from imhost.kit.errors import InvalidInput, NotFound
from imhost.kit.text import PlainText
from imhost.runtime import Runtime
from imhost.web.deps import Db, PageDep, Principal, RuntimeDep, require
from imhost.web.imports import import_accounts_in_steps
from imhost.web.rooms import destroy_room, room_list

router = APIRouter(tags=["hosting"])

HostingRead = Annotated[Principal, Depends(require("hosting", Access.READ))]
HostingWrite = Annotated[Principal, Depends(require("hosting", Access.WRITE))]
AdminRead = Annotated[Principal, Depends(require("hosting-admin", Access.READ, scope=Scope.STAFF))]
AdminWrite = Annotated[
    Principal, Depends(require("hosting-admin", Access.WRITE, scope=Scope.STAFF))
]

CSV_TYPES = ("text/csv", "text/plain", "application/csv")


def _detail(db: Db, runtime: Runtime, service: HostedService) -> ServiceOut:
    """The service with its usage against its limits and how to connect."""
    out = ServiceOut.of(service)
    connections = None
    server = runtime.xmpp
    if server is not None and hasattr(server, "connections"):
        # One lookup in the engine's counters (this runs on a worker thread).
        connections = int(server.connections(service.domain))
    out.usage = UsageOut(accounts=hosting.count_accounts(db, service.id), connections=connections)
    x = runtime.settings.xmpp
    public = runtime.settings.public_url.rstrip("/")
    ws = public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    out.connection = ConnectionInfo(
        host=service.domain,
        c2s_port=x.c2s_port,
        direct_tls_port=x.c2s_direct_tls_port if x.direct_tls_enabled else None,
        websocket_url=f"{ws}/xmpp-websocket",
        uri=f"xmpp:{service.domain}",
    )
    return out


def _service(db: Db, principal: Principal, service_id: str) -> HostedService:
    return hosting.get_service(db, service_id, organization_id=principal.org_id)


# --- customers: services ---------------------------------------------------------------------


@router.get("/orgs/{org_id}/services", response_model=ServicePage)
def list_services(
    principal: HostingRead, db: Db, runtime: RuntimeDep, page: PageDep
) -> ServicePage:
    rows, total = hosting.list_services(
        db, organization_id=principal.org_id, limit=page.limit, offset=page.offset
    )
    return ServicePage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[_detail(db, runtime, s) for s in rows],
    )


@router.get("/orgs/{org_id}/services/{service_id}", response_model=ServiceOut)
def get_service(service_id: str, principal: HostingRead, db: Db, runtime: RuntimeDep) -> ServiceOut:
    return _detail(db, runtime, _service(db, principal, service_id))


class ServiceSettingsIn(BaseModel):
    registration_allowed: bool = Field(
        description="Let people create their own account from their client (XEP-0077)."
    )


@router.patch("/orgs/{org_id}/services/{service_id}", response_model=ServiceOut)
def update_service(
    service_id: str,
    body: ServiceSettingsIn,
    principal: HostingWrite,
    db: Db,
    runtime: RuntimeDep,
) -> ServiceOut:
    service = _service(db, principal, service_id)
    hosting.set_limits(
        db,
        runtime.clock,
        service,
        {"registration_allowed": body.registration_allowed},
        actor=principal.actor,
    )
    return _detail(db, runtime, service)


# --- customers: group chat rooms --------------------------------------------------------------


@router.get("/orgs/{org_id}/services/{service_id}/rooms", response_model=RoomList)
def list_rooms(service_id: str, principal: HostingRead, db: Db, runtime: RuntimeDep) -> RoomList:
    """The service's group chat rooms (XEP-0045) and the plan's room limits."""
    return room_list(db, runtime, _service(db, principal, service_id))


@router.post(
    "/orgs/{org_id}/services/{service_id}/rooms/{name}/destroy",
    status_code=status.HTTP_204_NO_CONTENT,
)
def destroy_room_route(
    service_id: str,
    name: str,
    body: ReasonIn,
    principal: HostingWrite,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    """Destroy a room: the people in it are told ``reason`` and it is gone (audited)."""
    service = _service(db, principal, service_id)
    destroy_room(db, runtime, service, name, body.reason, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- customers: accounts -----------------------------------------------------------------------


@router.get("/orgs/{org_id}/services/{service_id}/accounts", response_model=AccountPage)
def list_accounts(
    service_id: str,
    principal: HostingRead,
    db: Db,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> AccountPage:
    service = _service(db, principal, service_id)
    rows, total = hosting.list_accounts(db, service, limit=page.limit, offset=page.offset, search=q)
    return AccountPage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[AccountOut.of(service, a) for a in rows],
    )


@router.post(
    "/orgs/{org_id}/services/{service_id}/accounts",
    response_model=AccountCreatedOut,
    status_code=status.HTTP_201_CREATED,
)
def create_account(
    service_id: str, body: AccountIn, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> AccountCreatedOut:
    service = _service(db, principal, service_id)
    account, generated = hosting.create_account(
        db,
        runtime.clock,
        service,
        username=body.username,
        password=body.password,
        name=body.name,
        security=runtime.settings.security,
        actor=principal.actor,
    )
    return AccountCreatedOut(account=AccountOut.of(service, account), generated_password=generated)


@router.get("/orgs/{org_id}/services/{service_id}/accounts/{username}", response_model=AccountOut)
def get_account(service_id: str, username: str, principal: HostingRead, db: Db) -> AccountOut:
    service = _service(db, principal, service_id)
    return AccountOut.of(service, hosting.get_account(db, service, username))


@router.delete(
    "/orgs/{org_id}/services/{service_id}/accounts/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
)
def delete_account(
    service_id: str, username: str, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> Response:
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username)
    hosting.delete_account(db, runtime.clock, service, account, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/orgs/{org_id}/services/{service_id}/accounts/{username}/disable",
    response_model=AccountOut,
)
def disable_account(
    service_id: str,
    username: str,
    body: ReasonIn,
    principal: HostingWrite,
    db: Db,
    runtime: RuntimeDep,
) -> AccountOut:
    """Close the account's sessions and refuse its logins with ``reason``."""
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username)
    hosting.disable_account(db, runtime.clock, service, account, body.reason, actor=principal.actor)
    return AccountOut.of(service, account)


@router.post(
    "/orgs/{org_id}/services/{service_id}/accounts/{username}/enable",
    response_model=AccountOut,
)
def enable_account(
    service_id: str, username: str, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> AccountOut:
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username)
    hosting.enable_account(db, runtime.clock, service, account, actor=principal.actor)
    return AccountOut.of(service, account)


@router.post(
    "/orgs/{org_id}/services/{service_id}/accounts/{username}/password",
    response_model=PasswordOut,
)
def reset_password(
    service_id: str,
    username: str,
    body: PasswordIn,
    principal: HostingWrite,
    db: Db,
    runtime: RuntimeDep,
) -> PasswordOut:
    """Set a new password, or leave it out to get a generated one (shown this once). The
    account's open sessions are closed."""
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username)
    generated = hosting.reset_password(
        db,
        runtime.clock,
        service,
        account,
        password=body.password,
        security=runtime.settings.security,
        actor=principal.actor,
    )
    return PasswordOut(generated_password=generated)


async def _read_csv(request: Request) -> str:
    """The CSV text of a ``text/csv`` body or of the ``file`` part of a multipart upload,
    refused past the size bound without reading it all."""
    limit = hosting.CSV_MAX_BYTES
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise InvalidInput(f"The file is larger than {limit // (1024 * 1024)} MiB; split it.")
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5)
        upload: Any = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("Send the CSV as the form field 'file'.", field="file")
        data: bytes = await upload.read(limit + 1)
    elif content_type in CSV_TYPES:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
        if size > limit:
            raise InvalidInput(f"The file is larger than {limit // (1024 * 1024)} MiB; split it.")
        data = b"".join(chunks)
    else:
        raise InvalidInput(
            "Send the accounts as text/csv, or as a multipart upload with the field 'file'.",
            field="file",
        )
    if len(data) > limit:
        raise InvalidInput(f"The file is larger than {limit // (1024 * 1024)} MiB; split it.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("The file must be UTF-8 text.", field="file") from None


@router.post(
    "/orgs/{org_id}/services/{service_id}/accounts/import",
    response_model=ImportReportOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            }
        }
    },
)
async def import_accounts(
    service_id: str, request: Request, principal: HostingWrite, db: Db, runtime: RuntimeDep
) -> ImportReportOut:
    """Create accounts from CSV ``username,password[,name]`` (header optional). Every valid
    row is created; every other row is reported with its reason (docs/xmpp.md)."""
    service = await run_in_threadpool(_service, db, principal, service_id)
    text = await _read_csv(request)
    report = await run_in_threadpool(
        lambda: import_accounts_in_steps(db, runtime, service, text, actor=principal.actor)
    )
    return ImportReportOut(
        created=report.created,
        refused=report.refused,
        rows=[
            ImportRowOut(line=r.line, username=r.username, status=r.status, reason=r.reason)
            for r in report.rows
        ],
    )


# --- staff -------------------------------------------------------------------------------------


@router.get("/admin/services", response_model=ServicePage)
def admin_list_services(
    principal: AdminRead,
    db: Db,
    runtime: RuntimeDep,
    page: PageDep,
    organization_id: Annotated[str | None, Query(max_length=32)] = None,
) -> ServicePage:
    rows, total = hosting.list_services(
        db, organization_id=organization_id, limit=page.limit, offset=page.offset
    )
    return ServicePage(
        total=total,
        limit=page.limit,
        offset=page.offset,
        items=[_detail(db, runtime, s) for s in rows],
    )


class ServiceCreateIn(BaseModel):
    organization_id: PlainText = Field(max_length=32)
    domain: PlainText | None = Field(
        default=None, max_length=253, description="Default: <organization slug>.<base domain>."
    )


@router.post("/admin/services", response_model=ServiceOut, status_code=status.HTTP_201_CREATED)
def admin_create_service(
    body: ServiceCreateIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> ServiceOut:
    try:
        org = accounts.get_organization(db, body.organization_id)
    except NotFound:
        raise NotFound("no such customer") from None
    service = hosting.create_service(
        db,
        runtime.clock,
        org,
        base_domain=runtime.settings.base_domain,
        domain=body.domain,
        actor=principal.actor,
    )
    return _detail(db, runtime, service)


@router.get("/admin/services/{service_id}", response_model=ServiceOut)
def admin_get_service(
    service_id: str, principal: AdminRead, db: Db, runtime: RuntimeDep
) -> ServiceOut:
    return _detail(db, runtime, hosting.get_service(db, service_id))


@router.post("/admin/services/{service_id}/suspend", response_model=ServiceOut)
def admin_suspend_service(
    service_id: str, body: ReasonIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> ServiceOut:
    """Close every session with ``policy-violation`` and ``reason``; refuse logins."""
    service = hosting.get_service(db, service_id)
    hosting.suspend_service(db, runtime.clock, service, body.reason, actor=principal.actor)
    return _detail(db, runtime, service)


@router.post("/admin/services/{service_id}/reactivate", response_model=ServiceOut)
def admin_reactivate_service(
    service_id: str, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> ServiceOut:
    """Lift a suspension (and a budget-cap block)."""
    service = hosting.get_service(db, service_id)
    hosting.reactivate_service(db, runtime.clock, service, actor=principal.actor)
    return _detail(db, runtime, service)


@router.patch("/admin/services/{service_id}/limits", response_model=ServiceOut)
def admin_set_limits(
    service_id: str, body: LimitsIn, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> ServiceOut:
    service = hosting.get_service(db, service_id)
    values = body.model_dump(exclude_unset=True)
    if not values:
        raise InvalidInput("Send at least one limit to change.")
    hosting.set_limits(db, runtime.clock, service, values, actor=principal.actor)
    return _detail(db, runtime, service)


@router.get("/admin/services/{service_id}/rooms", response_model=RoomList)
def admin_list_rooms(
    service_id: str, principal: AdminRead, db: Db, runtime: RuntimeDep
) -> RoomList:
    return room_list(db, runtime, hosting.get_service(db, service_id))


@router.post(
    "/admin/services/{service_id}/rooms/{name}/destroy", status_code=status.HTTP_204_NO_CONTENT
)
def admin_destroy_room(
    service_id: str,
    name: str,
    body: ReasonIn,
    principal: AdminWrite,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = hosting.get_service(db, service_id)
    destroy_room(db, runtime, service, name, body.reason, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/admin/services/{service_id}", status_code=status.HTTP_204_NO_CONTENT)
def admin_remove_service(
    service_id: str, principal: AdminWrite, db: Db, runtime: RuntimeDep
) -> Response:
    """Delete the service with its accounts and stored data; sessions end (host-gone)."""
    service = hosting.get_service(db, service_id)
    hosting.remove_service(db, runtime.clock, service, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
