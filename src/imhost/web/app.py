"""The FastAPI application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from starlette.responses import Response

from imhost import __version__
from imhost.db.migrations import migration_status
from imhost.domains import service as domains
from imhost.monitoring.metrics import render_monitoring_metrics
from imhost.runtime import Runtime
from imhost.web import api_docs, console, error_pages, portal, problems
from imhost.web import status as status_pages
from imhost.web.api.v1 import build_router
from imhost.web.body import BodyLimit
from imhost.web.headers import SECURITY_HEADERS
from imhost.web.metrics import (
    HttpMetrics,
    check_metrics_access,
    render_domain_metrics,
    render_engine_metrics,
)
from imhost.web.xmpp_websocket import router as xmpp_websocket_router

# Only the static files (CSS, JS) may be kept by caches.
CACHEABLE_PREFIXES = ("/static/",)


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="imhost API",
        version=__version__,
        description=(
            "The REST API of an imhost instant-messaging hosting provider. Authenticate with a "
            "session cookie (plus the X-CSRF-Token header on unsafe methods) or with "
            "`Authorization: Bearer <API token>`. Errors are RFC 9457 problem+json."
        ),
        openapi_url="/api/v1/openapi.json",
        # The docs page is ``web.api_docs``: Swagger UI served from the package, not a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.runtime = runtime
    registry = CollectorRegistry()
    app.state.metrics_registry = registry
    http_metrics = HttpMetrics(registry)
    problems.install(app)

    @app.middleware("http")
    async def _metrics_and_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = error_pages.control_character_refusal(request)
        response = refused or await http_metrics.middleware(request, call_next)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if not request.url.path.startswith(CACHEABLE_PREFIXES):
            # Answers carry people's data and one-time secrets (new tokens, TOTP secrets,
            # recovery codes): no browser or proxy may keep a copy.
            response.headers.setdefault("Cache-Control", "no-store")
        if runtime.settings.security.cookie_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        """Ready: the database answers and its schema is at the newest migration."""
        try:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                status = migration_status(conn)
        except Exception as exc:  # noqa: BLE001 - any database failure means not ready
            return JSONResponse(
                {"status": "unavailable", "database": str(exc)[:200]}, status_code=503
            )
        if not status.current:
            return JSONResponse(
                {
                    "status": "unavailable",
                    "migrations": f"at {status.database}, newest {status.head}",
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok", "migration": status.head})

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        check_metrics_access(request, runtime.settings.metrics)
        body = generate_latest(registry)
        xmpp = runtime.xmpp
        if xmpp is not None:
            body += render_engine_metrics(xmpp.metrics_snapshot(), xmpp.engine_stats()).encode()
        with runtime.session_factory() as session:
            body += render_domain_metrics(domains.count_by_status(session)).encode()
            body += render_monitoring_metrics(session, runtime.clock.now()).encode()
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    # Outermost: a body is received whole (and bounded) before any route or transaction runs.
    app.add_middleware(BodyLimit)
    app.include_router(build_router())
    app.include_router(api_docs.router)
    app.include_router(xmpp_websocket_router)
    app.include_router(status_pages.router)
    # Server-rendered pages: each package adds its routes, templates and /static.
    portal.install(app)
    console.install(app)
    # Errors: a page for people, problem+json for programs (after every handler is known).
    error_pages.install(app)
    return app
