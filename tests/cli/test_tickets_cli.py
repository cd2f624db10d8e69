"""``imhost tickets``: list the queue, show a thread, reply as staff, close."""

from __future__ import annotations

from pathlib import Path

from imhost.accounts.models import StaffRole
from imhost.config import load_settings
from imhost.db.engine import transaction
from imhost.runtime import build_runtime
from imhost.support import tickets
from imhost.support.tickets import Author
from tests.cli.test_cli import _env, _run
from tests.factories import make_user


def test_tickets_commands(tmp_path: Path) -> None:
    env = _env(tmp_path, COLUMNS="250")
    assert _run(["db", "upgrade"], env).returncode == 0
    runtime = build_runtime(load_settings(data_dir=tmp_path / "data"))
    with transaction(runtime.session_factory) as s:
        make_user(s, runtime.clock, "agent@provider.example", staff_role=StaffRole.SUPPORT)
        ticket = tickets.open_ticket(
            s,
            runtime.clock,
            subject="Cannot log in",
            body="Help please",
            requester=Author.guest("Gina", "gina@guest.example"),
        )
        public_id = ticket.public_id
    runtime.engine.dispose()
    listed = _run(["tickets", "list"], env)
    assert listed.returncode == 0 and public_id in listed.stdout, listed.stderr
    replied = _run(
        ["tickets", "reply", public_id.lower(), "Try again.", "--as", "agent@provider.example"],
        env,
    )
    assert replied.returncode == 0, replied.stderr
    refused = _run(["tickets", "reply", public_id, "x", "--as", "gina@guest.example"], env)
    assert refused.returncode == 1 and "staff member" in refused.stderr
    shown = _run(["tickets", "show", public_id], env)
    assert "Try again." in shown.stdout and "waiting on customer" in shown.stdout
    assert _run(["tickets", "close", public_id], env).returncode == 0
    assert "status closed" in _run(["tickets", "show", public_id], env).stdout
    assert _run(["tickets", "show", "IMH-0000-0000"], env).returncode == 1
