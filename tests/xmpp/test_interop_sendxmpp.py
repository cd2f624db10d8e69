"""Interop with go-sendxmpp (Debian package ``go-sendxmpp``, Go's go-xmpp library):
send over STARTTLS and Direct TLS to a slixmpp receiver, and receive in listen mode."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from .conftest import LiveServer
from .test_interop_slixmpp import close, connect, make_bot

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

BINARY = shutil.which("go-sendxmpp")
needs_binary = pytest.mark.skipif(
    BINARY is None, reason="go-sendxmpp is not installed (apt-get install -y go-sendxmpp)"
)


async def run_sendxmpp(
    live: LiveServer, *args: str, stdin: bytes | None = None, timeout: float = 20
) -> tuple[int, str]:
    assert BINARY is not None
    proc = await asyncio.create_subprocess_exec(
        BINARY,
        "-n",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


@needs_binary
@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_sendxmpp_sends_a_message(live: LiveServer, direct_tls: bool) -> None:
    """Debian bookworm's go-sendxmpp (0.5.x, go-xmpp) only speaks PLAIN (and DIGEST-MD5,
    which we do not offer): it must pick PLAIN among everything we offer, over TLS."""
    mech = "PLAIN"
    bob = make_bot(live, "bob")
    await connect(bob, live)
    port = live.tls_port if direct_tls else live.port
    args = ["-u", "alice@example.test", "-p", live.password, "-j", f"127.0.0.1:{port}"]
    if direct_tls:
        args.append("-t")
    code, out = await run_sendxmpp(live, *args, "bob@example.test", stdin=b"hello from go-sendxmpp")
    assert code == 0, out
    msg = await asyncio.wait_for(bob.inbox.get(), 10)
    assert msg["body"].strip() == "hello from go-sendxmpp"
    assert str(msg["from"]).startswith("alice@example.test/")
    mine = [a for a in live.backend.auth_log if a.localpart == "alice"]
    assert mine[-1].success and mine[-1].mechanism == mech
    await close(bob)


@needs_binary
async def test_sendxmpp_wrong_password_is_refused(live: LiveServer) -> None:
    code, _ = await run_sendxmpp(
        live,
        "-u",
        "alice@example.test",
        "-p",
        "not the password",
        "-j",
        f"127.0.0.1:{live.port}",
        "bob@example.test",
        stdin=b"x",
    )
    assert code != 0
    assert not live.backend.auth_log[-1].success


@needs_binary
async def test_sendxmpp_listens_and_receives(live: LiveServer) -> None:
    assert BINARY is not None
    proc = await asyncio.create_subprocess_exec(
        BINARY,
        "-n",
        "-l",
        "-u",
        "carol@example.test",
        "-p",
        live.password,
        "-j",
        f"127.0.0.1:{live.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            if live.server.router.sessions_of("example.test", "carol"):
                break
            await asyncio.sleep(0.1)
        sessions = live.server.router.sessions_of("example.test", "carol")
        assert sessions, "go-sendxmpp did not bind a session"
        alice = make_bot(live, "alice")
        await connect(alice, live)
        alice.send_message(mto=sessions[0].jid_str, mbody="ping from slixmpp", mtype="chat")
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert b"ping from slixmpp" in line
        await close(alice)
    finally:
        proc.kill()
        await proc.wait()
