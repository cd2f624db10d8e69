"""The ejabberd driver against a real ejabberd (Debian's 23.01) started on loopback with a
private configuration; skipped where ejabberd is not installed or cannot be started, a failure
instead under ``IMHOST_REQUIRE_PEERS=1`` (CI installs it)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from imhost.hosting.engines.base import EngineError
from imhost.hosting.engines.ejabberd import EjabberdEngine

from ..peers import missing_peer

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.anyio]

DOMAIN = "ej.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(base: Path, lines: int = 20) -> str:
    logs = [p.read_text(errors="replace") for p in sorted((base / "logs").glob("*.log"))]
    return "\n".join("\n".join(logs).splitlines()[-lines:]) or "(nothing logged)"


@dataclass
class Ejabberd:
    api: str
    c2s_port: int


CONFIG = """
hosts:
  - "{domain}"
loglevel: warning
log_rotate_count: 0
listen:
  - port: {api_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
  - port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
auth_method: internal
api_permissions:
  "imhost on loopback":
    from:
      - mod_http_api
    who:
      ip: 127.0.0.1/8
    what: "*"
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
  mod_admin_extra: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
"""


@pytest.fixture(scope="module")
def ejabberd() -> Iterator[Ejabberd]:
    if shutil.which("ejabberdctl") is None or shutil.which("setpriv") is None:
        missing_peer("ejabberd is not installed (apt-get install ejabberd)")
    if os.geteuid() != 0:
        missing_peer("starting ejabberd as its own user needs root")
    base = Path(tempfile.mkdtemp(prefix="imhost-ejabberd-"))
    for sub in ("conf", "logs", "spool"):
        (base / sub).mkdir()
    api_port, c2s_port = _free_port(), _free_port()
    node = f"imhost{api_port}@localhost"
    (base / "conf" / "ejabberd.yml").write_text(
        CONFIG.format(domain=DOMAIN, api_port=api_port, c2s_port=c2s_port)
    )
    (base / "conf" / "ejabberdctl.cfg").write_text(
        f"ERLANG_NODE={node}\nINET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n"
    )
    (base / ".erlang.cookie").write_text(os.urandom(16).hex())
    os.chmod(base / ".erlang.cookie", 0o400)
    subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(base)], check=True)
    ctl = [
        "setpriv",
        "--reuid=ejabberd",
        "--regid=ejabberd",
        "--init-groups",
        "--",
        "ejabberdctl",
        "--config-dir",
        str(base / "conf"),
        "--config",
        str(base / "conf" / "ejabberd.yml"),
        "--ctl-config",
        str(base / "conf" / "ejabberdctl.cfg"),
        "--logs",
        str(base / "logs"),
        "--spool",
        str(base / "spool"),
        "--node",
        node,
    ]
    env = dict(os.environ, HOME=str(base))
    proc = subprocess.Popen(
        [*ctl, "foreground"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    api = f"http://127.0.0.1:{api_port}/api"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.post(f"{api}/status", json={}, timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    missing_peer(f"ejabberd did not start; its log ends:\n{_log_tail(base)}")
                time.sleep(0.5)
        yield Ejabberd(api, c2s_port)
    finally:
        subprocess.run([*ctl, "stop"], env=env, capture_output=True, timeout=60, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def engine(ejabberd: Ejabberd) -> AsyncIterator[EjabberdEngine]:
    driver = EjabberdEngine(ejabberd.api)
    yield driver
    await driver.close()


class RawClient:
    """Just enough XMPP to log in with PLAIN and bind (ejabberd's c2s without TLS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.buffer = reader, writer, ""

    @classmethod
    async def login(cls, port: int, user: str, password: str) -> tuple[RawClient, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        header = (
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
        )
        client.send(header)
        await client.until("</stream:features>")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        client.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        answer = await client.until(r"<success|<failure")
        if "<failure" in answer:
            return client, False
        client.send(header)
        await client.until("</stream:features>")
        client.send(
            "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>test</resource></bind></iq>"
        )
        await client.until("</iq>")
        return client, True

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    async def until(self, pattern: str, timeout: float = 10) -> str:
        async def read() -> str:
            while not re.search(pattern, self.buffer):
                chunk = await self.reader.read(4096)
                if not chunk:
                    raise ConnectionError("closed")
                self.buffer += chunk.decode()
            seen, self.buffer = self.buffer, ""
            return seen

        return await asyncio.wait_for(read(), timeout)

    async def closed_by_server(self, timeout: float = 10) -> bool:
        """True when the server ends the stream or the connection within ``timeout``."""
        try:
            await self.until("</stream:stream>", timeout)
        except ConnectionError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_accounts_are_created_updated_and_deleted_in_ejabberd(
    engine: EjabberdEngine, ejabberd: Ejabberd
) -> None:
    await engine.create_account(DOMAIN, "alice", "first-password-1")
    client, ok = await RawClient.login(ejabberd.c2s_port, "alice", "first-password-1")
    client.close()
    assert ok
    await engine.create_account(DOMAIN, "alice", "second-password-2")  # exists: new password
    client, ok = await RawClient.login(ejabberd.c2s_port, "alice", "first-password-1")
    client.close()
    assert not ok
    await engine.set_password(DOMAIN, "alice", "third-password-3")
    client, ok = await RawClient.login(ejabberd.c2s_port, "alice", "third-password-3")
    client.close()
    assert ok
    await engine.delete_account(DOMAIN, "alice")
    await engine.delete_account(DOMAIN, "alice")  # already gone: fine
    client, ok = await RawClient.login(ejabberd.c2s_port, "alice", "third-password-3")
    client.close()
    assert not ok


async def test_sessions_are_counted_and_kicked(engine: EjabberdEngine, ejabberd: Ejabberd) -> None:
    await engine.create_account(DOMAIN, "bob", "bob-password-77")
    client, ok = await RawClient.login(ejabberd.c2s_port, "bob", "bob-password-77")
    assert ok
    assert await engine.connected_sessions(DOMAIN) == 1
    assert await engine.kick_sessions(DOMAIN, "bob", "password reset") == 1
    assert await client.closed_by_server()
    client.close()
    assert await engine.connected_sessions(DOMAIN) == 0
    await engine.delete_account(DOMAIN, "bob")


async def test_refusals_carry_ejabberds_reason(engine: EjabberdEngine) -> None:
    with pytest.raises(EngineError, match="Unknown virtual host"):
        await engine.create_account("nowhere.example", "carol", "carol-password-9")
    with pytest.raises(EngineError, match="could not set the password"):
        await engine.set_password(DOMAIN, "nobody", "whatever-password")
    with pytest.raises(EngineError, match="cannot make a host refuse logins"):
        await engine.suspend_host(DOMAIN, "unpaid")


async def test_an_unreachable_ejabberd_is_a_clear_error() -> None:
    driver = EjabberdEngine(f"http://127.0.0.1:{_free_port()}/api", timeout=2)
    try:
        with pytest.raises(EngineError, match="not reachable"):
            await driver.create_account(DOMAIN, "dave", "dave-password-5")
    finally:
        await driver.close()
