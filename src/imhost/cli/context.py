"""What every CLI command needs: settings, a runtime, a clean error for a bad config."""

from __future__ import annotations

import getpass
import sys
from typing import NoReturn

from rich.console import Console

from imhost.accounts.audit import Actor
from imhost.config import ConfigError, Settings, load_settings
from imhost.runtime import Runtime, build_runtime

console = Console()
err_console = Console(stderr=True)


def cli_actor() -> Actor:
    """Who acts from the command line, for the audit log: the operating-system user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(label=f"cli ({user})")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    sys.exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc), 2)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the data directory {settings.data_dir} (IMHOST_DATA_DIR): {exc}", 2)
    return settings


def runtime_or_exit(settings: Settings | None = None, *, migrate: bool = True) -> Runtime:
    """A runtime on an up-to-date database (migrations applied unless ``migrate`` is off)."""
    settings = settings or settings_or_exit()
    runtime = build_runtime(settings)
    if migrate:
        from imhost.db.migrations import upgrade

        upgrade(settings.resolved_database_url)
    return runtime
