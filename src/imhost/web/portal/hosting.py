"""The hosted XMPP service: its domain, limits and how close they are, how to connect, and
its accounts (create, reset password, disable/enable, delete, CSV import with a per-row
report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from imhost.accounts.mfa import qr_svg
from imhost.accounts.permissions import Access
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService
from imhost.hosting.schemas import RoomList
from imhost.kit.errors import DomainError, InvalidInput
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.imports import import_accounts_in_steps
from imhost.web.pages import (
    Form,
    FormErrors,
    PageNo,
    confirmation,
    markup,
    page_require,
    redirect,
    render,
    text,
    values_of,
)
from imhost.web.rooms import destroy_room, room_list

router = APIRouter(prefix="/portal/orgs/{org_id}/service", include_in_schema=False)

HostingRead = Annotated[Principal, Depends(page_require("hosting", Access.READ))]
HostingWrite = Annotated[Principal, Depends(page_require("hosting", Access.WRITE))]


@dataclass
class Limit:
    label: str
    used: int | None
    limit: int | None

    @property
    def percent(self) -> int | None:
        if self.used is None or not self.limit:
            return None
        return min(100, round(100 * self.used / self.limit))


def connection(runtime: Runtime, service: HostedService) -> dict[str, Any]:
    x = runtime.settings.xmpp
    public = runtime.settings.public_url.rstrip("/")
    ws = public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return {
        "host": service.domain,
        "c2s_port": x.c2s_port,
        "direct_tls_port": x.c2s_direct_tls_port if x.direct_tls_enabled else None,
        "websocket_url": f"{ws}/xmpp-websocket",
        "uri": f"xmpp:{service.domain}",
    }


def live_connections(runtime: Runtime, service: HostedService) -> int | None:
    """Connections open now, when this process runs the XMPP engine (else unknown)."""
    server = runtime.xmpp
    if server is None or not hasattr(server, "metrics_snapshot"):
        return None
    snapshot: dict[str, dict[str, int]] = server.metrics_snapshot()
    return int(snapshot.get(service.domain, {}).get("connections", 0))


def stored_mb(db: Db, service: HostedService) -> int:
    """Offline messages and private XML stored, in MB of 10^6 bytes rounded up (what the plan's
    storage limit counts; at the limit this shows the limit, not one less)."""
    return -(-hosting.stored_bytes(db, service.id) // hosting.BYTES_PER_MB)


def limits_of(
    db: Db, runtime: Runtime, service: HostedService, rooms: RoomList | None = None
) -> list[Limit]:
    rooms = rooms or room_list(db, runtime, service)
    live = runtime.xmpp is not None
    return [
        Limit("Accounts", hosting.count_accounts(db, service.id), service.max_accounts),
        Limit("Connections at once", live_connections(runtime, service), service.max_connections),
        Limit("Connections per account", None, service.max_connections_per_account),
        Limit("Messages per second per account", None, service.message_rate),
        Limit("Offline messages kept", None, service.max_offline_messages),
        Limit("Storage (MB)", stored_mb(db, service), service.storage_mb),
        Limit("Group chat rooms", len(rooms.items) if live else None, service.max_rooms),
        Limit("People in one group chat", None, service.max_room_occupants),
        Limit("Days of message history kept", None, service.archive_days),
    ]


def services_summary(db: Db, principal: Principal) -> list[dict[str, Any]]:
    from imhost.accounts.permissions import org_role_allows, staff_role_allows

    allowed = (
        org_role_allows(principal.org_role, "hosting", Access.READ)
        if principal.org_role is not None
        else staff_role_allows(principal.staff_role, "hosting", Access.READ, on_org=True)
    )
    if not allowed:
        return []
    return [
        {
            "service": s,
            "accounts": Limit("Accounts", hosting.count_accounts(db, s.id), s.max_accounts),
        }
        for s in hosting.services_of(db, principal.org_id)
    ]


@router.get("")
def service_page(request: Request, principal: HostingRead, db: Db, runtime: RuntimeDep) -> Response:
    services = hosting.services_of(db, principal.org_id)
    items = []
    for s in services:
        conn = connection(runtime, s)
        rooms = room_list(db, runtime, s)
        items.append(
            {
                "service": s,
                "limits": limits_of(db, runtime, s, rooms),
                "connection": conn,
                "qr": markup(qr_svg(conn["uri"], scale=5)),
                "rooms": rooms,
            }
        )
    return render(
        request,
        "portal/service.html",
        {"title": "Your XMPP service", "items": items},
        principal=principal,
        db=db,
        section="Service",
    )


def _accounts_page(
    request: Request,
    principal: Principal,
    db: Db,
    service: HostedService,
    page: Any,
    *,
    q: str = "",
    values: dict[str, str] | None = None,
    errors: FormErrors | None = None,
    shown: dict[str, str] | None = None,
    report: Any = None,
    status: int = 200,
) -> Response:
    rows, total = hosting.list_accounts(
        db, service, limit=page.per_page, offset=page.offset, search=q or None
    )
    return render(
        request,
        "portal/accounts.html",
        {
            "title": f"Accounts on {service.domain}",
            "service": service,
            "accounts": rows,
            "pg": page.with_total(total),
            "q": q,
            "values": values or {},
            "errors": errors or FormErrors(),
            "shown": shown,
            "report": report,
            "limit": Limit(
                "Accounts", hosting.count_accounts(db, service.id), service.max_accounts
            ),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Service",
    )


def _service(db: Db, principal: Principal, service_id: str) -> HostedService:
    return hosting.get_service(db, service_id[:64], organization_id=principal.org_id)


@router.get("/{service_id}/accounts")
def accounts_page(
    request: Request, service_id: str, principal: HostingRead, db: Db, page: PageNo, q: str = ""
) -> Response:
    return _accounts_page(
        request, principal, db, _service(db, principal, service_id), page, q=q[:100]
    )


@router.post("/{service_id}/accounts")
def create_account(
    request: Request,
    service_id: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
    page: PageNo,
) -> Response:
    service = _service(db, principal, service_id)
    try:
        account, generated = hosting.create_account(
            db,
            runtime.clock,
            service,
            username=text(form, "username", max_length=1100),
            password=text(form, "password", max_length=1024) or None,
            name=text(form, "name", max_length=200),
            security=runtime.settings.security,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _accounts_page(
            request,
            principal,
            db,
            service,
            page,
            values=values_of(form),
            errors=FormErrors.of(exc, {"username", "password", "name"}),
            status=exc.status,
        )
    shown = (
        {"jid": f"{account.localpart}@{service.domain}", "password": generated}
        if generated
        else {"jid": f"{account.localpart}@{service.domain}"}
    )
    return _accounts_page(request, principal, db, service, page, shown=shown)


@router.post("/{service_id}/accounts/{username}/password")
def reset_password(
    request: Request,
    service_id: str,
    username: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
    page: PageNo,
) -> Response:
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username[:1100])
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Reset the password of {account.localpart}@{service.domain}?",
        consequence=(
            "A new password is generated and shown once; the account's open sessions are closed."
        ),
        button="Reset password",
        cancel_url=f"/portal/orgs/{principal.org.slug}/service/{service.id}/accounts",
    )
    if ask is not None:
        return ask
    generated = hosting.reset_password(
        db,
        runtime.clock,
        service,
        account,
        password=None,
        security=runtime.settings.security,
        actor=principal.actor,
    )
    return _accounts_page(
        request,
        principal,
        db,
        service,
        page,
        shown={"jid": f"{account.localpart}@{service.domain}", "password": generated or ""},
    )


@router.post("/{service_id}/accounts/{username}/disable")
def disable_account(
    request: Request,
    service_id: str,
    username: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username[:1100])
    url = f"/portal/orgs/{principal.org.slug}/service/{service.id}/accounts"
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Disable {account.localpart}@{service.domain}?",
        consequence="Its sessions close and it cannot sign in until enabled again.",
        button="Disable account",
        cancel_url=url,
        reason_field="reason",
    )
    if ask is not None:
        return ask
    hosting.disable_account(
        db,
        runtime.clock,
        service,
        account,
        text(form, "reason", max_length=500),
        actor=principal.actor,
    )
    return redirect(request, url, f"{account.localpart}@{service.domain} is disabled.")


@router.post("/{service_id}/rooms/{name}/destroy")
def destroy_room_page(
    request: Request,
    service_id: str,
    name: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = _service(db, principal, service_id)
    room = name[:1100]
    url = f"/portal/orgs/{principal.org.slug}/service"
    jid = f"{room}@{hosting.conference_domain(service)}"
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Destroy the group chat {jid}?",
        consequence="Everyone in it is told your reason and it is gone, with its settings "
        "and members. Its address can be used again for a new room.",
        button="Destroy room",
        cancel_url=url,
        reason_field="reason",
    )
    if ask is not None:
        return ask
    destroy_room(db, runtime, service, room, text(form, "reason", max_length=500), principal)
    return redirect(request, url, f"The group chat {jid} is destroyed.")


@router.post("/{service_id}/accounts/{username}/enable")
def enable_account(
    request: Request,
    service_id: str,
    username: str,
    principal: HostingWrite,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username[:1100])
    hosting.enable_account(db, runtime.clock, service, account, actor=principal.actor)
    return redirect(
        request,
        f"/portal/orgs/{principal.org.slug}/service/{service.id}/accounts",
        f"{account.localpart}@{service.domain} is enabled.",
    )


@router.post("/{service_id}/accounts/{username}/delete")
def delete_account(
    request: Request,
    service_id: str,
    username: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    """Delete an account after a confirmation that says what goes with it. The engine closes
    its sessions and refuses its logins (``hosting.changes``); usage already recorded stays,
    since it is billed per service, not per account."""
    service = _service(db, principal, service_id)
    account = hosting.get_account(db, service, username[:1100])
    address = f"{account.localpart}@{service.domain}"
    url = f"/portal/orgs/{principal.org.slug}/service/{service.id}/accounts"
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Delete {address}?",
        consequence=(
            "Its open sessions close at once and it can no longer sign in. Its contact list, "
            "the messages waiting for it while it was offline and its other stored data are "
            f"deleted and cannot be brought back. The address {address} becomes free: a new "
            "account with the same username can be created later. Usage already counted stays "
            "on your bill."
        ),
        button="Delete account",
        cancel_url=url,
    )
    if ask is not None:
        return ask
    hosting.delete_account(db, runtime.clock, service, account, actor=principal.actor)
    return redirect(request, url, f"{address} is deleted; the address is free again.")


@router.post("/{service_id}/accounts/import")
async def import_accounts(
    request: Request,
    service_id: str,
    principal: HostingWrite,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
    page: PageNo,
) -> Response:
    from starlette.concurrency import run_in_threadpool

    service = await run_in_threadpool(_service, db, principal, service_id)
    upload = form.get("file")
    try:
        if not isinstance(upload, UploadFile):
            raise InvalidInput("Choose a CSV file to import.", field="file")
        data = await upload.read(hosting.CSV_MAX_BYTES + 1)
        if len(data) > hosting.CSV_MAX_BYTES:
            raise InvalidInput("The file is too large; split it.", field="file")
        try:
            csv_text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("The file must be UTF-8 text.", field="file") from None
        report = await run_in_threadpool(
            lambda: import_accounts_in_steps(db, runtime, service, csv_text, actor=principal.actor)
        )
    except DomainError as exc:
        db.rollback()
        errors, status = FormErrors.of(exc, {"file"}), exc.status
        return await run_in_threadpool(
            lambda: _accounts_page(
                request, principal, db, service, page, errors=errors, status=status
            )
        )
    return await run_in_threadpool(
        lambda: _accounts_page(request, principal, db, service, page, report=report)
    )
