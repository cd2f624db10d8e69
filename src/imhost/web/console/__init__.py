"""The staff console (``/console/``): customers, plans, the billing run, invoices, dunning,
security alerts, the audit log and the e-mail outbox. Every page declares its staff
permission the way the admin API does."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from imhost.kit import optional_module
from imhost.web.pages import install_common

PAGE_MODULES: tuple[str, ...] = ("imhost.web.console.customers",)
OPTIONAL_PAGE_MODULES: tuple[tuple[str, str], ...] = (
    ("imhost.billing.service", "imhost.web.console.billing"),
)


def routers() -> list[APIRouter]:
    """The page routers of the packages present (the authorization walk reads these)."""
    names = list(PAGE_MODULES)
    names += [page for needed, page in OPTIONAL_PAGE_MODULES if optional_module(needed) is not None]
    out: list[APIRouter] = []
    for name in names:
        module = optional_module(name)
        assert module is not None, name
        out.append(module.router)
    return out


def install(app: FastAPI) -> None:
    if getattr(app.state, "console_installed", False):
        return
    app.state.console_installed = True
    install_common(app)
    for router in routers():
        app.include_router(router)
