"""The customer portal (``/portal/``): server-rendered pages over the same services as the API.

``install(app)`` adds its routes, the static files and the page error handlers.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from imhost.web.pages import install_common
from imhost.web.portal import (
    account,
    add_ons,
    alerts,
    auth,
    billing,
    closing,
    domains,
    help,
    hosting,
    org,
    sepa,
    tickets,
    webhooks,
)

# The page routers, each from its module (a new page module adds its router here).
ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    account.router,
    alerts.router,
    org.router,
    hosting.router,
    domains.router,
    billing.router,
    sepa.router,
    closing.router,
    tickets.router,  # before help: /help/contact is not a category
    help.router,
    add_ons.router,
    webhooks.router,
)


def routers() -> list[APIRouter]:
    """The page routers (the authorization walk reads these)."""
    return list(ROUTERS)


def install(app: FastAPI) -> None:
    if getattr(app.state, "portal_installed", False):
        return
    app.state.portal_installed = True
    install_common(app)
    for router in routers():
        app.include_router(router)
