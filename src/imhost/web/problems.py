"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error an API client sees has ``type``, ``title``, ``status`` and a ``detail`` a person
can act on; validation errors list each field. Nothing a client sends produces a 500: an
unexpected exception is logged with a reference the client can quote.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imhost.kit.errors import DomainError, TooManyRequests
from imhost.kit.text import first_control_character

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://imhost.dev/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


DEFAULT_RETRY_AFTER_SECONDS = 60


def retry_after(exc: TooManyRequests) -> str:
    """The ``Retry-After`` of a 429 (RFC 9110, 10.2.3): every 429 says when to come back."""
    return str(max(1, exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS))


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


CONTROL_TITLE = "Invalid address"
CONTROL_DETAIL = "The address (URL) holds an invisible control character such as NUL; remove it."


def has_control_characters(request: Request) -> bool:
    """Whether the path or query holds a control character (``%00`` in an id, say): no id or
    search has one, and PostgreSQL refuses NUL in text."""
    parts = [request.url.path, *request.query_params.keys(), *request.query_params.values()]
    return any(first_control_character(part) is not None for part in parts)


def refuse_control_characters(request: Request) -> JSONResponse | None:
    """400 for a path or query with a control character, before any route runs."""
    if not has_control_characters(request):
        return None
    return problem(400, CONTROL_TITLE, CONTROL_DETAIL, slug="invalid-input")


def log_unexpected(request: Request, exc: Exception) -> str:
    """Log an unexpected exception under a short reference a person can quote to support."""
    ref = secrets.token_hex(6)
    log.exception(
        "unexpected error %s on %s %s", ref, request.method, request.url.path, exc_info=exc
    )
    return ref


def internal_problem(ref: str) -> JSONResponse:
    return problem(
        500,
        "Internal error",
        f"Something went wrong on our side; quote reference {ref} to support.",
        slug="internal-error",
        reference=ref,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        headers = None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": retry_after(exc)}
        if exc.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="imhost"'}
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            slug=exc.type_slug,
            headers=headers,
            field=exc.field,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_name(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
        return problem(
            422, "Invalid input", detail or "invalid input", slug="invalid-input", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 401: "Authentication required"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem(
            exc.status_code,
            titles.get(exc.status_code, "Error"),
            detail,
            slug=f"http-{exc.status_code}",
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_problem(log_unexpected(request, exc))
