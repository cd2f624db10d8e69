"""``imhost domains``: custom domains of hosted services and their DNS verification.

``add`` prints the records to put in the domain's zone; ``check`` asks DNS now (against
``IMHOST_DNS__RESOLVERS``) and prints each record's state; the worker re-checks unverified
domains on its own (docs/domains.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.table import Column, Table
from sqlalchemy.orm import Session

from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.domains import service as domains
from imhost.domains.checks import RecordCheck
from imhost.domains.models import CustomDomain
from imhost.domains.names import display_name
from imhost.hosting import service as hosting
from imhost.kit.errors import DomainError
from imhost.runtime import Runtime

app = typer.Typer(help="Custom domains of hosted services.", no_args_is_help=True)

T = TypeVar("T")


@contextmanager
def _unit_of_work(runtime: Runtime) -> Iterator[Session]:
    try:
        with transaction(runtime.session_factory, write=True) as session:
            yield session
    except DomainError as exc:
        fail(exc.detail)


def _run(work: Callable[[Runtime, Session], T]) -> T:
    runtime = runtime_or_exit()
    with _unit_of_work(runtime) as session:
        return work(runtime, session)


def _print_records(domain: CustomDomain, records: Sequence[RecordCheck]) -> None:
    checked = bool(domain.checks)
    table = Table(
        "type", Column("name", overflow="fold"), Column("value", overflow="fold"), "state", "note"
    )
    for r in records:
        table.add_row(
            r.kind,
            r.name + ".",
            r.expected,
            r.state.value if checked else "not checked",
            r.message if r.state != "ok" else "",
        )
    console.print(table)
    console.print("Zone-file lines:")
    for r in records:
        console.print(r.zone_line, markup=False, highlight=False, soft_wrap=True)


@app.command("add")
def add(
    service_domain: Annotated[str, typer.Argument(help="The hosted service's current domain.")],
    name: Annotated[str, typer.Argument(help="The custom domain, e.g. chat.example.com.")],
    self_hosted: Annotated[
        bool, typer.Option("--self-hosted", help="The domain itself points at us (A/AAAA).")
    ] = False,
) -> None:
    """Add a custom domain to a service and print the DNS records it needs."""

    def work(runtime: Runtime, session: Session) -> None:
        service = hosting.get_service_by_domain(session, service_domain)
        domain = domains.add_domain(
            session,
            runtime.clock,
            runtime.settings,
            organization_id=service.organization_id,
            service_id=service.id,
            name=name,
            self_hosted=self_hosted,
            actor=cli_actor(),
        )
        console.print(f"{display_name(domain.name)} added to {service.domain}.")
        _print_records(domain, domains.expected_records(runtime.settings, domain))

    _run(work)


@app.command("check")
def check(name: Annotated[str, typer.Argument(help="The custom domain.")]) -> None:
    """Ask DNS now and print each record's state; exits 1 unless verified."""

    runtime = runtime_or_exit()
    with _unit_of_work(runtime) as session:
        found = domains.find_domain(session, name)
        ascii_name, token, self_hosted = found.name, found.token, found.self_hosted
    # DNS is asked outside the transaction: a lookup may wait for its timeout.
    results = domains.run_check(runtime.settings, ascii_name, token, self_hosted)
    with _unit_of_work(runtime) as session:
        domain = domains.find_domain(session, ascii_name)
        if domain.token != token:
            fail(f"{display_name(ascii_name)} was removed and added again meanwhile; check again.")
        domains.record_check(
            session, runtime.clock, runtime.settings, domain, results, actor=cli_actor()
        )
        console.print(f"{display_name(domain.name)}: {domain.status}")
        _print_records(domain, results)
        verified = domain.status == "verified"
    if not verified:
        raise typer.Exit(1)


@app.command("list")
def list_domains(
    status: Annotated[
        str | None, typer.Option(help="Only this status: pending, failing, verified.")
    ] = None,
    search: Annotated[str | None, typer.Option(help="Only names containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
) -> None:
    """Every custom domain with its status and last check."""

    def work(runtime: Runtime, session: Session) -> None:
        rows, total = domains.list_domains(session, status=status, search=search, limit=limit)
        table = Table(Column("domain", no_wrap=True), "status", "service", "last checked")
        for d in rows:
            service = hosting.get_service(session, d.service_id)
            table.add_row(
                display_name(d.name),
                d.status,
                service.domain,
                f"{d.last_checked_at:%Y-%m-%d %H:%M}" if d.last_checked_at else "never",
            )
        console.print(table)
        if total > len(rows):
            console.print(f"({len(rows)} of {total} shown)")

    _run(work)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The custom domain.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a custom domain: no more checks, and the name is free again."""
    if not yes:
        typer.confirm(f"Remove {name}?", abort=True)

    def work(runtime: Runtime, session: Session) -> None:
        domain = domains.find_domain(session, name)
        domains.remove_domain(session, runtime.clock, domain, actor=cli_actor())
        console.print(f"{display_name(domain.name)} removed.")

    _run(work)
