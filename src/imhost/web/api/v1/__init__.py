"""The REST API, version 1 (``/api/v1``).

Each area has a module here exposing ``router``; ROUTERS lists them (import the module and
add its router). Every route declares who may call it through a dependency from
``imhost.web.deps`` (see ``accounts.py`` for the pattern); the authorization-matrix test
fails on any route that does not.
"""

from __future__ import annotations

from fastapi import APIRouter

from imhost.web.api.v1 import (
    accounts,
    admin,
    auth,
    billing,
    catalog,
    closing,
    domains,
    help,
    hosting,
    me,
    sepa,
    tickets,
    usage,
)

ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    me.router,
    accounts.router,
    admin.router,
    hosting.router,
    domains.router,
    billing.router,
    sepa.router,
    catalog.router,
    usage.router,
    closing.router,
    help.router,
    tickets.router,
)


def build_router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    for router in ROUTERS:
        api.include_router(router)
    return api
