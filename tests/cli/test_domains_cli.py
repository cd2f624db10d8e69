"""``imhost domains``: add, check (against a real DNS server on loopback), list, remove."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from imhost.accounts.models import Organization
from imhost.cli.main import app
from imhost.config import load_settings
from imhost.db.engine import transaction
from imhost.db.migrations import upgrade
from imhost.domains.models import CustomDomain
from imhost.hosting import service as hosting
from imhost.kit.clock import SystemClock
from imhost.runtime import build_runtime
from tests.domains.dns_server import DnsServer

TARGET = "xmpp.provider.example"


def test_add_check_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = DnsServer({})
    env = {
        "IMHOST_DATA_DIR": str(tmp_path / "data"),
        "IMHOST_BASE_DOMAIN": "im.test",
        "IMHOST_DNS__RESOLVERS": f'["{server.address}"]',
        "IMHOST_DNS__TIMEOUT_SECONDS": "1",
        "IMHOST_DNS__LIFETIME_SECONDS": "2",
        "IMHOST_DNS__SRV_TARGET": TARGET,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    runtime = build_runtime(settings)
    clock = SystemClock()
    with transaction(runtime.session_factory) as session:
        org = Organization(name="Acme", slug="acme", created_at=clock.now())
        session.add(org)
        session.flush()
        hosting.create_service(session, clock, org, base_domain="im.test")
    runner = CliRunner()
    try:
        added = runner.invoke(app, ["domains", "add", "acme.im.test", "Chat.Acme.Example"])
        assert added.exit_code == 0, added.output
        assert "chat.acme.example added to acme.im.test" in added.output
        assert f"_xmpp-client._tcp.chat.acme.example. 3600 IN SRV 5 0 5222 {TARGET}." in (
            added.output
        )
        bad = runner.invoke(app, ["domains", "add", "acme.im.test", "no_way!.example"])
        assert bad.exit_code == 1 and "not a valid domain name" in bad.output

        missing = runner.invoke(app, ["domains", "check", "chat.acme.example"])
        assert missing.exit_code == 1 and "failing" in missing.output
        with transaction(runtime.session_factory) as session:
            token = session.query(CustomDomain).one().token
        server.zone.load(
            {
                ("_imhost-verify.chat.acme.example.", "TXT"): [f'"imhost-verify={token}"'],
                ("_xmpp-client._tcp.chat.acme.example.", "SRV"): [f"5 0 5222 {TARGET}."],
                ("_xmpps-client._tcp.chat.acme.example.", "SRV"): [f"5 0 5223 {TARGET}."],
                ("_xmpp-server._tcp.chat.acme.example.", "SRV"): [f"5 0 5269 {TARGET}."],
            }
        )
        ok = runner.invoke(app, ["domains", "check", "chat.acme.example"])
        assert ok.exit_code == 0 and "verified" in ok.output

        listed = runner.invoke(app, ["domains", "list", "--status", "verified"])
        assert listed.exit_code == 0 and "chat.acme.example" in listed.output
        removed = runner.invoke(app, ["domains", "remove", "chat.acme.example", "--yes"])
        assert removed.exit_code == 0
        gone = runner.invoke(app, ["domains", "check", "chat.acme.example"])
        assert gone.exit_code == 1 and "no domain" in gone.output
    finally:
        server.close()
        runtime.engine.dispose()
