"""The permission matrix of every API route, read from the routes themselves.

``python -m imhost.web.matrix`` prints the Markdown table kept in docs/security.md; a test
checks the document matches the code, and another walks every route for every role.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

from imhost.accounts.models import OrgRole, StaffRole
from imhost.accounts.permissions import (
    ORG_MATRIX,
    STAFF_MATRIX,
    STAFF_ON_ORG_MATRIX,
    Access,
    Scope,
)
from imhost.web.api.v1 import ROUTERS
from imhost.web.deps import Requirement


@dataclass(frozen=True)
class RoutePermission:
    method: str
    path: str
    requirement: Requirement | None


def _requirements(dependant: Dependant) -> Iterator[Requirement]:
    for dep in dependant.dependencies:
        if isinstance(dep.call, Requirement):
            yield dep.call
        yield from _requirements(dep)


def api_routes() -> list[RoutePermission]:
    """Every (method, path) of /api/v1 with the requirement it declares (None: none)."""
    out: list[RoutePermission] = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                reqs = list(_requirements(route.dependant))
                for method in sorted(route.methods or ()):
                    out.append(
                        RoutePermission(method, "/api/v1" + route.path, reqs[0] if reqs else None)
                    )
            elif isinstance(route, APIWebSocketRoute):
                reqs = list(_requirements(route.dependant))
                out.append(RoutePermission("WS", "/api/v1" + route.path, reqs[0] if reqs else None))
    return sorted(out, key=lambda r: (r.path, r.method))


def who_may(req: Requirement) -> str:
    if req.scope is Scope.PUBLIC:
        return "anyone"
    if req.scope is Scope.SELF:
        return "any signed-in person (not tokens)"
    key = (req.area, req.access)
    if req.scope is Scope.STAFF:
        roles = STAFF_MATRIX.get(key, frozenset())
        return "staff: " + ", ".join(r.value for r in StaffRole if r in roles)
    org_roles = ORG_MATRIX.get(key, frozenset())
    staff_roles = STAFF_ON_ORG_MATRIX.get(key, frozenset())
    return (
        ", ".join(r.value for r in OrgRole if r in org_roles)
        + "; staff: "
        + ", ".join(r.value for r in StaffRole if r in staff_roles)
    )


def markdown_table() -> str:
    lines = [
        "| method | route | scope | permission | who may call it |",
        "|---|---|---|---|---|",
    ]
    for r in api_routes():
        if r.requirement is None:
            lines.append(f"| {r.method} | `{r.path}` | ? | ? | **undeclared** |")
            continue
        req = r.requirement
        perm = "-" if req.scope in (Scope.PUBLIC, Scope.SELF) else f"{req.area}:{req.access.value}"
        lines.append(f"| {r.method} | `{r.path}` | {req.scope.value} | {perm} | {who_may(req)} |")
    return "\n".join(lines) + "\n"


def role_tables() -> str:
    """The two role matrices, by area."""
    lines = ["| customer area | read | write |", "|---|---|---|"]
    for area in sorted({a for a, _ in ORG_MATRIX}):
        cells = [
            ", ".join(r.value for r in OrgRole if r in ORG_MATRIX.get((area, acc), frozenset()))
            for acc in Access
        ]
        lines.append(f"| {area} | {cells[0]} | {cells[1] or '-'} |")
    lines += ["", "| staff area | read | write |", "|---|---|---|"]
    for area in sorted({a for a, _ in STAFF_MATRIX}):
        cells = [
            ", ".join(r.value for r in StaffRole if r in STAFF_MATRIX.get((area, acc), frozenset()))
            for acc in Access
        ]
        lines.append(f"| {area} | {cells[0] or '-'} | {cells[1] or '-'} |")
    return "\n".join(lines) + "\n"


START, END = (
    "<!-- matrix:start (generated: python -m imhost.web.matrix --update) -->",
    "<!-- matrix:end -->",
)


def update_document(path: str) -> bool:
    """Rewrite the generated block of ``path``; returns whether it changed."""
    from pathlib import Path

    doc = Path(path)
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{path} has no {START} ... {END} block")
    new = f"{head}{START}\n\n{role_tables()}\n{markdown_table()}\n{END}{tail}"
    if new != text:
        doc.write_text(new)
        return True
    return False


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--update":
        print("updated" if update_document(sys.argv[2]) else "up to date")
    else:
        print(role_tables())
        print(markdown_table())
