"""The `imhost` command as a newcomer runs it: real processes, a temporary data dir."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

IMHOST = [sys.executable, "-m", "imhost.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMHOST_")}
    env.update(
        IMHOST_DATA_DIR=str(tmp_path / "data"),
        IMHOST_HTTP_PORT=str(_free_port()),
        IMHOST_XMPP__C2S_PORT=str(_free_port()),
        IMHOST_XMPP__C2S_DIRECT_TLS_PORT=str(_free_port()),
    )
    env.update(extra)
    return env


def _run(
    args: list[str], env: dict[str, str], input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        IMHOST + args,
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_bad_setting_stops_the_start_with_its_name(tmp_path: Path) -> None:
    r = _run(["db", "upgrade"], _env(tmp_path, IMHOST_HTTP_PORT="not-a-port"))
    assert r.returncode == 2
    assert "IMHOST_HTTP_PORT" in r.stderr


def test_admin_create_refuses_a_weak_password_and_accepts_a_strong_one(tmp_path: Path) -> None:
    env = _env(tmp_path)
    weak = _run(
        ["admin", "create", "--email", "ada@provider.example.com", "--password", "password1"], env
    )
    assert weak.returncode == 1
    assert "password" in weak.stderr.lower()
    ok = _run(
        [
            "admin",
            "create",
            "--email",
            "ada@provider.example.com",
            "--password",
            "amber kettle orbit violin 73",
        ],
        env,
    )
    assert ok.returncode == 0, ok.stderr
    listed = _run(["admin", "list"], env)
    assert "ada@provider.example.com" in listed.stdout and "admin" in listed.stdout
    again = _run(
        [
            "admin",
            "create",
            "--email",
            "ada@provider.example.com",
            "--password",
            "amber kettle orbit violin 73",
        ],
        env,
    )
    assert again.returncode == 1 and "exists" in again.stderr


def test_admin_create_prompts_for_the_password(tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = _run(
        ["admin", "create", "--email", "bo@provider.example.com"],
        env,
        input_text="amber kettle orbit violin 73\namber kettle orbit violin 73\n",
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_serve_refuses_to_start_without_an_admin(tmp_path: Path) -> None:
    r = _run(["serve"], _env(tmp_path))
    assert r.returncode == 1
    assert "imhost admin create" in r.stderr


@pytest.mark.slow
def test_serve_demo_prints_working_logins_and_stops_cleanly(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [*IMHOST, "serve", "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = ""
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output += line
            if "owner@demo.example.com /" in line:
                break
        base = re.search(r"http://127\.0\.0\.1:\d+", output)
        assert base, output
        assert httpx.get(base.group(0) + "/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(base.group(0) + "/readyz", timeout=5).status_code == 200
        email, password = re.search(r"(owner@demo\.example\.com) / (\S+)", output).groups()  # type: ignore[union-attr]
        r = httpx.post(
            base.group(0) + "/api/v1/auth/login",
            json={"email": email, "password": password},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, output


@pytest.mark.slow
def test_a_second_serve_with_the_same_node_id_refuses_to_start(tmp_path: Path) -> None:
    """Issue 9: two nodes left at the default node_id dropped each other's usage."""
    env = _env(tmp_path)
    first = subprocess.Popen(
        [*IMHOST, "serve", "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.stdout is not None
    output = ""
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and "imhost is running" not in output:
            line = first.stdout.readline()
            if not line:
                break
            output += line
        assert "imhost is running" in output, output
        second_env = _env(tmp_path, IMHOST_ROLE="xmpp")  # same data dir, other ports
        second = _run(["serve"], second_env)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "as node 'xmpp1'" in second.stderr
        assert "IMHOST_XMPP__NODE_ID" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(timeout=20)
        except subprocess.TimeoutExpired:
            first.kill()
            raise
