"""What the portal and the console pages share: templates, who may see a page, CSRF on
forms, flash messages, confirmation of destructive actions and pagination.

A page declares who may see it the same way an API route does, with ``page_require(area,
access, scope=...)``: the same permission matrix (``imhost.accounts.permissions``) decides.
The differences are how refusals look: an anonymous visitor is redirected to the sign-in page
(with a local ``next``), a person whose second factor is pending to the code page, and a
refusal or a missing object is a friendly HTML page (403/404). Forms carry the session's CSRF
token in a hidden ``csrf_token`` field, checked on every POST before anything else happens.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.dependencies.models import Dependant
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from imhost.accounts import service as accounts
from imhost.accounts.auth import confirmed_factor
from imhost.accounts.models import Organization, StaffRole, User
from imhost.accounts.permissions import Access, Scope
from imhost.accounts.sessions import COOKIE_NAME, lookup_session
from imhost.catalog.intervals import interval_words
from imhost.kit.errors import (
    DomainError,
    InvalidInput,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
)
from imhost.kit.money import format_money
from imhost.kit.text import CONTROL_MESSAGE, first_control_character
from imhost.runtime import Runtime
from imhost.web import words
from imhost.web.deps import Db, Principal, Requirement, RuntimeDep, client_address
from imhost.web.problems import retry_after

STATIC_DIR = Path(__file__).parent / "static"
FLASH_COOKIE = "imhost_flash"
FORM_COOKIE = "imhost_form"  # double-submit CSRF token for forms shown before signing in
PAGE_SIZE = 25
SIGN_IN = "/portal/sign-in"
CODE_PAGE = "/portal/sign-in/code"
ENROL_PAGE = "/portal/account/mfa"


# --- templates ------------------------------------------------------------------------------


def _plan_comparison(plans: Any) -> Any:
    from imhost.web.portal.charts import plan_comparison

    return plan_comparison(plans)


def _money(amount: Decimal | str | int | None, currency: str = "") -> str:
    if amount is None:
        return "-"
    value = Decimal(str(amount))
    return format_money(value, currency) if currency else _number(value)


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return value.strftime(fmt) + (" UTC" if "%H" in fmt else "") if value else "-"


def _number(value: Decimal | int | float | None) -> str:
    if value is None:
        return "-"
    d = Decimal(str(value))
    return f"{d.normalize():,f}" if d != d.to_integral_value() else f"{int(d):,}"


templates = Environment(
    loader=PackageLoader("imhost.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["money"] = _money
templates.filters["interval_words"] = interval_words  # "every 3 months"
templates.globals["plan_comparison"] = _plan_comparison
templates.filters["when"] = _when
templates.filters["day"] = lambda v: _when(v, "%Y-%m-%d")
templates.filters["number"] = _number
templates.filters["tuple_pair"] = lambda v: (v, str(v).replace("_", " "))
templates.filters.update(words.FILTERS)  # plain words for internal codes


# --- refusals as pages ------------------------------------------------------------------------


class PageRedirect(Exception):
    """Leave the page for another (sign in first, enter your code, ...)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def safe_next(value: str | None, default: str = "/portal/") -> str:
    """A local path to go back to after signing in; anything else gives ``default``."""
    if not value or len(value) > 500:
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 32 for c in value):
        return default
    return value


def sign_in_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{SIGN_IN}?{urlencode({'next': safe_next(here)})}"


def is_page_path(path: str) -> bool:
    if path == "/status" or path.startswith("/status/"):
        # the public status pages; their JSON, feed and badge get problem+json
        return not path.endswith((".json", ".atom", ".svg"))
    return path == "/" or path == "/help" or path.startswith(("/portal", "/console", "/help/"))


# --- who may see a page -------------------------------------------------------------------------


async def read_form(request: Request) -> FormData:
    """The submitted form (read once, before the permission check, which needs its token)."""
    form: FormData | None = getattr(request.state, "page_form", None)
    if form is None:
        form = await request.form() if request.method == "POST" else FormData()
        request.state.page_form = form
    return form


Form = Annotated[FormData, Depends(read_form)]


def _page_principal(request: Request, db: Session, runtime: Runtime, req: Requirement) -> Principal:
    cookie = request.cookies.get(COOKIE_NAME)
    web = lookup_session(db, runtime.clock, runtime.settings.security, cookie) if cookie else None
    if web is None:
        raise PageRedirect(sign_in_url(request))
    user = db.get(User, web.user_id)
    if user is None or not user.is_active:
        raise PageRedirect(sign_in_url(request))
    if request.method == "POST":
        form: FormData | None = getattr(request.state, "page_form", None)
        sent = str(form.get("csrf_token", "")) if form is not None else ""
        if not sent or not hmac.compare_digest(sent, web.csrf_token):
            raise PermissionDenied(
                "This form has expired or did not come from this site (CSRF check). "
                "Go back, reload the page and try again."
            )
    if not web.mfa_verified and not req.allow_mfa_pending:
        if confirmed_factor(db, user.id) is not None:
            raise PageRedirect(f"{CODE_PAGE}?{urlencode({'next': safe_next(request.url.path)})}")
        raise PageRedirect(ENROL_PAGE)
    staff_role = StaffRole(user.staff_role) if user.staff_role else None
    return Principal(
        user=user, web_session=web, staff_role=staff_role, address=client_address(request)
    )


class PageRequirement(Requirement):
    """A page's declared permission (staff, self or public pages)."""

    def __call__(  # type: ignore[override]
        self, request: Request, db: Db, runtime: RuntimeDep, form: Form
    ) -> Principal:
        return _check_page(self, request, db, runtime)


class PageOrgRequirement(Requirement):
    """A customer page's declared permission; reads ``{org_id}`` from the path."""

    def __call__(  # type: ignore[override]
        self,
        request: Request,
        db: Db,
        runtime: RuntimeDep,
        form: Form,
        org_id: Annotated[str, PathParam(min_length=1, max_length=64)],
    ) -> Principal:
        return _check_page(self, request, db, runtime)


def _check_page(req: Requirement, request: Request, db: Session, runtime: Runtime) -> Principal:
    request.state.page_db = db
    from imhost.accounts.permissions import staff_role_allows

    if req.scope is Scope.PUBLIC:
        if request.method == "POST":
            form: FormData | None = getattr(request.state, "page_form", None)
            sent = str(form.get("csrf_token", "")) if form is not None else ""
            expected = request.cookies.get(FORM_COOKIE, "")
            if not sent or not expected or not hmac.compare_digest(sent, expected):
                raise PermissionDenied(
                    "This form has expired (CSRF check). Reload the page and try again."
                )
        return Principal(address=client_address(request))
    principal = _page_principal(request, db, runtime, req)
    if req.scope is Scope.SELF:
        return principal
    if req.scope is Scope.STAFF:
        if not staff_role_allows(principal.staff_role, req.area, req.access, on_org=False):
            raise PermissionDenied("This part of the console is not open to your staff role.")
        return principal
    try:
        return req._check_org(request, db, runtime, principal)
    except Unauthenticated:
        # The organization requires two-factor authentication and this session has none.
        raise PageRedirect(ENROL_PAGE) from None


def page_require(
    area: str,
    access: Access | str = Access.READ,
    *,
    scope: Scope | str = Scope.ORG,
    allow_mfa_pending: bool = False,
) -> Requirement:
    cls = PageOrgRequirement if Scope(scope) is Scope.ORG else PageRequirement
    return cls(area, Access(access), Scope(scope), allow_mfa_pending=allow_mfa_pending)


def page_public() -> Requirement:
    return PageRequirement("public", Access.READ, Scope.PUBLIC)


# --- rendering -----------------------------------------------------------------------------------


def _sign(value: str, key: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


def flash(response: Response, request: Request, message: str) -> Response:
    runtime: Runtime = request.app.state.runtime
    text = message[:300]
    response.set_cookie(
        FLASH_COOKIE,
        quote(text) + "." + _sign(text, runtime.secret_key),
        max_age=60,
        httponly=True,
        samesite="lax",
        secure=runtime.settings.security.cookie_secure,
        path="/",
    )
    return response


def _read_flash(request: Request) -> str | None:
    from urllib.parse import unquote

    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or "." not in raw:
        return None
    text_q, _, sig = raw.rpartition(".")
    text = unquote(text_q)
    runtime: Runtime = request.app.state.runtime
    return text if hmac.compare_digest(sig, _sign(text, runtime.secret_key)) else None


def commit_now(request: Request) -> None:
    """Commit the page's unit of work before the response leaves.

    The request's session (``web.deps.get_db``) commits only after the response has been
    sent; a browser following a redirect at once could otherwise read the old state (a new
    session cookie not yet valid, a flash about a change not yet visible).
    """
    db: Session | None = getattr(request.state, "page_db", None)
    if db is not None:
        db.commit()


def redirect(request: Request, location: str, message: str | None = None) -> Response:
    commit_now(request)
    response = RedirectResponse(location, status_code=303)
    if message:
        flash(response, request, message)
    return response


@dataclass
class Nav:
    """What the layout shows around a page: who is signed in, where, and what they may open."""

    user: User | None = None
    org: Organization | None = None
    org_role: str | None = None
    staff_role: str | None = None
    impersonating: bool = False
    orgs: list[tuple[Organization, str]] = field(default_factory=list)
    section: str = ""


def nav_for(db: Session, principal: Principal | None, *, section: str = "") -> Nav:
    if principal is None or principal.user is None:
        return Nav(section=section)
    web = principal.web_session
    return Nav(
        user=principal.user,
        org=principal.organization,
        org_role=principal.org_role.value if principal.org_role else None,
        staff_role=principal.staff_role.value if principal.staff_role else None,
        impersonating=bool(web is not None and web.impersonating_org_id),
        orgs=accounts.organizations_of(db, principal.user.id),
        section=section,
    )


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    principal: Principal | None = None,
    db: Session | None = None,
    status_code: int = 200,
    section: str = "",
    error: DomainError | None = None,
) -> HTMLResponse:
    """Render ``template``; a page shown because of ``error`` takes its status (and, for too
    many attempts, its ``Retry-After``)."""
    if error is not None:
        status_code = error.status
    if request.method == "POST":
        commit_now(request)
    ctx: dict[str, Any] = dict(context or {})
    nav = ctx.pop("nav", None)
    if nav is None:
        nav = nav_for(db, principal, section=section) if db is not None else Nav(section=section)
    message = _read_flash(request)
    web = principal.web_session if principal is not None else None
    form_token = ""
    if web is None:
        form_token = request.cookies.get(FORM_COOKIE, "")
        if not form_token or len(form_token) > 64:
            form_token = secrets.token_urlsafe(24)
    ctx.update(
        request=request,
        nav=nav,
        flash=message,
        csrf_token=ctx.get("csrf_token") or (web.csrf_token if web is not None else form_token),
        path=request.url.path,
        can=_Can(principal),
    )
    body = templates.get_template(template).render(ctx)
    response = HTMLResponse(body, status_code=status_code)
    if message:
        response.delete_cookie(FLASH_COOKIE, path="/")
    if web is None and form_token != request.cookies.get(FORM_COOKIE):
        runtime: Runtime = request.app.state.runtime
        response.set_cookie(
            FORM_COOKIE,
            form_token,
            httponly=True,
            samesite="lax",
            secure=runtime.settings.security.cookie_secure,
            path="/",
        )
    response.headers["Cache-Control"] = "no-store"
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = retry_after(error)
    return response


class _Can:
    """``can.write('members')`` in a template: whether to show a control at all."""

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal

    def _allows(self, area: str, access: Access) -> bool:
        from imhost.accounts.permissions import org_role_allows, staff_role_allows

        p = self.principal
        if p is None:
            return False
        web = p.web_session
        if (
            web is not None
            and web.impersonating_org_id
            and access is Access.WRITE
            and p.organization
        ):
            return False
        if p.org_role is not None:
            return org_role_allows(p.org_role, area, access)
        if p.acting_as_staff:
            return staff_role_allows(p.staff_role, area, access, on_org=True)
        return False

    def read(self, area: str) -> bool:
        return self._allows(area, Access.READ)

    def write(self, area: str) -> bool:
        return self._allows(area, Access.WRITE)

    def staff(self, area: str, access: str = "read") -> bool:
        from imhost.accounts.permissions import staff_role_allows

        p = self.principal
        return bool(p and staff_role_allows(p.staff_role, area, Access(access), on_org=False))


# --- forms ----------------------------------------------------------------------------------------


@dataclass
class FormErrors:
    """Errors shown next to each field; ``general`` for those that belong to no field.

    ``macros.general`` lists them all at the top of the form (the error summary, each field's
    error a link to the field) and ``macros.field`` shows each beside its field.
    """

    fields: dict[str, str] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    @classmethod
    def of(cls, exc: DomainError, known_fields: set[str] | None = None) -> FormErrors:
        errors = cls()
        by_field = exc.extra.get("field_errors")
        if isinstance(by_field, dict) and by_field:
            for name, message in by_field.items():
                if name and (known_fields is None or name in known_fields):
                    errors.fields.setdefault(str(name), str(message))
                elif str(message) not in errors.general:
                    errors.general.append(str(message))
            return errors
        name = exc.field
        if name and (known_fields is None or name in known_fields):
            errors.fields[name] = exc.detail
            items = exc.extra.get("problems")
            if isinstance(items, list):
                errors.problems[name] = [
                    str(p.get("message", p)) for p in items if isinstance(p, dict)
                ]
        else:
            errors.general.append(exc.detail)
        return errors


# Where a validation error points (``loc``), the parts that name no field of a form.
_LOC_WRAPPERS = {"body", "query", "path", "header", "cookie", "version", "limits", "components"}


def _words(name: str) -> str:
    return name.replace("_", " ").strip() or "this field"


def _bound(value: Any) -> str:
    """A limit from a validation error as people write numbers: 1E+12 -> 1,000,000,000,000."""
    try:
        return _number(Decimal(str(value)))
    except (ArithmeticError, ValueError):
        return str(value)


def plain_message(error: Mapping[str, Any], name: str = "") -> str:
    """One validation error of pydantic (``{"type", "loc", "msg", "ctx"}``) in plain words,
    never the library's own text ("Input should be less than 1E+12")."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    msg = str(error.get("msg", ""))
    what = _words(name)
    if kind == "missing" or (kind == "string_too_short" and ctx.get("min_length") == 1):
        return f"Fill in the {what}."
    if kind == "string_too_short":
        return f"Use at least {ctx.get('min_length')} characters."
    if kind == "string_too_long":
        return f"Use at most {ctx.get('max_length')} characters."
    if kind == "string_pattern_mismatch":
        return f"The {what} holds characters that are not allowed here."
    if kind == "less_than":
        return f"Enter a number below {_bound(ctx.get('lt'))}."
    if kind == "less_than_equal":
        return f"Enter a number no larger than {_bound(ctx.get('le'))}."
    if kind == "greater_than":
        return f"Enter a number above {_bound(ctx.get('gt'))}."
    if kind == "greater_than_equal":
        return f"Enter a number of at least {_bound(ctx.get('ge'))}."
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "Enter a whole number, such as 10."
    if kind in ("float_parsing", "float_type", "decimal_parsing", "decimal_type", "finite_number"):
        return "Enter a number, such as 9.50."
    if kind == "decimal_max_places":
        places = ctx.get("decimal_places")
        return f"Use at most {places} digit{'' if places == 1 else 's'} after the decimal point."
    if kind in ("decimal_max_digits", "decimal_whole_digits"):
        return "Enter a smaller number."
    if kind == "too_short":
        return f"Give at least {ctx.get('min_length')}."
    if kind == "too_long":
        return f"Give at most {ctx.get('max_length')}."
    if kind in ("enum", "literal_error"):
        return "Choose one of the options offered."
    if kind in ("bool_parsing", "bool_type"):
        return "Choose yes or no."
    if kind.startswith(("date", "datetime")):
        return "Enter a date such as 2026-12-31."
    if kind.startswith("url"):
        return "Enter a full address such as https://example.com/hook."
    if "email address" in msg:
        return "Enter an e-mail address such as name@example.com."
    if kind in ("value_error", "assertion_error") and msg:
        # Our own validators' words (schemas raise ValueError with a sentence for people).
        text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ").strip()
        text = text[:1].upper() + text[1:]
        return text if text.endswith((".", "?", "!")) else text + "."
    return f"Check the {what}."


def validation_field(loc: tuple[Any, ...], known_fields: set[str] | None = None) -> str:
    """The form field a validation error's ``loc`` points at (its innermost known name)."""
    names = [str(x) for x in loc if not isinstance(x, int) and str(x) not in _LOC_WRAPPERS]
    if known_fields is not None:
        for name in reversed(names):
            if name in known_fields:
                return name
    return names[-1] if names else ""


def plain_validation_messages(errors: Any, known_fields: set[str] | None = None) -> list[str]:
    """Each error of a ``ValidationError`` or ``RequestValidationError`` as a plain sentence
    naming its field (for a page with no form to show them beside)."""
    out: list[str] = []
    for error in list(errors)[:10]:
        name = validation_field(tuple(error.get("loc", ())), known_fields)
        line = plain_message(error, name)
        line = f"{_words(name).capitalize()}: {line}" if name else line
        if line not in out:
            out.append(line)
    return out


def invalid_form(exc: ValidationError, known_fields: set[str]) -> InvalidInput:
    """A schema's refusal of a form as :class:`InvalidInput`: every field's error in plain
    words (``FormErrors.of`` shows each beside its field)."""
    by_field: dict[str, str] = {}
    for error in exc.errors():
        name = validation_field(tuple(error.get("loc", ())), known_fields)
        by_field.setdefault(name, plain_message(error, name))
    first_name, first_message = next(iter(by_field.items()), ("", "Check the form."))
    return InvalidInput(first_message, field=first_name or None, field_errors=by_field)


def values_of(form: FormData, *, hide: tuple[str, ...] = ("password",)) -> dict[str, str]:
    """What was typed, to put back in the form (never passwords or codes)."""
    return {
        k: str(v)
        for k, v in form.items()
        if isinstance(v, str) and k != "csrf_token" and not any(h in k for h in hide)
    }


def text(form: FormData, name: str, *, max_length: int = 1000) -> str:
    """What was typed in field ``name`` (cut at ``max_length``).

    Invisible control characters (NUL, escapes, line breaks: ``kit.text``) are refused with the
    field named, as the API's schemas refuse them; passwords follow the password policy instead.
    """
    value = form.get(name, "")
    typed = str(value)[:max_length] if isinstance(value, str) else ""
    if "password" not in name and first_control_character(typed) is not None:
        raise InvalidInput(
            "This field " + CONTROL_MESSAGE.format(", tabs or line breaks") + ".", field=name
        )
    return typed


def confirmation(
    request: Request,
    form: FormData,
    *,
    principal: Principal,
    db: Session,
    question: str,
    consequence: str,
    button: str,
    cancel_url: str,
    extra_fields: Mapping[str, str] | None = None,
    reason_field: str | None = None,
) -> Response | None:
    """Ask before a destructive action: ``None`` when the form says it is confirmed, else the
    confirmation page that re-posts the same form with ``confirmed=yes``."""
    if form.get("confirmed") == "yes" and (not reason_field or text(form, reason_field).strip()):
        return None
    hidden = {k: v for k, v in values_of(form).items() if k not in ("confirmed", reason_field)}
    hidden.update(extra_fields or {})
    errors = FormErrors()
    if form.get("confirmed") == "yes" and reason_field:
        errors.fields[reason_field] = "Give a reason; it is recorded and shown to the customer."
    return render(
        request,
        "confirm.html",
        {
            "question": question,
            "consequence": consequence,
            "button": button,
            "cancel_url": cancel_url,
            "hidden": hidden,
            "action": request.url.path,
            "reason_field": reason_field,
            "errors": errors,
        },
        principal=principal,
        db=db,
    )


# --- pagination -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pagination:
    page: int
    per_page: int
    total: int | None = None

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def pages(self) -> int | None:
        return None if self.total is None else max(1, math.ceil(self.total / self.per_page))

    def with_total(self, total: int) -> Pagination:
        return Pagination(self.page, self.per_page, total)

    def has_next(self, shown: int) -> bool:
        if self.total is not None:
            return self.page < (self.pages or 1)
        return shown >= self.per_page

    def url(self, request: Request, page: int) -> str:
        params = dict(request.query_params)
        params["page"] = str(page)
        return f"{request.url.path}?{urlencode(params)}"


def pagination(page: str = "1") -> Pagination:
    try:
        number = int(page)
    except ValueError:
        number = 1
    return Pagination(min(max(number, 1), 100_000), PAGE_SIZE)


PageNo = Annotated[Pagination, Depends(pagination)]


# --- install -----------------------------------------------------------------------------


def install_common(app: FastAPI) -> None:
    """Static files and the redirect of pages that send the visitor elsewhere (refusals are
    pages through ``web.error_pages``); safe to call more than once."""
    if getattr(app.state, "pages_installed", False):
        return
    app.state.pages_installed = True
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    async def _redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageRedirect)
        return RedirectResponse(exc.location, status_code=303)

    app.add_exception_handler(PageRedirect, _redirect)


@dataclass(frozen=True)
class PageRoute:
    method: str
    path: str
    requirement: Requirement | None


def _requirements(dependant: Dependant) -> Iterator[Requirement]:
    for dep in dependant.dependencies:
        if isinstance(dep.call, Requirement):
            yield dep.call
        yield from _requirements(dep)


def page_routes(routers: list[APIRouter]) -> list[PageRoute]:
    """Every page route of ``routers`` with the requirement it declares."""
    out: list[PageRoute] = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                reqs = list(_requirements(route.dependant))
                for method in sorted(route.methods or ()):
                    out.append(PageRoute(method, route.path, reqs[0] if reqs else None))
    return sorted(out, key=lambda r: (r.path, r.method))


def markup(svg: str) -> Markup:
    """Trusted markup made by our own code (SVG charts, QR codes)."""
    return Markup(svg)  # noqa: S704 - generated here, never from input


__all__ = [
    "FORM_COOKIE",
    "Form",
    "FormErrors",
    "PageNo",
    "PageRedirect",
    "PageRoute",
    "Pagination",
    "commit_now",
    "confirmation",
    "install_common",
    "invalid_form",
    "markup",
    "page_public",
    "page_require",
    "page_routes",
    "plain_message",
    "plain_validation_messages",
    "redirect",
    "render",
    "safe_next",
    "text",
    "values_of",
]
