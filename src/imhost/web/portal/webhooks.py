"""Webhooks in the portal: the organization's endpoints, adding one (its signing secret shown
once), rotating the secret, a test event, the recent deliveries and sending one again,
disabling and deleting. The same rules as the API: every change goes through
``notify.webhooks.WebhookService`` (URL checks, audit entries)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts.permissions import Access
from imhost.kit.errors import DomainError
from imhost.notify.models import WebhookEndpoint
from imhost.notify.webhooks import DELIVERY_STATUS_WORDS, EVENT_TYPES, event_words
from imhost.runtime import Runtime
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import (
    Form,
    FormErrors,
    confirmation,
    page_require,
    redirect,
    render,
    text,
)

router = APIRouter(prefix="/portal/orgs/{org_id}/webhooks", include_in_schema=False)

# The API's rule: endpoints (their addresses and secrets) are the organization's settings.
WebhooksManage = Annotated[Principal, Depends(page_require("organization", Access.WRITE))]

FIELDS = {"url", "event_types"}


def _base(principal: Principal) -> str:
    return f"/portal/orgs/{principal.org.slug}/webhooks"


def _list_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: Runtime,
    *,
    values: dict[str, Any] | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/webhooks.html",
        {
            "title": "Webhooks",
            "endpoints": runtime.webhooks.list_endpoints(db, principal.org_id),
            "event_types": EVENT_TYPES,
            "event_words": event_words,
            "values": values or {},
            "chosen": (values or {}).get("event_types", []),
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Settings",
    )


def _endpoint_page(
    request: Request,
    principal: Principal,
    db: Db,
    runtime: Runtime,
    endpoint: WebhookEndpoint,
    *,
    secret: str | None = None,
    errors: FormErrors | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "portal/webhook.html",
        {
            "title": "Webhook endpoint",
            "endpoint": endpoint,
            "secret": secret,
            "deliveries": runtime.webhooks.recent_deliveries(db, principal.org_id, endpoint.id),
            "event_words": event_words,
            "status_words": DELIVERY_STATUS_WORDS,
            "errors": errors or FormErrors(),
        },
        principal=principal,
        db=db,
        status_code=status,
        section="Settings",
    )


@router.get("")
def webhooks_page(
    request: Request, principal: WebhooksManage, db: Db, runtime: RuntimeDep
) -> Response:
    return _list_page(request, principal, db, runtime)


@router.post("")
def add_endpoint(
    request: Request, principal: WebhooksManage, form: Form, db: Db, runtime: RuntimeDep
) -> Response:
    chosen = [str(v)[:64] for v in form.getlist("event_types")][: len(EVENT_TYPES) + 5]
    try:
        url = text(form, "url", max_length=600)
        endpoint = runtime.webhooks.create_endpoint(
            db,
            runtime.clock,
            organization_id=principal.org_id,
            url=url,
            event_types=chosen,
            actor=principal.actor,
        )
    except DomainError as exc:
        db.rollback()
        return _list_page(
            request,
            principal,
            db,
            runtime,
            values={"url": str(form.get("url", ""))[:600], "event_types": chosen},
            errors=FormErrors.of(exc, FIELDS),
            status=exc.status,
        )
    return _endpoint_page(request, principal, db, runtime, endpoint, secret=endpoint.secret)


@router.get("/{endpoint_id}")
def endpoint_page(
    request: Request, endpoint_id: str, principal: WebhooksManage, db: Db, runtime: RuntimeDep
) -> Response:
    endpoint = runtime.webhooks.get_endpoint(db, principal.org_id, endpoint_id)
    return _endpoint_page(request, principal, db, runtime, endpoint)


@router.post("/{endpoint_id}/rotate")
def rotate_secret(
    request: Request,
    endpoint_id: str,
    principal: WebhooksManage,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    endpoint = runtime.webhooks.get_endpoint(db, principal.org_id, endpoint_id)
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Make a new signing secret for {endpoint.url}?",
        consequence=(
            "The new secret is shown once. Events from now on are signed with it, so your "
            "receiver refuses them until you give it the new secret."
        ),
        button="Make a new secret",
        cancel_url=f"{_base(principal)}/{endpoint.id}",
    )
    if ask is not None:
        return ask
    runtime.webhooks.rotate_secret(
        db, runtime.clock, principal.org_id, endpoint.id, actor=principal.actor
    )
    return _endpoint_page(request, principal, db, runtime, endpoint, secret=endpoint.secret)


@router.post("/{endpoint_id}/test")
def send_test(
    request: Request, endpoint_id: str, principal: WebhooksManage, db: Db, runtime: RuntimeDep
) -> Response:
    try:
        runtime.webhooks.send_test(
            db, runtime.clock, principal.org_id, endpoint_id, actor=principal.actor
        )
    except DomainError as exc:
        db.rollback()
        endpoint = runtime.webhooks.get_endpoint(db, principal.org_id, endpoint_id)
        return _endpoint_page(
            request,
            principal,
            db,
            runtime,
            endpoint,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(
        request,
        f"{_base(principal)}/{endpoint_id[:64]}",
        "A test event is on its way; its delivery shows below within a minute.",
    )


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver")
def redeliver(
    request: Request,
    endpoint_id: str,
    delivery_id: str,
    principal: WebhooksManage,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    try:
        runtime.webhooks.redeliver(
            db, runtime.clock, principal.org_id, endpoint_id, delivery_id, actor=principal.actor
        )
    except DomainError as exc:
        db.rollback()
        endpoint = runtime.webhooks.get_endpoint(db, principal.org_id, endpoint_id)
        return _endpoint_page(
            request,
            principal,
            db,
            runtime,
            endpoint,
            errors=FormErrors(general=[exc.detail]),
            status=exc.status,
        )
    return redirect(
        request, f"{_base(principal)}/{endpoint_id[:64]}", "The event is queued to be sent again."
    )


@router.post("/{endpoint_id}/disable")
def disable(
    request: Request, endpoint_id: str, principal: WebhooksManage, db: Db, runtime: RuntimeDep
) -> Response:
    endpoint = runtime.webhooks.set_active(
        db, runtime.clock, principal.org_id, endpoint_id, False, actor=principal.actor
    )
    return redirect(
        request,
        f"{_base(principal)}/{endpoint.id}",
        "The endpoint is disabled: no new events are sent to it.",
    )


@router.post("/{endpoint_id}/enable")
def enable(
    request: Request, endpoint_id: str, principal: WebhooksManage, db: Db, runtime: RuntimeDep
) -> Response:
    endpoint = runtime.webhooks.set_active(
        db, runtime.clock, principal.org_id, endpoint_id, True, actor=principal.actor
    )
    return redirect(request, f"{_base(principal)}/{endpoint.id}", "The endpoint is enabled again.")


@router.post("/{endpoint_id}/delete")
def delete(
    request: Request,
    endpoint_id: str,
    principal: WebhooksManage,
    form: Form,
    db: Db,
    runtime: RuntimeDep,
) -> Response:
    endpoint = runtime.webhooks.get_endpoint(db, principal.org_id, endpoint_id)
    ask = confirmation(
        request,
        form,
        principal=principal,
        db=db,
        question=f"Delete the endpoint {endpoint.url}?",
        consequence=(
            "No more events are sent to it, and its delivery history is deleted with it. "
            "Events waiting to be sent are dropped."
        ),
        button="Delete endpoint",
        cancel_url=f"{_base(principal)}/{endpoint.id}",
    )
    if ask is not None:
        return ask
    url = endpoint.url
    runtime.webhooks.delete_endpoint(
        db, principal.org_id, endpoint.id, clock=runtime.clock, actor=principal.actor
    )
    return redirect(request, _base(principal), f"The endpoint {url} is deleted.")
