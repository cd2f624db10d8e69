"""The API docs page (``/api/v1/docs``) and the site's icon, served from the package.

Swagger UI's files are vendored in ``static/swagger-ui/`` (see the README there): the page
fetches nothing from another site, so the Content-Security-Policy of every page (``'self'``
only, no inline script) holds here too. The start-up script is ``static/api-docs.js``; it
reads the OpenAPI address from the page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.responses import FileResponse, Response

from imhost.web.pages import STATIC_DIR, templates

SWAGGER_UI_VERSION = "5.35.0"
DOCS_PATH = "/api/v1/docs"
OPENAPI_PATH = "/api/v1/openapi.json"
FAVICON = STATIC_DIR / "favicon.svg"

router = APIRouter(include_in_schema=False)


@router.get(DOCS_PATH)
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI over the API's OpenAPI document."""
    body = templates.get_template("api_docs.html").render(
        title=request.app.title,
        openapi_url=OPENAPI_PATH,
        version=SWAGGER_UI_VERSION,
    )
    return HTMLResponse(body)


@router.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for ``/favicon.ico`` on their own: the site's SVG icon answers."""
    return FileResponse(
        FAVICON,
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )
