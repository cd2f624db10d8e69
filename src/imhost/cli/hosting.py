"""``imhost xmpp``: hosted services and their XMPP accounts from the command line.

Accounts are named by JID (``alice@chat.example.com``). Passwords are prompted without echo
(or generated with ``--generate`` and shown once); they are never stored, only SCRAM keys.
A running server learns each change at once when it runs in this process, or within its
directory refresh interval when it runs in another one (docs/xmpp.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Column, Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.hosting import service as hosting
from imhost.hosting.models import HostedService, XmppAccount
from imhost.kit.errors import DomainError
from imhost.runtime import Runtime

app = typer.Typer(help="Hosted XMPP services and their accounts.", no_args_is_help=True)
services_app = typer.Typer(help="Hosted services (virtual hosts).", no_args_is_help=True)
accounts_app = typer.Typer(help="XMPP accounts of a service.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(accounts_app, name="accounts")

T = TypeVar("T")


@contextmanager
def _unit_of_work(runtime: Runtime) -> Iterator[Session]:
    """One transaction; a refused change prints its reason and exits 1."""
    try:
        with transaction(runtime.session_factory) as session:
            yield session
    except DomainError as exc:
        fail(exc.detail)


def _split_jid(jid: str) -> tuple[str, str]:
    localpart, at, domain = jid.strip().partition("@")
    if not at or not localpart or not domain or "/" in domain:
        fail(f"{jid!r} is not an account JID; write it as name@domain")
    return localpart, domain


def _account(session: Session, jid: str) -> tuple[HostedService, XmppAccount]:
    localpart, domain = _split_jid(jid)
    service = hosting.get_service_by_domain(session, domain)
    return service, hosting.get_account(session, service, localpart)


def _new_password(generate: bool) -> str | None:
    if generate:
        return None
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _run(work: Callable[[Runtime, Session], T]) -> T:
    runtime = runtime_or_exit()
    with _unit_of_work(runtime) as session:
        return work(runtime, session)


# --- services ----------------------------------------------------------------------------------


@services_app.command("list")
def list_services(
    org: Annotated[
        str | None, typer.Option("--org", help="Only this organization (id or slug).")
    ] = None,
) -> None:
    """Every hosted service with its status, limits and number of accounts."""

    def work(runtime: Runtime, session: Session) -> None:
        org_id = None
        if org is not None:
            found = session.get(Organization, org) or session.scalar(
                select(Organization).where(Organization.slug == org)
            )
            if found is None:
                fail(f"no organization {org!r}")
            org_id = found.id
        rows, total = hosting.list_services(session, organization_id=org_id, limit=1000)
        table = Table(
            Column("domain", no_wrap=True),
            "status",
            "accounts",
            "max accounts",
            "max connections",
            "reason",
        )
        for s in rows:
            table.add_row(
                s.domain,
                s.status if not s.budget_block_reason else "budget-blocked",
                str(hosting.count_accounts(session, s.id)),
                "unlimited" if s.max_accounts is None else str(s.max_accounts),
                "unlimited" if s.max_connections is None else str(s.max_connections),
                s.status_reason or s.budget_block_reason or "",
            )
        console.print(table)
        if total > len(rows):
            console.print(f"({len(rows)} of {total} shown)")

    _run(work)


# --- accounts ----------------------------------------------------------------------------------


@accounts_app.command("list")
def list_accounts(
    domain: Annotated[str, typer.Argument(help="The service's domain.")],
    search: Annotated[str | None, typer.Option(help="Only usernames containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """The accounts of a service."""

    def work(runtime: Runtime, session: Session) -> None:
        service = hosting.get_service_by_domain(session, domain)
        rows, total = hosting.list_accounts(
            session, service, limit=limit, offset=offset, search=search
        )
        table = Table(Column("jid", no_wrap=True), "name", "disabled", "last login", "client")
        for a in rows:
            table.add_row(
                f"{a.localpart}@{service.domain}",
                a.name,
                f"yes: {a.disabled_reason}" if a.disabled else "no",
                a.last_login_at.strftime("%Y-%m-%d %H:%M") if a.last_login_at else "never",
                a.client_version or "",
            )
        console.print(table)
        console.print(f"{len(rows)} of {total} accounts")

    _run(work)


@accounts_app.command("create")
def create_account(
    jid: Annotated[str, typer.Argument(help="name@domain of the new account.")],
    name: Annotated[str, typer.Option(help="The person's display name.")] = "",
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a strong password and show it once.")
    ] = False,
) -> None:
    """Create an account (the password is prompted, or generated)."""
    localpart, domain = _split_jid(jid)
    password = _new_password(generate)

    def work(runtime: Runtime, session: Session) -> str | None:
        service = hosting.get_service_by_domain(session, domain)
        _, generated = hosting.create_account(
            session,
            runtime.clock,
            service,
            username=localpart,
            password=password,
            name=name,
            security=runtime.settings.security,
            actor=cli_actor(),
        )
        return generated

    generated = _run(work)
    console.print(f"created {jid}")
    if generated:
        console.print(f"password (shown once): {generated}", highlight=False, soft_wrap=True)


@accounts_app.command("import")
def import_accounts(
    domain: Annotated[str, typer.Argument(help="The service's domain.")],
    csv_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file.")
    ],
) -> None:
    """Create accounts from a CSV file (username,password[,name]); prints a report per row."""
    if csv_file.stat().st_size > hosting.CSV_MAX_BYTES:
        fail(f"{csv_file} is larger than {hosting.CSV_MAX_BYTES // (1024 * 1024)} MiB; split it")
    try:
        text = csv_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(f"{csv_file} is not UTF-8 text")

    def work(runtime: Runtime, session: Session) -> hosting.ImportReport:
        service = hosting.get_service_by_domain(session, domain)
        return hosting.import_accounts_csv(
            session,
            runtime.clock,
            service,
            text,
            security=runtime.settings.security,
            actor=cli_actor(),
        )

    report = _run(work)
    table = Table("line", "username", "result", "reason")
    for row in report.rows:
        result = "[green]created[/]" if row.status == "created" else "[red]refused[/]"
        table.add_row(str(row.line), row.username, result, row.reason)
    console.print(table)
    console.print(f"{report.created} created, {report.refused} refused")
    if report.refused:
        raise typer.Exit(1)


@accounts_app.command("disable")
def disable_account(
    jid: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Shown to the person when their login fails.")],
) -> None:
    """Disable an account: its sessions close and logins are refused with the reason."""

    def work(runtime: Runtime, session: Session) -> None:
        service, account = _account(session, jid)
        hosting.disable_account(session, runtime.clock, service, account, reason, actor=cli_actor())

    _run(work)
    console.print(f"disabled {jid}")


@accounts_app.command("enable")
def enable_account(jid: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled account."""

    def work(runtime: Runtime, session: Session) -> None:
        service, account = _account(session, jid)
        hosting.enable_account(session, runtime.clock, service, account, actor=cli_actor())

    _run(work)
    console.print(f"enabled {jid}")


@accounts_app.command("delete")
def delete_account(
    jid: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account with its roster, offline messages and stored data."""
    if not yes:
        typer.confirm(f"Delete {jid} and everything stored for it?", abort=True)

    def work(runtime: Runtime, session: Session) -> None:
        service, account = _account(session, jid)
        hosting.delete_account(session, runtime.clock, service, account, actor=cli_actor())

    _run(work)
    console.print(f"deleted {jid}")


@accounts_app.command("reset-password")
def reset_password(
    jid: Annotated[str, typer.Argument()],
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate a strong password and show it once.")
    ] = False,
) -> None:
    """Set a new password (prompted, or generated); open sessions are closed."""
    password = _new_password(generate)

    def work(runtime: Runtime, session: Session) -> str | None:
        service, account = _account(session, jid)
        return hosting.reset_password(
            session,
            runtime.clock,
            service,
            account,
            password=password,
            security=runtime.settings.security,
            actor=cli_actor(),
        )

    generated = _run(work)
    console.print(f"password of {jid} changed")
    if generated:
        console.print(f"password (shown once): {generated}", highlight=False, soft_wrap=True)


__all__ = ["app"]
