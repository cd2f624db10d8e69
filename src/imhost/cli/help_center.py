"""``imhost help``: the help center's articles from the command line (list, search, import
and export a folder of Markdown files, load the shipped articles, rebuild the search index)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from imhost.cli.context import cli_actor, console, fail, runtime_or_exit
from imhost.db.engine import transaction
from imhost.kit.errors import DomainError
from imhost.support import search, service, shipped

app = typer.Typer(
    help="The help center: articles as Markdown, search, the shipped articles.",
    no_args_is_help=True,
)


def _report(title: str, report: shipped.LoadReport) -> None:
    table = Table("result", "articles", title=title)
    for label, slugs in (
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("kept (edited by staff)", report.kept),
    ):
        table.add_row(label, ", ".join(slugs) if slugs else "-")
    console.print(table)


@app.command("list")
def list_articles() -> None:
    """Every article, drafts and internal ones too, with views and votes."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        rows = service.list_articles(
            session, include_drafts=True, include_internal=True, limit=100_000
        )
        counts = service.article_counts(session, rows)
        categories = {c.id: c.slug for c in service.list_categories(session)}
        table = Table(
            "slug", "category", "status", "visible to", "updated", "views", "helpful", "not"
        )
        for a in rows:
            c = counts[a.id]
            table.add_row(
                a.slug,
                categories.get(a.category_id, "-"),
                a.status,
                "everyone" if a.visibility == "public" else "staff",
                a.updated_at.strftime("%Y-%m-%d"),
                str(c.views),
                str(c.helpful_yes),
                str(c.helpful_no),
            )
        console.print(table)


@app.command("search")
def search_articles(
    query: Annotated[str, typer.Argument(help="Words to look for.")],
    internal: Annotated[bool, typer.Option(help="Include drafts and internal articles.")] = False,
) -> None:
    """Search the articles as the help center does."""
    runtime = runtime_or_exit()
    with runtime.session_factory() as session:
        results = search.search(
            session, query, limit=20, include_drafts=internal, include_internal=internal
        )
    table = Table("slug", "title", title=f"{results.total} matching")
    for hit in results.hits:
        table.add_row(hit.slug, hit.title)
    console.print(table)


@app.command("import")
def import_folder(
    folder: Annotated[
        Path, typer.Argument(help="A folder of <slug>.md files (and categories.toml).")
    ],
) -> None:
    """Create or update the articles of a folder (what the files say wins)."""
    runtime = runtime_or_exit()
    try:
        with transaction(runtime.session_factory, write=True) as session:
            report = shipped.import_directory(session, runtime.clock, folder, actor=cli_actor())
    except DomainError as exc:
        fail(exc.detail)
    _report(f"Imported from {folder}", report)


@app.command("export")
def export_folder(
    folder: Annotated[Path, typer.Argument(help="Where to write the Markdown files.")],
) -> None:
    """Write every category and article to a folder (the format `import` reads)."""
    runtime = runtime_or_exit()
    try:
        with runtime.session_factory() as session:
            written = shipped.export_directory(session, folder)
    except OSError as exc:
        fail(f"cannot write to {folder}: {exc}")
    console.print(f"{written} articles written to {folder}")


@app.command("load-shipped")
def load_shipped() -> None:
    """Load the articles that ship with imhost (also done at every start; never overwrites
    an article staff edited)."""
    runtime = runtime_or_exit()
    with transaction(runtime.session_factory, write=True) as session:
        report = shipped.load_shipped(session, runtime.clock)
    _report("Shipped articles", report)


@app.command("reindex")
def reindex() -> None:
    """Rebuild the full-text index (SQLite; PostgreSQL keeps its own index)."""
    runtime = runtime_or_exit()
    with transaction(runtime.session_factory, write=True) as session:
        count = search.rebuild_index(session)
    console.print(f"{count} articles indexed")
