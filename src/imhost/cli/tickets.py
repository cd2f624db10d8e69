"""``imhost tickets``: support tickets from the command line (list, show, reply, close)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.kit.errors import DomainError
from imhost.support import tickets
from imhost.support.tickets import Author

app = typer.Typer(
    help="Support tickets: the queue, a ticket's thread, replies.", no_args_is_help=True
)


@app.command("list")
def list_tickets(
    view: Annotated[str, typer.Option(help="open, unassigned, breaching or all.")] = "open",
    department: Annotated[
        str | None, typer.Option(help="technical, billing, domains, abuse.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
) -> None:
    """The newest-changed tickets of a queue view."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        try:
            page = tickets.queue(
                session, runtime.clock, view=view, department=department, limit=limit
            )
        except DomainError as exc:
            fail(exc.detail)
        table = Table("ticket", "subject", "requester", "department", "priority", "status", "due")
        for t in page.tickets:
            table.add_row(
                t.public_id,
                t.subject,
                t.requester_email,
                t.department,
                t.priority,
                t.status.replace("_", " "),
                t.due_at.strftime("%Y-%m-%d %H:%M") if t.due_at else "-",
            )
        console.print(table)


@app.command("show")
def show(public_id: Annotated[str, typer.Argument(help="The ticket, e.g. IMH-7K3Q-2D9F.")]) -> None:
    """A ticket's facts, its thread (internal notes marked) and its history."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        ticket = tickets.find_ticket_by_public_id(session, public_id)
        if ticket is None:
            fail("There is no such ticket.")
        console.print(f"[bold]{ticket.public_id}[/] {ticket.subject}", markup=True, highlight=False)
        console.print(
            f"status {ticket.status.replace('_', ' ')} · {ticket.department} · "
            f"{ticket.priority} priority · from {ticket.requester_name} <{ticket.requester_email}>",
            markup=False,
            highlight=False,
        )
        for m in tickets.messages(session, ticket, include_notes=True):
            label = " (internal note)" if m.kind == "note" else ""
            console.print(
                f"\n--- {m.author_name or m.author_email}{label}, "
                f"{m.created_at:%Y-%m-%d %H:%M} via {m.via}\n{m.body}",
                markup=False,
                highlight=False,
            )
        console.print("\nHistory:", markup=False)
        for c in tickets.history(session, ticket):
            console.print(
                f"  {c.at:%Y-%m-%d %H:%M} {c.actor_label}: {c.field} "
                f"{c.old_value or '-'} -> {c.new_value or '-'}",
                markup=False,
                highlight=False,
            )


@app.command("reply")
def reply(
    public_id: Annotated[str, typer.Argument(help="The ticket.")],
    message: Annotated[str, typer.Argument(help="The reply (the customer sees it).")],
    as_email: Annotated[str, typer.Option("--as", help="The staff member's e-mail address.")],
    note: Annotated[bool, typer.Option(help="An internal note instead.")] = False,
) -> None:
    """Reply to a ticket (or add an internal note) as a staff member."""
    from sqlalchemy import select

    from imhost.accounts.models import User

    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            ticket = tickets.find_ticket_by_public_id(session, public_id)
            if ticket is None:
                fail("There is no such ticket.")
            user = session.scalar(select(User).where(User.email == as_email.strip().lower()))
            if user is None or user.staff_role is None:
                fail("--as must be the e-mail address of a staff member.")
            tickets.add_reply(
                session,
                runtime.clock,
                ticket,
                Author.of_user(user),
                message,
                via="staff",
                internal=note,
            )
    except DomainError as exc:
        fail(exc.detail)
    runtime.deliver_notifications()
    console.print("Note added." if note else "Reply sent.")


@app.command("close")
def close(public_id: Annotated[str, typer.Argument(help="The ticket.")]) -> None:
    """Close a ticket."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            ticket = tickets.find_ticket_by_public_id(session, public_id)
            if ticket is None:
                fail("There is no such ticket.")
            tickets.close(session, runtime.clock, ticket, actor=cli_actor())
    except DomainError as exc:
        fail(exc.detail)
    console.print(f"{public_id.upper()} is closed.")
