"""The customer portal (``/portal/``): server-rendered pages over the same services as the API.

``install(app)`` adds its routes, the static files and the page error handlers.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from imhost.kit import optional_module
from imhost.web.pages import install_common

# Each module exposes ``router``; hosting and billing pages join when those packages exist.
PAGE_MODULES: tuple[str, ...] = (
    "imhost.web.portal.auth",
    "imhost.web.portal.account",
    "imhost.web.portal.org",
)
OPTIONAL_PAGE_MODULES: tuple[tuple[str, str], ...] = (
    ("imhost.hosting.service", "imhost.web.portal.hosting"),
    ("imhost.billing.service", "imhost.web.portal.billing"),
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
    if getattr(app.state, "portal_installed", False):
        return
    app.state.portal_installed = True
    install_common(app)
    for router in routers():
        app.include_router(router)
