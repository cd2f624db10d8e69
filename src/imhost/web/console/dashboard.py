"""Console: the dashboard (MRR, new and churned customers, open and overdue invoices, active
services and XMPP connections now). The figures come from billing.dashboard and hosting; this
module only reads the running XMPP engine's connection count and lays the page out."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from imhost.accounts.permissions import Access, Scope
from imhost.billing import dashboard as figures
from imhost.hosting import service as hosting
from imhost.web.deps import Db, Principal, RuntimeDep
from imhost.web.pages import page_require, render
from imhost.web.portal.charts import bars

router = APIRouter(prefix="/console", include_in_schema=False)

# Money figures: the same staff who read invoices (admin, billing, read-only).
DashboardRead = Annotated[
    Principal, Depends(page_require("billing-admin", Access.READ, scope=Scope.STAFF))
]


def connections_now(xmpp: Any) -> int | None:
    """Client connections open now on the XMPP engine this process runs (``None`` when this
    process runs none): the ``connections`` gauge of every virtual host, summed."""
    if xmpp is None:
        return None
    snapshot: dict[str, dict[str, int]] = xmpp.metrics_snapshot()
    return sum(int(counters.get("connections", 0)) for counters in snapshot.values())


@router.get("/dashboard")
def dashboard(request: Request, principal: DashboardRead, db: Db, runtime: RuntimeDep) -> Response:
    movement = figures.customer_movement(db, runtime.clock, months=7)
    open_, overdue = figures.open_invoices(db, runtime.clock)
    services = hosting.count_services_by_status(db)
    return render(
        request,
        "console/dashboard.html",
        {
            "title": "Dashboard",
            "mrr": figures.monthly_recurring_revenue(db),
            "movement": movement,
            "new_chart": bars(
                "New customers per month",
                [(m.label, Decimal(m.new)) for m in movement],
                unit="customers",
                chart_id="new",
                whole=True,
            ),
            "churn_chart": bars(
                "Churned customers per month",
                [(m.label, Decimal(m.churned)) for m in movement],
                unit="customers",
                chart_id="churn",
                whole=True,
            ),
            "open": open_,
            "overdue": overdue,
            "services": services,
            "connections": connections_now(runtime.xmpp),
        },
        principal=principal,
        db=db,
        section="Dashboard",
    )
