"""The XMPP benchmark's seed for ``imhost serve`` (``bench/xmpp/seed_imhost.py``), at smoke
size: the service it makes must be the bench domain, without the per-account message rate
(the benchmark would measure the shaper otherwise), with accounts that the bench password
opens. SQLite only: the benchmark copies the SQLite file for every fresh process."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path

import pytest

from imhost.kit.scram import ScramCredentials, ScramHash, verify_plain

SEED = Path(__file__).resolve().parents[2] / "bench" / "xmpp" / "seed_imhost.py"
PASSWORD = "bench-Zebra-lorry-2931"


def test_the_seed_makes_the_bench_service_without_a_message_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("bench_xmpp_seed", SEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the process pool pickles its function by module
    spec.loader.exec_module(module)
    data = tmp_path / "data"
    monkeypatch.setenv("IMHOST_DATA_DIR", str(data))
    monkeypatch.delenv("IMHOST_DATABASE_URL", raising=False)
    module.seed("bench.local", 7, PASSWORD, "u")
    assert "seeded 7 accounts on bench.local" in capsys.readouterr().out
    with sqlite3.connect(data / "imhost.db") as db:
        services = db.execute(
            "SELECT domain, status, message_rate, max_accounts, max_connections_per_account "
            "FROM hosted_services"
        ).fetchall()
        accounts = db.execute(
            "SELECT localpart, sha1_salt, sha1_iterations, sha1_stored_key, sha1_server_key "
            "FROM xmpp_accounts ORDER BY localpart"
        ).fetchall()
        admins = db.execute("SELECT count(*) FROM users WHERE staff_role = 'admin'").fetchone()
    assert services == [("bench.local", "active", None, None, None)]
    assert [a[0] for a in accounts] == [f"u{i}" for i in range(7)]
    assert admins == (1,)
    _name, salt, iterations, stored, server = accounts[3]
    creds = ScramCredentials(bytes(salt), iterations, bytes(stored), bytes(server))
    assert verify_plain(PASSWORD, creds, ScramHash.SHA1)
    assert not verify_plain(PASSWORD + "x", creds, ScramHash.SHA1)
