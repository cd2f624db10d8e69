"""Public status pages (no sign-in, no JavaScript): the provider's components at ``/status``
and each hosted domain at ``/status/{domain}``; each also as JSON, an Atom feed and an SVG
badge. The data comes from :mod:`imhost.monitoring.status`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from imhost.monitoring import status as status_data
from imhost.monitoring.models import CheckState
from imhost.monitoring.status import StatusPage
from imhost.web.deps import Db, RuntimeDep
from imhost.web.pages import render

router = APIRouter(include_in_schema=False)

STATE_WORDS = {
    CheckState.UP: "Operational",
    CheckState.DOWN: "Outage",
    CheckState.UNKNOWN: "No data yet",
}
OVERALL_WORDS = {
    CheckState.UP: "All systems operational",
    CheckState.DOWN: "Some systems are not working",
    CheckState.UNKNOWN: "Not measured yet",
}
BADGE_COLORS = {CheckState.UP: "#2e7d32", CheckState.DOWN: "#c62828", CheckState.UNKNOWN: "#757575"}
CACHE = {"Cache-Control": "public, max-age=30"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _pct(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


def as_json(page: StatusPage) -> dict[str, Any]:
    return {
        "title": page.title,
        "generated_at": _iso(page.generated_at),
        "status": page.overall.value,
        "components": [
            {
                "name": s.name,
                "status": s.state.value,
                "since": _iso(s.since),
                "uptime_percent": {
                    "24h": _pct(s.uptime_24h),
                    "7d": _pct(s.uptime_7d),
                    "30d": _pct(s.uptime_30d),
                    "90d": _pct(s.uptime_90d),
                },
                "days": [
                    {"day": b.day.date().isoformat(), "uptime_percent": _pct(b.percent)}
                    for b in s.bars
                ],
            }
            for s in page.subjects
        ],
        "incidents": [
            {
                "reference": i.reference,
                "title": i.title,
                "status": i.status,
                "opened_at": _iso(i.opened_at),
                "resolved_at": _iso(i.resolved_at),
                "affects": i.subjects,
                "updates": [
                    {"at": _iso(u.at), "status": u.status, "body": u.body} for u in i.updates
                ],
            }
            for i in page.incidents
        ],
        "maintenance": [
            {
                "title": m.title,
                "description": m.description,
                "starts_at": _iso(m.starts_at),
                "ends_at": _iso(m.ends_at),
                "affects": m.subjects,
            }
            for m in page.maintenance
        ],
    }


def as_atom(page: StatusPage, self_url: str, page_url: str) -> str:
    entries = []
    for incident in page.incidents:
        for update in incident.updates:
            entry_id = f"{page_url}#{incident.reference}-{_iso(update.at)}"
            entries.append(
                "<entry>"
                f"<id>{escape(entry_id)}</id>"
                f"<title>{escape(incident.title)}: {escape(update.status)}</title>"
                f"<updated>{_iso(update.at)}</updated>"
                f"<link href={quoteattr(page_url + '#' + incident.reference)}/>"
                f'<content type="text">{escape(update.body)}</content>'
                "</entry>"
            )
    updated = max([u.at for i in page.incidents for u in i.updates] or [page.generated_at])
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<id>{escape(page_url)}</id><title>{escape(page.title)}</title>"
        f"<updated>{_iso(updated)}</updated>"
        f'<link rel="self" href={quoteattr(self_url)}/>'
        f'<link rel="alternate" href={quoteattr(page_url)}/>'
        f"<author><name>{escape(page.title)}</name></author>" + "".join(entries) + "</feed>"
    )


def as_badge(label: str, state: CheckState) -> str:
    value = STATE_WORDS[state].lower()
    lw = 7 * len(label) + 12
    vw = 7 * len(value) + 12
    color = BADGE_COLORS[state]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lw + vw}" height="20" role="img" '
        f"aria-label={quoteattr(f'{label}: {value}')}>"
        f"<title>{escape(label)}: {escape(value)}</title>"
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{color}"/>'
        '<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="6" y="14">{escape(label)}</text>'
        f'<text x="{lw + 6}" y="14">{escape(value)}</text></g></svg>'
    )


def _html(request: Request, page: StatusPage, base: str) -> HTMLResponse:
    response = render(
        request,
        "status/page.html",
        {
            "title": page.title,
            "page": page,
            "base": base,
            "state_words": STATE_WORDS,
            "overall_words": OVERALL_WORDS,
        },
    )
    response.headers.update(CACHE)
    return response


def _provider(db: Db, runtime: RuntimeDep) -> StatusPage:
    return status_data.provider_page(db, runtime.clock.now(), runtime.settings.provider_name)


def _domain(db: Db, runtime: RuntimeDep, domain: str) -> StatusPage:
    return status_data.domain_page(db, runtime.clock.now(), domain)


@router.get("/status")
def provider_status(request: Request, db: Db, runtime: RuntimeDep) -> HTMLResponse:
    return _html(request, _provider(db, runtime), "/status")


@router.get("/status.json")
def provider_json(db: Db, runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(as_json(_provider(db, runtime)), headers=CACHE)


@router.get("/status.atom")
def provider_atom(request: Request, db: Db, runtime: RuntimeDep) -> Response:
    base = runtime.settings.public_url.rstrip("/")
    body = as_atom(_provider(db, runtime), f"{base}/status.atom", f"{base}/status")
    return Response(body, media_type="application/atom+xml", headers=CACHE)


@router.get("/status.svg")
def provider_badge(db: Db, runtime: RuntimeDep) -> Response:
    page = _provider(db, runtime)
    return Response(
        as_badge(runtime.settings.provider_name, page.overall),
        media_type="image/svg+xml",
        headers=CACHE,
    )


@router.get("/status/{domain}.json")
def domain_json(domain: str, db: Db, runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(as_json(_domain(db, runtime, domain)), headers=CACHE)


@router.get("/status/{domain}.atom")
def domain_atom(domain: str, db: Db, runtime: RuntimeDep) -> Response:
    base = runtime.settings.public_url.rstrip("/")
    page = _domain(db, runtime, domain)
    body = as_atom(page, f"{base}/status/{domain}.atom", f"{base}/status/{domain}")
    return Response(body, media_type="application/atom+xml", headers=CACHE)


@router.get("/status/{domain}.svg")
def domain_badge(domain: str, db: Db, runtime: RuntimeDep) -> Response:
    page = _domain(db, runtime, domain)
    return Response(as_badge(domain, page.overall), media_type="image/svg+xml", headers=CACHE)


@router.get("/status/{domain}")
def domain_status(domain: str, request: Request, db: Db, runtime: RuntimeDep) -> HTMLResponse:
    page = _domain(db, runtime, domain)
    return _html(request, page, f"/status/{page.subjects[0].name}")
