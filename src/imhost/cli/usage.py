"""``imhost usage``: usage to date, batch ingestion from a file, the late-usage policy."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from imhost.accounts import service as accounts
from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.kit.errors import DomainError
from imhost.metering import aggregate, closing, ingestion
from imhost.metering import metrics as m
from imhost.metering.ingestion import UsageRejected
from imhost.metering.schemas import MAX_BATCH, UsageIn
from imhost.metering.tasks import calendar_month

app = typer.Typer(
    help="Metered usage: what customers used, ingestion, policy.", no_args_is_help=True
)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--{name}: {value!r} is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
    if parsed.tzinfo is None:
        fail(f"--{name} needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return parsed


@app.command("show")
def show(
    organization: Annotated[str, typer.Argument(help="Organization id or slug.")],
    period_start: Annotated[str | None, typer.Option(help="Default: this UTC month.")] = None,
    period_end: Annotated[str | None, typer.Option(help="Default: now (usage to date).")] = None,
) -> None:
    """Billable quantities of a period (default: this calendar month, to date)."""
    runtime = runtime_or_exit()
    now = runtime.clock.now()
    start = _when(period_start, "period-start") or calendar_month(now)[0]
    end = _when(period_end, "period-end")
    with runtime.session_factory() as session:
        try:
            org = accounts.get_organization(session, organization)
            if end is None:
                quantities = aggregate.usage_to_date(session, org.id, start, now)
            else:
                quantities = aggregate.billable_quantities(session, org.id, start, end)
        except DomainError as exc:
            fail(exc.detail)
        table = Table("metric", "quantity", "unit", "aggregation")
        for code, metric in m.BILLABLE_METRICS.items():
            table.add_row(code, str(quantities[code]), metric.unit, metric.aggregation.value)
        console.print(f"{org.name}: {start.isoformat()} to {(end or now).isoformat()}")
    console.print(table)


def _read_records(path: Path) -> list[Any]:
    """A JSON list of records, a ``{"records": [...]}`` object, or JSON lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            fail(f"{path} is neither JSON nor JSON lines: {exc}")
    if isinstance(data, dict):
        data = data.get("records", [])
    if not isinstance(data, list):
        fail("expected a list of usage records")
    return data


@app.command("ingest")
def ingest(
    path: Annotated[Path, typer.Argument(help="JSON or JSON-lines file of usage records.")],
    atomic: Annotated[
        bool, typer.Option(help="Refuse the whole file when one record is refused.")
    ] = True,
) -> None:
    """Ingest usage records from a file (each names its organization_id)."""
    raw = _read_records(path)
    records: list[UsageIn] = []
    for i, item in enumerate(raw):
        try:
            records.append(UsageIn.model_validate(item))
        except ValidationError as exc:
            fail(f"record {i}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
    runtime = runtime_or_exit()
    accepted = duplicates = corrected = 0
    refused: list[str] = []
    actor = cli_actor()
    try:
        with transaction(runtime.session_factory) as session:
            for start in range(0, len(records), MAX_BATCH):
                chunk = records[start : start + MAX_BATCH]
                result = ingestion.ingest_by_staff(
                    session,
                    runtime.clock,
                    chunk,
                    atomic=atomic,
                    services=hosting.service_owners,
                    actor=actor,
                )
                accepted += result.accepted
                duplicates += result.duplicates
                corrected += result.corrected
                refused += [f"#{start + r.index} {r.key}: {r.reason}" for r in result.rejected]
    except UsageRejected as exc:
        for r in exc.result.rejected[:20]:
            console.print(f"[red]refused[/] #{r.index} {r.key}: {r.reason}")
        fail(exc.detail)
    except DomainError as exc:
        fail(exc.detail)
    for line in refused[:20]:
        console.print(f"[red]refused[/] {line}")
    console.print(
        f"accepted {accepted}, duplicates {duplicates}, corrections {corrected}, "
        f"refused {len(refused)}"
    )


@app.command("late-policy")
def late_policy(
    policy: Annotated[
        str | None, typer.Argument(help="refuse or next_invoice; omit to show the current one.")
    ] = None,
) -> None:
    """Show or set what happens to usage for an already invoiced period."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            if policy is None:
                current = closing.get_late_usage_policy(session)
            else:
                current = closing.set_late_usage_policy(
                    session, runtime.clock, policy, actor=cli_actor()
                )
    except DomainError as exc:
        fail(exc.detail)
    console.print(f"late usage policy: {current.value}")
