"""The REST API, version 1 (``/api/v1``).

Each area has a module here exposing ``router``; ROUTERS lists them. Every route declares
who may call it through a dependency from ``imhost.web.deps`` (see ``accounts.py`` for the
pattern); the authorization-matrix test fails on any route that does not.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

ROUTERS: tuple[str, ...] = (
    "imhost.web.api.v1.auth",
    "imhost.web.api.v1.me",
    "imhost.web.api.v1.accounts",
    "imhost.web.api.v1.admin",
    "imhost.web.api.v1.hosting",
    "imhost.web.api.v1.billing",
    "imhost.web.api.v1.catalog",
    "imhost.web.api.v1.usage",
)


def build_router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    for name in ROUTERS:
        module = importlib.import_module(name)
        api.include_router(module.router)
    return api
