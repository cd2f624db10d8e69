"""The catalog: public plan listing, and the provider's plan and add-on management.

Anyone may read the public plans (``/api/v1/plans``); staff with the catalog area change them
under ``/api/v1/admin/plans`` and ``/api/v1/admin/addons``. A price change makes a new plan
version (``POST /admin/plans/{code}/versions``); subscriptions keep theirs until migrated.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from imhost.accounts.permissions import Access, Scope
from imhost.catalog import service as catalog
from imhost.catalog.schemas import (
    AddOnIn,
    AddOnOut,
    AddOnUpdate,
    PlanCreate,
    PlanOut,
    PlanUpdate,
    PlanVersionChange,
    PlanVersionOut,
)
from imhost.metering.metrics import BILLABLE_CODES
from imhost.web.deps import Db, Principal, Public, RuntimeDep, require

router = APIRouter(tags=["catalog"])

CatalogRead = Annotated[Principal, Depends(require("catalog", Access.READ, scope=Scope.STAFF))]
CatalogWrite = Annotated[Principal, Depends(require("catalog", Access.WRITE, scope=Scope.STAFF))]

CurrencyQuery = Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="e.g. EUR")]


# --- public -------------------------------------------------------------------------------


@router.get("/plans", response_model=list[PlanOut])
def list_public_plans(principal: Public, db: Db, currency: CurrencyQuery = None) -> list[PlanOut]:
    """The public plans with their current prices (one price book per currency)."""
    return [catalog.plan_out(v) for v in catalog.list_plans(db, currency=currency)]


@router.get("/plans/{code}", response_model=PlanOut)
def get_public_plan(code: str, principal: Public, db: Db) -> PlanOut:
    return catalog.plan_out(catalog.plan_view(db, code, public_only=True))


@router.get("/addons", response_model=list[AddOnOut])
def list_public_addons(principal: Public, db: Db, currency: CurrencyQuery = None) -> list[AddOnOut]:
    """The add-ons on sale."""
    return [catalog.addon_out(a) for a in catalog.list_addons(db, currency=currency)]


# --- staff: plans -------------------------------------------------------------------------


@router.get("/admin/plans", response_model=list[PlanOut])
def admin_list_plans(
    principal: CatalogRead, db: Db, all_versions: bool = False, currency: CurrencyQuery = None
) -> list[PlanOut]:
    """Every plan, hidden ones included; with ``all_versions`` the superseded versions too."""
    views = catalog.list_plans(
        db, public_only=False, current_only=not all_versions, currency=currency
    )
    return [catalog.plan_out(v) for v in views]


@router.get("/admin/plans/{code}", response_model=PlanOut)
def admin_get_plan(code: str, principal: CatalogRead, db: Db) -> PlanOut:
    """A plan with every version, superseded ones included."""
    return catalog.plan_out(catalog.plan_view(db, code, current_only=False))


@router.post("/admin/plans", response_model=PlanOut, status_code=status.HTTP_201_CREATED)
def admin_create_plan(
    body: PlanCreate, principal: CatalogWrite, db: Db, runtime: RuntimeDep
) -> PlanOut:
    plan = catalog.create_plan(
        db, runtime.clock, body, known_metrics=BILLABLE_CODES, actor=principal.actor
    )
    return catalog.plan_out(catalog.plan_view(db, plan.code))


@router.patch("/admin/plans/{code}", response_model=PlanOut)
def admin_update_plan(
    code: str, body: PlanUpdate, principal: CatalogWrite, db: Db, runtime: RuntimeDep
) -> PlanOut:
    """Name, description, visibility, order: no new version needed."""
    catalog.update_plan(db, runtime.clock, code, body, actor=principal.actor)
    return catalog.plan_out(catalog.plan_view(db, code))


@router.post(
    "/admin/plans/{code}/versions",
    response_model=PlanVersionOut,
    status_code=status.HTTP_201_CREATED,
)
def admin_new_plan_version(
    code: str, body: PlanVersionChange, principal: CatalogWrite, db: Db, runtime: RuntimeDep
) -> PlanVersionOut:
    """A new version of one price book (currency and interval): the current one copied with
    these changes; the old one is superseded but kept for the subscriptions on it."""
    version = catalog.new_plan_version(
        db, runtime.clock, code, body, known_metrics=BILLABLE_CODES, actor=principal.actor
    )
    return catalog.version_out(
        catalog.PlanVersionView(version, catalog.components_of(db, version.id))
    )


# --- staff: add-ons -----------------------------------------------------------------------


@router.get("/admin/addons", response_model=list[AddOnOut])
def admin_list_addons(principal: CatalogRead, db: Db) -> list[AddOnOut]:
    return [catalog.addon_out(a) for a in catalog.list_addons(db, active_only=False)]


@router.post("/admin/addons", response_model=AddOnOut, status_code=status.HTTP_201_CREATED)
def admin_create_addon(
    body: AddOnIn, principal: CatalogWrite, db: Db, runtime: RuntimeDep
) -> AddOnOut:
    addon = catalog.create_addon(db, runtime.clock, body, actor=principal.actor)
    return catalog.addon_out(addon)


@router.get("/admin/addons/{code}/{currency}", response_model=AddOnOut)
def admin_get_addon(code: str, currency: str, principal: CatalogRead, db: Db) -> AddOnOut:
    return catalog.addon_out(catalog.get_addon(db, code, currency))


@router.patch("/admin/addons/{code}/{currency}", response_model=AddOnOut)
def admin_update_addon(
    code: str,
    currency: str,
    body: AddOnUpdate,
    principal: CatalogWrite,
    db: Db,
    runtime: RuntimeDep,
) -> AddOnOut:
    addon = catalog.update_addon(db, runtime.clock, code, currency, body, actor=principal.actor)
    return catalog.addon_out(addon)


@router.delete("/admin/addons/{code}/{currency}", response_model=AddOnOut)
def admin_retire_addon(
    code: str, currency: str, principal: CatalogWrite, db: Db, runtime: RuntimeDep
) -> AddOnOut:
    """Stop selling an add-on (subscriptions that have it keep it; nothing is deleted)."""
    addon = catalog.deactivate_addon(db, runtime.clock, code, currency, actor=principal.actor)
    return catalog.addon_out(addon)
