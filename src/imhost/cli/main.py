"""``imhost``: serve, manage the database, staff and the business from the command line."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from imhost import __version__
from imhost.accounts import service as accounts
from imhost.accounts.auth import password_policy_for, validate_new_password
from imhost.accounts.models import StaffRole, User
from imhost.cli import billing as billing_cli
from imhost.cli import catalog as catalog_cli
from imhost.cli import domains as domains_cli
from imhost.cli import help_center as help_cli
from imhost.cli import hosting as hosting_cli
from imhost.cli import tickets as tickets_cli
from imhost.cli import usage as usage_cli
from imhost.cli.context import cli_actor, console, fail, runtime_or_exit, settings_or_exit
from imhost.db.engine import transaction
from imhost.kit.errors import DomainError

app = typer.Typer(
    name="imhost",
    help="Run an instant-messaging hosting business: XMPP service, billing, accounts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema and migrations.", no_args_is_help=True)
admin_app = typer.Typer(help="The provider's staff accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

# Sub-commands of the domain packages.
app.add_typer(catalog_cli.app, name="plans")
app.add_typer(usage_cli.app, name="usage")
app.add_typer(billing_cli.app, name="billing")
app.add_typer(hosting_cli.app, name="xmpp")
app.add_typer(help_cli.app, name="help")
app.add_typer(domains_cli.app, name="domains")
app.add_typer(tickets_cli.app, name="tickets")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"imhost {__version__}")


@app.command()
def serve(
    demo: Annotated[
        bool, typer.Option(help="Create demo data on first start and print the logins.")
    ] = False,
    host: Annotated[str | None, typer.Option(help="HTTP bind address (IMHOST_HTTP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (IMHOST_HTTP_PORT).")] = None,
    role: Annotated[
        str | None, typer.Option(help="all | web | xmpp | worker (IMHOST_ROLE).")
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Apply database migrations at start.")] = True,
) -> None:
    """Run imhost: the web app, the XMPP listeners and the worker, in one process."""
    from imhost.cli.serve import run_server

    overrides: dict[str, object] = {}
    if host:
        overrides["http_host"] = host
    if port is not None:
        overrides["http_port"] = port
    if role:
        overrides["role"] = role
    settings = settings_or_exit(**overrides)
    run_server(settings, demo=demo, migrate=migrate)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    settings = settings_or_exit()
    from imhost.db.migrations import upgrade

    upgrade(settings.resolved_database_url)
    console.print("[green]database is at the newest migration[/]")


@db_app.command("status")
def db_status() -> None:
    """Show the database's migration against the newest one."""
    settings = settings_or_exit()
    from imhost.db.engine import make_engine
    from imhost.db.migrations import migration_status

    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        status = migration_status(conn)
    console.print(f"database: {status.database or 'empty'}; newest: {status.head}")
    if not status.current:
        raise typer.Exit(1)


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("-m", "--message")]) -> None:
    """Write a new migration from the difference between the models and the database."""
    settings = settings_or_exit()
    from imhost.db.migrations import revision

    revision(settings.resolved_database_url, message)


@admin_app.command("create")
def admin_create(
    email: Annotated[
        str, typer.Option(prompt=True, help="The staff member's e-mail (sign-in name).")
    ],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    role: Annotated[StaffRole, typer.Option(help="Staff role.")] = StaffRole.ADMIN,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="IMHOST_ADMIN_PASSWORD",
            help="Asked for when not given; checked against the password policy.",
        ),
    ] = "",
) -> None:
    """Create a staff account (the first one must be an admin)."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory) as session:
            policy = password_policy_for(session, runtime.settings.security, None)
            validate_new_password(password, policy, user_inputs=[email, name])
            user = accounts.create_user(
                session,
                runtime.clock,
                email=email,
                name=name,
                staff_role=role,
                email_verified=True,
                actor=cli_actor(),
            )
            runtime.auth.set_password_directly(session, user, password)
    except DomainError as exc:
        fail(exc.detail)
    console.print(
        f"[green]created {role.value} {user.email}[/]. Staff must set up two-factor "
        "authentication at first sign-in."
    )


@admin_app.command("list")
def admin_list() -> None:
    """List staff accounts."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        table = Table("e-mail", "name", "role", "last sign-in")
        for user in accounts.list_staff(session):
            table.add_row(
                user.email, user.name, user.staff_role or "", str(user.last_login_at or "never")
            )
    console.print(table)


def staff_admin_count(runtime_factory: object) -> int:
    from sqlalchemy.orm import Session, sessionmaker

    assert isinstance(runtime_factory, sessionmaker)
    with runtime_factory() as session:
        assert isinstance(session, Session)
        return (
            session.scalar(
                select(func.count()).select_from(User).where(User.staff_role == StaffRole.ADMIN)
            )
            or 0
        )


if __name__ == "__main__":
    app()
