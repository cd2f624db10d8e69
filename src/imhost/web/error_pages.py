"""Errors as pages for people, problem+json for programs.

A browser that opens a missing page, a form address by hand, or meets a refusal or a fault on
our side sees the site's own page (``error.html``): what happened in plain words and a link to
somewhere useful (the portal, the console, or the sign-in page). API clients keep the RFC 9457
answers of ``web.problems`` unchanged: anything under ``/api/``, and any request that prefers
JSON to HTML in its ``Accept`` header, gets problem+json as before. A 500 page says nothing
internal, only a reference to quote to support; a 429 page keeps its ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from imhost.accounts.models import User
from imhost.accounts.sessions import COOKIE_NAME, lookup_session
from imhost.kit.errors import DomainError, TooManyRequests
from imhost.runtime import Runtime
from imhost.web import problems
from imhost.web.headers import SECURITY_HEADERS
from imhost.web.pages import Nav, is_page_path, plain_validation_messages, sign_in_url, templates

Handler = Callable[[Request, Any], Awaitable[Response]]

HTML_TYPES = ("text/html", "application/xhtml+xml")
JSON_TYPES = ("application/json", "application/problem+json")

# What each status means to a person, when the code raising it said nothing more useful.
TITLES = {
    400: "Something in the request is not right",
    401: "Sign in first",
    402: "Payment needed",
    403: "Not allowed",
    404: "Page not found",
    405: "This page cannot be opened that way",
    409: "Not possible",
    413: "Too large",
    422: "Check what you sent",
    429: "Too many attempts",
    500: "Something went wrong on our side",
}
DETAILS = {
    400: "The request could not be understood. Go back and try again.",
    401: "You need to be signed in to see this page.",
    403: "Your account may not open this page.",
    404: (
        "We could not find the page you asked for. It may have been moved or removed, "
        "or it is not yours to see. Check the address, or start again from your portal."
    ),
    405: (
        "This address only receives a form sent from its page; it cannot be opened directly. "
        "If you were sending a form, go back, reload the page and send it again."
    ),
    413: "What you sent is larger than we accept.",
    429: "Too many attempts in a short time.",
}


def _quality(accept: str, types: tuple[str, ...]) -> float | None:
    """The highest ``q`` that ``accept`` gives any of ``types`` (None when none is named)."""
    best: float | None = None
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() not in types:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        best = q if best is None else max(best, q)
    return best


def wants_page(request: Request) -> bool:
    """Whether an error is shown as a page: never under ``/api/``; otherwise when the client
    prefers HTML to JSON, or names neither and is on a page of the portal or console."""
    path = request.url.path
    if path == "/api" or path.startswith("/api/"):
        return False
    accept = request.headers.get("accept", "")
    html, json = _quality(accept, HTML_TYPES), _quality(accept, JSON_TYPES)
    if html is None and json is None:
        return is_page_path(path)
    return (html or 0.0) > (json or 0.0)


def _wait_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes = (seconds + 59) // 60
    return f"{minutes} minutes"


def _way_out(request: Request, status: int) -> tuple[str, str]:
    """Where to go from here: the sign-in page, the console or the portal."""
    if status == 401:
        return sign_in_url(request), "Sign in"
    if request.url.path.startswith("/console"):
        return "/console/", "Go to the console"
    return "/portal/", "Go to your portal"


def signed_in_nav(request: Request) -> tuple[Nav, str]:
    """Who is signed in, for the error page's header (their name, the console, signing out),
    read without changing anything; an anonymous ``Nav`` when nobody is, or the database is
    what failed."""
    cookie = request.cookies.get(COOKIE_NAME)
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if not cookie or runtime is None:
        return Nav(), ""
    try:
        with runtime.session_factory() as db:
            web = lookup_session(db, runtime.clock, runtime.settings.security, cookie)
            user = db.get(User, web.user_id) if web is not None else None
            if web is None or user is None or not user.is_active or not web.mfa_verified:
                return Nav(), ""
            # Leaving without a commit: a page about an error records nothing (not even the
            # session's touch); closing keeps what was read.
            return Nav(user=user, staff_role=user.staff_role), web.csrf_token
    except SQLAlchemyError:
        return Nav(), ""


def error_page(
    request: Request,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    retry_after: str | None = None,
    reference: str | None = None,
    messages: list[str] | None = None,
    nav: tuple[Nav, str] | None = None,
) -> HTMLResponse:
    """The site's error page for ``status``, with ``detail`` in plain words; ``nav`` is who is
    signed in (``signed_in_nav``), else the page shows nobody."""
    href, label = _way_out(request, status)
    who, csrf_token = nav or (Nav(), "")
    text = detail.strip() or DETAILS.get(status, HTTPStatus(status).phrase + ".")
    body = templates.get_template("error.html").render(
        request=request,
        nav=who,
        flash=None,
        csrf_token=csrf_token,
        path=request.url.path,
        title=title or TITLES.get(status, "Something is not right"),
        detail=text[:1].upper() + text[1:],
        messages=messages or [],
        status=status,
        wait=_wait_words(int(retry_after)) if retry_after else None,
        reference=reference,
        way_out=(href, label),
    )
    response = HTMLResponse(body, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    for key, value in SECURITY_HEADERS.items():  # a 500 is answered outside the middleware
        response.headers.setdefault(key, value)
    if retry_after:
        response.headers["Retry-After"] = retry_after
    return response


async def domain_error_page(request: Request, exc: DomainError) -> HTMLResponse:
    retry = problems.retry_after(exc) if isinstance(exc, TooManyRequests) else None
    nav = await run_in_threadpool(signed_in_nav, request)
    return error_page(request, exc.status, exc.detail, retry_after=retry, nav=nav)


def _http_detail(exc: StarletteHTTPException) -> str:
    """The raiser's own words, unless it only repeated the status phrase ("Not Found")."""
    detail = exc.detail if isinstance(exc.detail, str) else ""
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = ""
    return "" if detail.strip().lower() == phrase.lower() else detail


def install(app: FastAPI) -> None:
    """Wrap the problem+json handlers of ``web.problems`` so browsers get pages; safe to call
    more than once."""
    if getattr(app.state, "error_pages_installed", False):
        return
    app.state.error_pages_installed = True
    api = {
        kind: cast(Handler, app.exception_handlers[kind])
        for kind in (DomainError, RequestValidationError, StarletteHTTPException)
    }

    async def _domain(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        if wants_page(request):
            return await domain_error_page(request, exc)
        return await api[DomainError](request, exc)

    async def _validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if wants_page(request):
            return error_page(
                request,
                422,
                "Part of the address or of the form is not valid. Go back and check it.",
                messages=plain_validation_messages(exc.errors()),
                nav=await run_in_threadpool(signed_in_nav, request),
            )
        return await api[RequestValidationError](request, exc)

    async def _http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if wants_page(request):
            nav = await run_in_threadpool(signed_in_nav, request)
            response = error_page(request, exc.status_code, _http_detail(exc), nav=nav)
            for key, value in (exc.headers or {}).items():
                response.headers.setdefault(key, value)
            return response
        return await api[StarletteHTTPException](request, exc)

    async def _unexpected(request: Request, exc: Exception) -> Response:
        ref = problems.log_unexpected(request, exc)
        if wants_page(request):
            return error_page(
                request,
                500,
                "The page could not be shown because of a fault on our side, not anything you "
                "did. Try again in a few minutes; if it keeps happening, contact support and "
                "quote the reference below.",
                reference=ref,
            )
        return problems.internal_problem(ref)

    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def control_character_refusal(request: Request) -> Response | None:
    """The 400 for an address holding a control character, as a page or as problem+json."""
    if not problems.has_control_characters(request):
        return None
    if wants_page(request):
        return error_page(request, 400, problems.CONTROL_DETAIL, title=problems.CONTROL_TITLE)
    return problems.refuse_control_characters(request)
