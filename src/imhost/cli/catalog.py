"""``imhost plans``: list, show, create and version plans; rate a quantity to see the price."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from imhost.catalog import service as catalog
from imhost.catalog.intervals import interval_words
from imhost.catalog.models import LIMIT_FIELDS
from imhost.catalog.pricing import rate
from imhost.catalog.schemas import PlanCreate, PlanVersionChange
from imhost.cli.context import console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.kit.errors import DomainError
from imhost.kit.money import format_amount, format_money
from imhost.metering.metrics import BILLABLE_CODES

INTERVAL_HELP = (
    "weekly, monthly, quarterly, half-yearly, yearly, every-N-months or every-N-weeks; "
    "calendar- in front for calendar-aligned periods (calendar-quarterly)."
)

app = typer.Typer(help="Plans, their prices and limits (the catalog).", no_args_is_help=True)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc}")


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])


def _summary(components: list[Any]) -> str:
    return ", ".join(f"{c.metric} ({c.pricing_model})" for c in components) or "-"


@app.command("list")
def list_plans(
    all_plans: Annotated[bool, typer.Option("--all", help="Hidden plans too.")] = False,
    currency: Annotated[str | None, typer.Option(help="Only this currency, e.g. EUR.")] = None,
) -> None:
    """The plans with their current prices."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        views = catalog.list_plans(session, public_only=not all_plans, currency=currency)
        table = Table(
            "code",
            "name",
            "public",
            "version",
            "price book",
            "base fee",
            "setup fee",
            "trial",
            "usage prices",
        )
        for view in views:
            if not view.versions:
                table.add_row(
                    view.plan.code,
                    view.plan.name,
                    _yes(view.plan.is_public),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                )
            for v in view.versions:
                table.add_row(
                    view.plan.code,
                    view.plan.name,
                    _yes(view.plan.is_public),
                    str(v.version.version),
                    f"{v.version.currency} {interval_words(v.version.billing_interval)}",
                    format_amount(v.version.base_fee, v.version.currency),
                    format_amount(v.version.setup_fee, v.version.currency),
                    f"{v.version.trial_days} d",
                    _summary(v.components),
                )
    console.print(table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@app.command("show")
def show_plan(
    code: Annotated[str, typer.Argument(help="The plan's code, e.g. business.")],
    history: Annotated[bool, typer.Option(help="Superseded versions too.")] = False,
) -> None:
    """A plan's versions: prices, limits and usage prices."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        try:
            view = catalog.plan_view(session, code, current_only=not history)
        except DomainError as exc:
            fail(exc.detail)
        console.print(f"[bold]{view.plan.name}[/] ({view.plan.code}) - {view.plan.description}")
        for v in view.versions:
            ver = v.version
            state = "current" if ver.superseded_at is None else f"superseded {ver.superseded_at}"
            console.print(
                f"\n[bold]version {ver.version}[/], {ver.currency}, "
                f"billed {interval_words(ver.billing_interval)} "
                f"({state}): base fee {format_money(ver.base_fee, ver.currency)}, "
                f"setup fee {format_money(ver.setup_fee, ver.currency)}, "
                f"trial {ver.trial_days} days"
            )
            limits = Table("limit", "value")
            for name in LIMIT_FIELDS:
                value = getattr(ver, name)
                limits.add_row(name, "unlimited" if value is None else str(value))
            console.print(limits)
            prices = Table(
                "metric", "model", "unit price", "tiers", "package", "included", "cap", "minimum"
            )
            for c in v.components:
                spec = c.to_spec()
                tiers = "; ".join(
                    f"up to {t['up_to'] if t['up_to'] is not None else 'inf'}: "
                    f"{t['unit_price']} + {t['flat_fee']} flat"
                    for t in (c.tiers or [])
                )
                prices.add_row(
                    c.metric,
                    c.pricing_model,
                    _opt(spec.unit_price),
                    tiers or "-",
                    _opt(spec.package_size),
                    str(spec.included_quantity),
                    _opt(spec.cap),
                    _opt(spec.minimum),
                )
            console.print(prices)


def _opt(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


@app.command("create")
def create_plan(
    from_json: Annotated[
        Path | None,
        typer.Option("--from-json", help="A plan as JSON (the API's POST /admin/plans body)."),
    ] = None,
    code: Annotated[str | None, typer.Option(help="Code, e.g. team.")] = None,
    name: Annotated[str | None, typer.Option(help="Name shown to customers.")] = None,
    base_fee: Annotated[str | None, typer.Option(help="Recurring fee, e.g. 19.00.")] = None,
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "EUR",
    interval: Annotated[str, typer.Option(help=INTERVAL_HELP)] = "monthly",
    setup_fee: Annotated[str, typer.Option(help="One-time fee.")] = "0",
    trial_days: Annotated[int, typer.Option(help="Free trial length.")] = 0,
    hidden: Annotated[bool, typer.Option(help="Not listed publicly.")] = False,
) -> None:
    """Create a plan, from a JSON file (usage prices included) or from options."""
    if from_json is not None:
        raw = _load_json(from_json)
    else:
        if not (code and name and base_fee):
            fail("give --from-json FILE, or --code, --name and --base-fee")
        raw = {
            "code": code,
            "name": name,
            "is_public": not hidden,
            "version": {
                "currency": currency,
                "billing_interval": interval,
                "base_fee": base_fee,
                "setup_fee": setup_fee,
                "trial_days": trial_days,
            },
        }
    try:
        data = PlanCreate.model_validate(raw)
    except ValidationError as exc:
        fail(_validation_message(exc))
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            plan = catalog.create_plan(session, runtime.clock, data, known_metrics=BILLABLE_CODES)
            plan_code = plan.code
    except DomainError as exc:
        fail(exc.detail)
    console.print(f"[green]created[/] plan {plan_code} (version 1)")


@app.command("version")
def new_version(
    code: Annotated[str, typer.Argument(help="The plan's code.")],
    from_json: Annotated[
        Path | None,
        typer.Option("--from-json", help="The change as JSON (POST /admin/plans/{code}/versions)."),
    ] = None,
    base_fee: Annotated[str | None, typer.Option(help="New recurring fee.")] = None,
    currency: Annotated[str, typer.Option(help="The price book to change.")] = "EUR",
    interval: Annotated[str, typer.Option(help=INTERVAL_HELP)] = "monthly",
    note: Annotated[str, typer.Option(help="Why the price changes.")] = "",
) -> None:
    """Make a new version of a plan's price book (subscriptions keep theirs until migrated)."""
    raw: dict[str, Any] = (
        _load_json(from_json)
        if from_json is not None
        else {"currency": currency, "billing_interval": interval, "change_note": note}
    )
    if base_fee is not None:
        raw["base_fee"] = base_fee
    try:
        change = PlanVersionChange.model_validate(raw)
    except ValidationError as exc:
        fail(_validation_message(exc))
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            version = catalog.new_plan_version(
                session, runtime.clock, code, change, known_metrics=BILLABLE_CODES
            )
            number = version.version
    except DomainError as exc:
        fail(exc.detail)
    console.print(f"[green]created[/] {code} version {number}")


@app.command("seed")
def seed(currency: Annotated[str, typer.Option(help="Price book currency.")] = "EUR") -> None:
    """Create the default Starter, Business and Enterprise plans where absent."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            codes = [p.code for p in catalog.seed_default_plans(session, runtime.clock, currency)]
    except DomainError as exc:
        fail(exc.detail)
    console.print("plans: " + ", ".join(codes))


@app.command("rate")
def rate_quantity(
    code: Annotated[str, typer.Argument(help="The plan's code.")],
    metric: Annotated[str, typer.Argument(help="A billable metric, e.g. messages.")],
    quantity: Annotated[str, typer.Argument(help="The quantity, e.g. 12000 or 3.5.")],
    currency: Annotated[str, typer.Option(help="The price book.")] = "EUR",
) -> None:
    """Show what a quantity of a metric costs on a plan, with the calculation."""
    try:
        amount = Decimal(quantity)
    except InvalidOperation:
        fail(f"{quantity!r} is not a number")
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        try:
            version = catalog.current_plan_version(session, code, currency)
            specs = {s.metric: s for s in catalog.price_specs_for(session, version.id)}
            if metric not in specs:
                fail(f"{code} has no usage price on {metric} (it has: {', '.join(specs) or '-'})")
            charge = rate(specs[metric], amount)
        except DomainError as exc:
            fail(exc.detail)
    console.print(format_money(charge.amount, currency))
    console.print(charge.explanation)
