"""``imhost xmpp``: services and accounts from the command line (in-process, test database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from imhost.cli import hosting as cli
from imhost.config import load_settings
from imhost.hosting import service as hosting
from imhost.kit.clock import FrozenClock
from imhost.kit.scram import ScramHash, verify_plain
from imhost.runtime import Runtime, build_runtime

from .factories import PASSWORD, make_account, make_service

DOMAIN = "chat.cli.example"


@pytest.fixture
def runtime(
    engine: Engine,
    session_factory: sessionmaker[Session],
    clock: FrozenClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Runtime:
    settings = load_settings(data_dir=tmp_path / "data", secret_key="k" * 40)
    rt = build_runtime(settings, clock=clock, engine=engine)
    monkeypatch.setattr(cli, "runtime_or_exit", lambda: rt)
    with rt.session_factory() as session:
        service = make_service(session, clock, domain=DOMAIN)
        make_account(session, clock, service, "dora")
        session.commit()
    return rt


def _invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, list(args), input=input)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def _password_works(runtime: Runtime, localpart: str, password: str) -> bool:
    with runtime.session_factory() as session:
        service = hosting.get_service_by_domain(session, DOMAIN)
        account = hosting.get_account(session, service, localpart)
        creds = hosting.credentials_of(account, ScramHash.SHA256)
    return verify_plain(password, creds, ScramHash.SHA256)


def test_create_with_a_prompted_password_and_with_a_generated_one(runtime: Runtime) -> None:
    code, out = _invoke("accounts", "create", f"alice@{DOMAIN}", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0, out
    assert PASSWORD not in out  # the prompt does not echo
    assert _password_works(runtime, "alice", PASSWORD)
    code, out = _invoke("accounts", "create", f"bob@{DOMAIN}", "--generate", "--name", "Bob")
    assert code == 0, out
    generated = out.split("password (shown once): ")[1].split()[0]
    assert _password_works(runtime, "bob", generated)


def test_a_refused_change_prints_its_reason_and_exits_1(runtime: Runtime) -> None:
    code, out = _invoke("accounts", "create", f"eve@{DOMAIN}", input="weak\nweak\n")
    assert code == 1 and "at least 12 characters" in out
    code, out = _invoke("accounts", "disable", "nobody@nowhere.example", "--reason", "x")
    assert code == 1 and "no service on nowhere.example" in out
    code, out = _invoke("accounts", "enable", "not-a-jid")
    assert code == 1 and "name@domain" in out


def test_import_prints_a_report_per_row(runtime: Runtime, tmp_path: Path) -> None:
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(f"username,password\nalice,{PASSWORD}\ndora,{PASSWORD}\n")
    code, out = _invoke("accounts", "import", DOMAIN, str(csv_file))
    assert code == 1  # one row was refused
    assert "1 created, 1 refused" in out and "already exists" in out
    assert _password_works(runtime, "alice", PASSWORD)


def test_disable_enable_reset_delete_and_list(runtime: Runtime) -> None:
    assert _invoke("accounts", "disable", f"dora@{DOMAIN}", "--reason", "on leave")[0] == 0
    code, out = _invoke("accounts", "list", DOMAIN)
    assert code == 0 and "on leave" in out
    assert _invoke("accounts", "enable", f"dora@{DOMAIN}")[0] == 0
    code, out = _invoke("accounts", "reset-password", f"dora@{DOMAIN}", "--generate")
    assert code == 0
    assert _password_works(runtime, "dora", out.split("password (shown once): ")[1].split()[0])
    assert _invoke("accounts", "delete", f"dora@{DOMAIN}", "--yes")[0] == 0
    code, out = _invoke("accounts", "list", DOMAIN)
    assert "dora" not in out and "0 of 0 accounts" in out
    code, out = _invoke("services", "list")
    assert code == 0 and DOMAIN in out
