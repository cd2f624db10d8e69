"""The staff console (``/console/``): the dashboard, customers, plans, the billing run,
invoices, dunning, security alerts, the audit log and the e-mail outbox. Every page declares
its staff permission the way the admin API does."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from imhost.web.console import (
    billing,
    customers,
    dashboard,
    domains,
    help,
    monitoring,
    sepa,
    sla,
    tickets,
)
from imhost.web.pages import install_common

# The page routers, each from its module (a new page module adds its router here).
ROUTERS: tuple[APIRouter, ...] = (
    customers.router,
    domains.router,
    billing.router,
    dashboard.router,
    sepa.router,
    help.router,
    sla.router,
    monitoring.router,
    tickets.router,
)


def routers() -> list[APIRouter]:
    """The page routers (the authorization walk reads these)."""
    return list(ROUTERS)


def install(app: FastAPI) -> None:
    if getattr(app.state, "console_installed", False):
        return
    app.state.console_installed = True
    install_common(app)
    for router in routers():
        app.include_router(router)
