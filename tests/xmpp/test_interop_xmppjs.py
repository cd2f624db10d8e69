"""Interop with xmpp.js (``@xmpp/client`` from npm, pinned in ``tests/xmpp/js``), a JavaScript
client we did not write, over XMPP over WebSocket (RFC 7395) through the web app's
``/xmpp-websocket`` route served by uvicorn, plain (``ws://``) and with TLS (``wss://``):
SASL login with each mechanism xmpp.js has that we offer, resource binding, roster, presence,
messages both ways with slixmpp, a wrong password, and a clean close.

xmpp.js runs in Node.js (``js/xmppjs-client.mjs``, driven through stdin/stdout JSON lines).
Without ``node`` the tests skip, or fail under ``IMHOST_REQUIRE_PEERS=1`` (CI); with ``node``
but without ``npm ci --prefix tests/xmpp/js`` they fail, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.ports import HostLimits, RosterItem
from imhost.xmpp.server import XmppServer, ensure_self_signed_cert

from ..peers import missing_peer
from .conftest import LiveServer
from .harness import PASSWORD, settings
from .test_interop_slixmpp import Bot, close, connect, make_bot

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "xmppjs-client.mjs"
DOMAIN = "example.test"
WAIT = 10.0  # seconds for any one expected event (the machine is shared)


@functools.cache
def _node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    return tuple(int(part) for part in out.strip().lstrip("v").split(".")[:2])


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        missing_peer("Node.js is not installed (.ci/run installs Debian's nodejs and npm)")
    if _node_version(node) < (20, 10):
        pytest.fail(f"xmpp.js needs Node.js 20.10 or later, {node} is older", pytrace=False)
    if not (JS_DIR / "node_modules" / "@xmpp" / "client" / "package.json").is_file():
        pytest.fail(
            "xmpp.js is not installed: run `npm ci --prefix tests/xmpp/js` (.ci/run does)",
            pytrace=False,
        )
    return node


@pytest.fixture
async def live_im(cert_dir: Path) -> AsyncIterator[LiveServer]:
    """The server as deployed: every default IM module (roster, presence, ...) loaded."""
    backend = MemoryBackend(iterations=4096)
    backend.add_host(DOMAIN, limits=HostLimits(message_rate=None))
    for user in ("alice", "bob"):
        backend.create_account(DOMAIN, user, PASSWORD)
    server = XmppServer.with_memory_backend(
        settings(
            require_encryption=True,
            allow_plain_without_tls=False,
            direct_tls_enabled=True,
            c2s_direct_tls_port=0,
            certificate_dir=cert_dir,
        ),
        backend,
        modules=DEFAULT_MODULES,
    )
    await server.start()
    assert server.c2s_port and server.direct_tls_port
    yield LiveServer(server, backend, server.c2s_port, server.direct_tls_port)
    await server.stop()


@dataclass
class WebApp:
    url: str  # ws:// or wss:// URL of /xmpp-websocket
    ca_file: Path | None = None  # the self-signed certificate a wss:// client must trust


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_web_app(live: LiveServer, data_dir: Path, *, tls: bool) -> AsyncIterator[WebApp]:
    """The real web app (``create_app``) on uvicorn, its runtime pointing at ``live``'s engine."""
    import uvicorn

    from imhost.config import Settings
    from imhost.runtime import build_runtime
    from imhost.web.app import create_app

    runtime = build_runtime(Settings(data_dir=data_dir))
    runtime.xmpp = live.server
    port = _free_port()
    tls_options: dict[str, Any] = {}
    ca_file = None
    if tls:
        # the self-signed certificate a demo install generates, here for the loopback address
        ca_file, key_file = ensure_self_signed_cert(data_dir / "web-tls", ["127.0.0.1"])
        tls_options = {"ssl_certfile": str(ca_file), "ssl_keyfile": str(key_file)}
    web = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
            **tls_options,
        )
    )
    task = asyncio.create_task(web.serve())
    try:
        async with asyncio.timeout(WAIT):
            while not web.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        scheme = "wss" if tls else "ws"
        yield WebApp(f"{scheme}://127.0.0.1:{port}/xmpp-websocket", ca_file)
    finally:
        web.should_exit = True
        await asyncio.wait_for(task, WAIT)


@pytest.fixture
async def web(live_im: LiveServer, tmp_path: Path) -> AsyncIterator[WebApp]:
    async with serve_web_app(live_im, tmp_path, tls=False) as app:
        yield app


@pytest.fixture
async def secure_web(live_im: LiveServer, tmp_path: Path) -> AsyncIterator[WebApp]:
    async with serve_web_app(live_im, tmp_path, tls=True) as app:
        yield app


@dataclass
class XmppJs:
    """One xmpp.js client process: send it commands, wait for the events it reports."""

    proc: asyncio.subprocess.Process
    seen: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    _events: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        app: WebApp,
        jid: str,
        password: str,
        *,
        resource: str = "xmppjs",
        mechanism: str | None = None,
    ) -> XmppJs:
        args = [SCRIPT.as_posix(), "--service", app.url, "--jid", jid, "--resource", resource]
        args.append("--trace")  # every element in the failure report
        if mechanism:
            args += ["--mechanism", mechanism]
        env = dict(os.environ, XMPP_PASSWORD=password)
        if app.ca_file is not None:
            env["NODE_EXTRA_CA_CERTS"] = str(app.ca_file)
        proc = await asyncio.create_subprocess_exec(
            node_binary(),
            *args,
            cwd=JS_DIR,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = cls(proc)
        client._readers = [
            asyncio.create_task(client._read_events()),
            asyncio.create_task(client._read_stderr()),
        ]
        return client

    async def _read_events(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if text:
                try:
                    self._events.put_nowait(json.loads(text))
                except json.JSONDecodeError:
                    self._events.put_nowait({"event": "garbage", "line": text})
        self._events.put_nowait(None)

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr += line

    def _explain(self, what: str) -> str:
        log = "\n".join(json.dumps(e) for e in self.seen)
        return f"{what}\nevents so far:\n{log}\nstderr:\n{self.stderr.decode(errors='replace')}"

    async def expect(self, event: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        """The next ``event`` whose fields include ``fields`` (other events are kept in
        ``seen``); fails with everything seen when it does not come."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    item = await self._events.get()
                    if item is None:
                        self._events.put_nowait(None)
                        pytest.fail(self._explain(f"xmpp.js exited before {event} {fields}"))
                    self.seen.append(item)
                    if item["event"] == event and all(item.get(k) == v for k, v in fields.items()):
                        return item
        except TimeoutError:
            pytest.fail(self._explain(f"no {event} {fields} from xmpp.js within {timeout} s"))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["event"] == event]

    def send(self, op: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())

    async def exit_code(self, timeout: float = WAIT) -> int:
        await self.expect("exit", timeout)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for task in self._readers:
            task.cancel()


@pytest.fixture
async def xmppjs() -> AsyncIterator[list[XmppJs]]:
    """Every xmpp.js process a test starts (append to the list) is killed at the end."""
    node_binary()
    started: list[XmppJs] = []
    yield started
    for client in started:
        await client.kill()


async def login(
    started: list[XmppJs], app: WebApp, live: LiveServer, user: str, **kw: Any
) -> XmppJs:
    client = await XmppJs.start(app, f"{user}@{live.domain}", live.password, **kw)
    started.append(client)
    return client


async def round_trip(client: XmppJs) -> list[dict[str, Any]]:
    """A roster get and its result: what the server sent before (at bind it asks the client's
    version, XEP-0092) has been received and answered when this returns."""
    client.send("roster")
    items: list[dict[str, Any]] = (await client.expect("roster"))["items"]
    return items


async def stop_cleanly(client: XmppJs) -> None:
    """RFC 7395 §3.6: xmpp.js sends <close/>, we answer <close/>, the WebSocket closes."""
    client.send("stop")
    assert (await client.expect("disconnect"))["clean"] is True
    await client.expect("offline")
    assert (await client.expect("stopped"))["server_closed"] is True
    assert await client.exit_code() == 0
    if client.events("error"):
        pytest.fail(client._explain("xmpp.js reported errors"))


def last_auth(live: LiveServer, user: str) -> Any:
    attempts = [a for a in live.backend.auth_log if a.localpart == user]
    assert attempts, f"no authentication attempt by {user}"
    return attempts[-1]


async def test_xmppjs_logs_in_over_websocket_with_scram_sha_1_and_binds(
    live_im: LiveServer, web: WebApp, xmppjs: list[XmppJs]
) -> None:
    """xmpp.js's own choice over ws://: it has SCRAM-SHA-1, PLAIN and ANONYMOUS (and FAST
    tokens over SASL2, which we do not offer); without TLS we offer no PLAIN, so SCRAM-SHA-1."""
    alice = await login(xmppjs, web, live_im, "alice")
    features = await alice.expect("features")
    assert "SCRAM-SHA-1" in features["mechanisms"]
    assert "PLAIN" not in features["mechanisms"]
    assert "ANONYMOUS" not in features["mechanisms"]
    assert (await alice.expect("auth"))["mechanism"] == "SCRAM-SHA-1"
    online = await alice.expect("online")
    assert online["jid"] == f"alice@{DOMAIN}/xmppjs"
    attempt = last_auth(live_im, "alice")
    assert attempt.success and attempt.mechanism == "SCRAM-SHA-1"
    assert len(live_im.server.router.sessions_of(DOMAIN, "alice")) == 1
    assert await round_trip(alice) == []
    await stop_cleanly(alice)
    assert live_im.server.router.sessions_of(DOMAIN, "alice") == []


@pytest.mark.parametrize(
    ("mechanism", "expected"),
    [(None, "SCRAM-SHA-1"), ("SCRAM-SHA-1", "SCRAM-SHA-1"), ("PLAIN", "PLAIN")],
    ids=["default", "scram-sha-1", "plain"],
)
async def test_xmppjs_logs_in_over_secure_websocket(
    live_im: LiveServer,
    secure_web: WebApp,
    xmppjs: list[XmppJs],
    mechanism: str | None,
    expected: str,
) -> None:
    """Over wss:// (TLS terminated by the web server itself) PLAIN is offered too; xmpp.js
    still prefers SCRAM-SHA-1, and PLAIN works when asked for."""
    alice = await login(xmppjs, secure_web, live_im, "alice", mechanism=mechanism)
    features = await alice.expect("features")
    assert {"SCRAM-SHA-1", "PLAIN"} <= set(features["mechanisms"])
    assert (await alice.expect("auth"))["mechanism"] == expected
    assert (await alice.expect("online"))["jid"] == f"alice@{DOMAIN}/xmppjs"
    attempt = last_auth(live_im, "alice")
    assert attempt.success and attempt.mechanism == expected
    await round_trip(alice)
    await stop_cleanly(alice)


async def test_plain_is_not_offered_over_plain_websocket(
    live_im: LiveServer, web: WebApp, xmppjs: list[XmppJs]
) -> None:
    alice = await login(xmppjs, web, live_im, "alice", mechanism="PLAIN")
    error = await alice.expect("error", during="login")
    assert "PLAIN is not offered" in error["message"]
    assert "SCRAM-SHA-1" in error["message"]
    assert await alice.exit_code() == 2
    assert not alice.events("auth") and not alice.events("online")
    assert not [a for a in live_im.backend.auth_log if a.localpart == "alice"]


async def test_a_wrong_password_is_refused(
    live_im: LiveServer, web: WebApp, xmppjs: list[XmppJs]
) -> None:
    alice = await XmppJs.start(web, f"alice@{DOMAIN}", "not the password")
    xmppjs.append(alice)
    assert (await alice.expect("auth"))["mechanism"] == "SCRAM-SHA-1"
    error = await alice.expect("error", during="login")
    assert error["name"] == "SASLError" and error["condition"] == "not-authorized"
    assert await alice.exit_code() == 2
    assert not alice.events("online")
    attempt = last_auth(live_im, "alice")
    assert not attempt.success and attempt.mechanism == "SCRAM-SHA-1"
    assert live_im.server.router.sessions_of(DOMAIN, "alice") == []


class Watcher:
    """Presence stanzas a slixmpp client receives."""

    def __init__(self, bot: Bot) -> None:
        self.available: asyncio.Queue[str] = asyncio.Queue()
        self.unavailable: asyncio.Queue[str] = asyncio.Queue()
        bot.add_event_handler(
            "presence_available", lambda p: self.available.put_nowait(str(p["from"]))
        )
        bot.add_event_handler(
            "presence_unavailable", lambda p: self.unavailable.put_nowait(str(p["from"]))
        )


async def test_roster_presence_and_messages_both_ways_with_slixmpp(
    live_im: LiveServer, web: WebApp, xmppjs: list[XmppJs]
) -> None:
    for owner, contact, name in (("alice", "bob", "Bob"), ("bob", "alice", "Alice")):
        await live_im.backend.set_item(
            DOMAIN,
            owner,
            RosterItem(f"{contact}@{DOMAIN}", name=name, subscription="both", groups=("Team",)),
        )
    bob = make_bot(live_im, "bob")
    bob_presences = Watcher(bob)
    await connect(bob, live_im)
    bob_jid = str(bob.boundjid)

    alice = await login(xmppjs, web, live_im, "alice", resource="browser")
    alice_jid = (await alice.expect("online"))["jid"]
    assert alice_jid == f"alice@{DOMAIN}/browser"
    # xmpp.js enables XEP-0198 stream management after binding, resumable
    assert (await alice.expect("sm"))["status"] == "enabled"

    alice.send("roster")
    roster = await alice.expect("roster")
    assert roster["items"] == [
        {"jid": f"bob@{DOMAIN}", "name": "Bob", "subscription": "both", "groups": ["Team"]}
    ]

    # initial presence: bob sees alice come online, alice gets bob's presence (RFC 6121 §4.2)
    alice.send("presence")
    assert await asyncio.wait_for(_next_from(bob_presences.available, alice_jid), WAIT)
    await alice.expect("presence", **{"from": bob_jid, "type": "available"})

    body = "héllo <bob> & co ✓"
    alice.send("message", to=f"bob@{DOMAIN}", body=body, id="m1")
    got = await asyncio.wait_for(bob.inbox.get(), WAIT)
    assert got["body"] == body
    assert str(got["from"]) == alice_jid
    assert got["id"] == "m1"
    await alice.expect("acked", name="message", id="m1")  # the server's XEP-0198 <a/>

    bob.send_message(mto=alice_jid, mbody="back from slixmpp ]]> 🙂", mtype="chat")
    back = await alice.expect("message")
    assert back["body"] == "back from slixmpp ]]> 🙂"
    assert back["from"] == bob_jid and back["type"] == "chat"

    await stop_cleanly(alice)
    # a clean close ends the session: bob sees alice go offline (RFC 6121 §4.5.2)
    assert await asyncio.wait_for(_next_from(bob_presences.unavailable, alice_jid), WAIT)
    assert live_im.server.router.sessions_of(DOMAIN, "alice") == []
    await close(bob)


async def _next_from(queue: asyncio.Queue[str], jid: str) -> bool:
    while await queue.get() != jid:
        pass
    return True
