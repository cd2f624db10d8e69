"""Errors that carry a message a person can act on.

The web layer turns these into RFC 9457 problem+json responses; the CLI prints them.
Domain code raises them instead of returning error codes.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class: something the caller asked for cannot be done, and why."""

    status = 400
    type_slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra


class InvalidInput(DomainError):
    status = 422
    type_slug = "invalid-input"
    title = "Invalid input"


class NotFound(DomainError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class Unauthenticated(DomainError):
    status = 401
    type_slug = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(DomainError):
    status = 403
    type_slug = "forbidden"
    title = "Forbidden"


class TooManyRequests(DomainError):
    status = 429
    type_slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class PaymentRequired(DomainError):
    status = 402
    type_slug = "payment-required"
    title = "Payment required"
