"""``imhost billing sepa``: announce debits, export a pain.008 file, download it again,
import a camt.053 bank statement."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imhost.billing.sepa import collections, exports, imports
from imhost.billing.sepa.models import EntryOutcome, SepaBatch
from imhost.billing.sepa.settings import creditor
from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.kit.errors import DomainError
from imhost.kit.money import format_money
from imhost.runtime import Runtime

app = typer.Typer(
    help="SEPA direct debit: announce debits, export pain.008, import camt.053.",
    no_args_is_help=True,
)


def parse_until(value: str | None, today: date, lead_days: int) -> date:
    """``YYYY-MM-DD``; by default the debits announced so far (today + the lead time)."""
    if value is None:
        return today + timedelta(days=lead_days)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--until {value!r}: use YYYY-MM-DD") from None


def export_file(runtime: Runtime, until: date, out_dir: Path, out: Console) -> Path | None:
    """Export the debits due up to ``until`` into ``out_dir``; the file's path, or None."""
    with transaction(runtime.session_factory) as session:
        batch = exports.export_batch(
            session, runtime.clock, up_to=until, exported_by=cli_actor().label, actor=cli_actor()
        )
        if batch is None:
            out.print(f"No debit is waiting for export up to {until}.")
            return None
        return _write(batch, out_dir, out)


def _write(batch: SepaBatch, out_dir: Path, out: Console) -> Path:
    path = out_dir / exports.batch_file_name(batch)
    path.write_bytes(batch.xml)
    out.print(
        f"{batch.count} debit{'s' if batch.count != 1 else ''}, "
        f"{format_money(batch.control_sum, batch.currency)}: {path}"
    )
    return path


def import_file(runtime: Runtime, path: Path, out: Console) -> imports.ImportResult:
    data = path.read_bytes()
    with transaction(runtime.session_factory) as session:
        result = imports.import_statement(
            session,
            runtime.clock,
            data,
            file_name=path.name,
            imported_by=cli_actor().label,
            actor=cli_actor(),
        )
        if result.already_imported:
            out.print("This statement was imported before; nothing changed.")
            return result
        table = Table("result", "entries", title=f"Statement {result.statement.statement_ids}")
        for outcome in EntryOutcome:
            count = result.count(outcome)
            if count:
                table.add_row(outcome.value.replace("_", " "), str(count))
        if result.seen_before:
            table.add_row("imported before", str(result.seen_before))
        if result.not_booked:
            table.add_row("not booked yet", str(result.not_booked))
        out.print(table)
        for entry in result.entries:
            if entry.outcome == EntryOutcome.UNMATCHED.value:
                out.print(
                    f"to assign: {format_money(entry.amount, entry.currency)} "
                    f"{entry.remittance or entry.end_to_end_id or ''} ({entry.note})"
                )
        return result


@app.command("queue")
def queue() -> None:
    """Announce a debit for every open invoice of a customer with a mandate (safe to repeat)."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            queued = collections.queue_due_collections(session, runtime.clock, actor=cli_actor())
            console.print(f"{len(queued)} debit{'s' if len(queued) != 1 else ''} announced.")
    except DomainError as exc:
        fail(exc.detail, 2)


@app.command("export")
def export(
    until: Annotated[
        str | None,
        typer.Option("--until", help="Export debits due up to this date (YYYY-MM-DD)."),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where to write the pain.008 file.")
    ] = Path("."),
) -> None:
    """Export the waiting debits as a pain.008.001.02 file for the bank."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        lead = creditor(session).pre_notification_days
    try:
        day = parse_until(until, runtime.clock.now().date(), lead)
    except ValueError as exc:
        fail(str(exc), 2)
    if not out_dir.is_dir():
        fail(f"{out_dir} is not a folder", 2)
    try:
        export_file(runtime, day, out_dir, console)
    except DomainError as exc:
        fail(exc.detail, 2)


@app.command("download")
def download(
    batch_id: Annotated[str, typer.Argument(help="The export's id (see the console).")],
    out_dir: Annotated[Path, typer.Option("--out-dir")] = Path("."),
) -> None:
    """Write an earlier export's file again, byte for byte."""
    runtime = runtime_or_exit()
    try:
        with runtime.session_factory() as session:
            _write(exports.get_batch(session, batch_id), out_dir, console)
    except DomainError as exc:
        fail(exc.detail, 2)


@app.command("import")
def import_statement(
    path: Annotated[Path, typer.Argument(help="A camt.053 bank statement (XML).")],
) -> None:
    """Import a bank statement: record payments, returns and what is left to assign."""
    if not path.is_file():
        fail(f"{path} is not a file", 2)
    runtime = runtime_or_exit()
    try:
        import_file(runtime, path, console)
    except DomainError as exc:
        fail(exc.detail, 2)
