"""``imhost help``: load the shipped articles, list, export, edit a file, import it back."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import _env, _run


def test_help_commands_round_trip_a_folder(tmp_path: Path) -> None:
    env = _env(tmp_path, COLUMNS="250")  # Rich tables at full width
    loaded = _run(["help", "load-shipped"], env)
    assert loaded.returncode == 0, loaded.stderr
    assert "connect-a-client" in loaded.stdout
    again = _run(["help", "load-shipped"], env)
    assert "created" in again.stdout and "connect-a-client" in again.stdout  # as unchanged
    listed = _run(["help", "list"], env)
    assert listed.returncode == 0 and "firewalls-and-ports" in listed.stdout
    out = tmp_path / "out"
    exported = _run(["help", "export", str(out)], env)
    assert exported.returncode == 0, exported.stderr
    page = out / "firewalls-and-ports.md"
    page.write_text(page.read_text() + "\nOur VPN needs port 8443 too.\n")
    imported = _run(["help", "import", str(out)], env)
    assert imported.returncode == 0, imported.stderr
    found = _run(["help", "search", "8443"], env)
    assert "firewalls-and-ports" in found.stdout
    missing = _run(["help", "import", str(tmp_path / "nowhere")], env)
    assert missing.returncode == 1 and "not a folder" in missing.stderr
