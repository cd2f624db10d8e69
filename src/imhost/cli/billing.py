"""``imhost billing``: run billing and dunning, list invoices, set tax rates."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imhost.billing import service
from imhost.billing.flows import RunSummary, run_billing
from imhost.billing.tasks import run_dunning
from imhost.cli import sepa as sepa_cli
from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.kit.errors import DomainError
from imhost.kit.money import format_money
from imhost.runtime import Runtime

app = typer.Typer(
    help="Billing: the billing run, dunning, invoices, tax rates.", no_args_is_help=True
)
app.add_typer(sepa_cli.app, name="sepa")


def parse_as_of(value: str | None, now: datetime) -> datetime:
    """``YYYY-MM-DD`` (00:00 UTC that day) or an ISO 8601 time with a zone; default now."""
    if value is None:
        return now
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--as-of {value!r}: use YYYY-MM-DD or 2026-12-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        if len(value) > 10:
            raise ValueError(f"--as-of {value!r}: give the time zone, e.g. ...Z")
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if parsed > now:
        raise ValueError(f"--as-of {value} is in the future; a run cannot bill ahead of time")
    return parsed


def billing_run(runtime: Runtime, as_of: datetime, out: Console) -> RunSummary:
    """Run billing with a progress bar, then print the summary table."""
    with Progress(
        TextColumn("[bold]billing run"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as bar:
        task = bar.add_task("run", total=None)

        def progress(done: int, total: int, _current: str) -> None:
            bar.update(task, completed=done, total=total)

        summary = run_billing(
            runtime.session_factory, runtime.clock, as_of, progress=progress, actor=cli_actor()
        )
        bar.update(
            task,
            completed=summary.invoices + summary.skipped + len(summary.failures),
            total=max(summary.invoices + summary.skipped + len(summary.failures), 1),
        )
    table = Table(title=f"Billing run up to {as_of:%Y-%m-%d %H:%M} UTC")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("invoices made", str(summary.invoices))
    table.add_row("already invoiced (skipped)", str(summary.skipped))
    table.add_row("failed", str(len(summary.failures)))
    for currency, total in sorted(summary.totals.items()):
        table.add_row("total", format_money(total, currency))
    if summary.invoice_numbers:
        first, last = summary.invoice_numbers[0], summary.invoice_numbers[-1]
        table.add_row("numbers", first if first == last else f"{first} .. {last}")
    table.add_row("seconds", f"{summary.seconds:.2f}")
    out.print(table)
    for failure in summary.failures:
        out.print(
            f"[red]failed[/] subscription {failure.subscription_id} "
            f"(organization {failure.organization_id}) at {failure.billing_point:%Y-%m-%d}: "
            f"{failure.error}"
        )
    return summary


@app.command("run")
def run(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Bill what is due up to this date (YYYY-MM-DD, UTC)."),
    ] = None,
) -> None:
    """Invoice every subscription whose period has ended (safe to run again)."""
    runtime = runtime_or_exit()
    try:
        when = parse_as_of(as_of, runtime.clock.now())
    except ValueError as exc:
        fail(str(exc), 2)
    summary = billing_run(runtime, when, console)
    if summary.failures:
        raise typer.Exit(1)


@app.command("dunning")
def dunning() -> None:
    """Send due reminders, charge late fees, suspend and terminate per the dunning policy."""
    runtime = runtime_or_exit()
    summary = run_dunning(runtime.session_factory, runtime.clock)
    table = Table("action", "count", title=f"Dunning: {summary.invoices_checked} open invoices")
    for action, count in sorted(summary.actions.items()):
        table.add_row(action, str(count))
    console.print(table)


@app.command("invoices")
def invoices(
    organization: Annotated[str | None, typer.Option(help="Organization id.")] = None,
    status: Annotated[str | None, typer.Option(help="draft, open, paid or void.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """The latest invoices."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        rows = service.list_invoices(
            session, organization_id=organization, status=status, limit=limit
        )
        table = Table("number", "customer", "issued", "due", "status", "total", "due now")
        for inv in rows:
            table.add_row(
                inv.number or "(draft)",
                inv.customer_name,
                f"{inv.issued_at:%Y-%m-%d}" if inv.issued_at else "",
                f"{inv.due_at:%Y-%m-%d}" if inv.due_at else "",
                inv.status,
                format_money(inv.total, inv.currency),
                format_money(inv.amount_due, inv.currency),
            )
    console.print(table)


@app.command("tax-rate")
def tax_rate(
    country: Annotated[str, typer.Argument(help="ISO 3166 code, e.g. DE.")],
    percent: Annotated[str, typer.Argument(help="e.g. 19 or 8.1")],
    name: Annotated[str, typer.Option(help="The tax's name on invoices.")] = "VAT",
) -> None:
    """Set the tax rate charged to customers in a country."""
    runtime = runtime_or_exit()
    try:
        value = Decimal(percent)
    except InvalidOperation:
        fail(f"{percent!r} is not a number", 2)
    try:
        with transaction(runtime.session_factory) as session:
            rate = service.set_tax_rate(
                session, runtime.clock, country, value, name, actor=cli_actor()
            )
            console.print(f"{rate.country}: {rate.percent.normalize():f} % {rate.name}")
    except DomainError as exc:
        fail(exc.detail, 2)
