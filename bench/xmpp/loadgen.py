"""An asyncio XMPP load generator with hand-written stanzas (no XML library on the hot path).

Used by ``bench/xmpp/run.py``; runs on its own core and measures its own CPU so that a
saturated generator is noticed. Speaks plain c2s: stream, SASL PLAIN (or SCRAM-SHA-1 with a
cached salted password), bind, presence, then chat messages whose body carries the send time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)
BODY_RE = re.compile(rb"<body>(\d+) (\d+)</body>")
SCRAM_CACHE: dict[bytes, tuple[bytes, bytes]] = {}
"""Client-side SaltedPassword cache, as real clients keep it (measure the server, not us)."""


class Conn(asyncio.Protocol):
    """One client connection; login is a small state machine on byte patterns."""

    def __init__(
        self,
        user: str,
        domain: str,
        password: str,
        mech: str = "PLAIN",
        scram_cache: dict[bytes, tuple[bytes, bytes]] | None = None,
        resource: str = "r",
    ) -> None:
        self.user = user
        self.resource = resource
        self.domain = domain
        self.password = password
        self.mech = mech
        self.scram_cache = scram_cache if scram_cache is not None else {}
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stage = "features1"
        self.received = 0
        self.latencies: list[int] | None = None
        self.errors = 0
        self.on_lost: Callable[[], None] | None = None
        self.jid = ""
        self._first_bare = ""
        self._server_sig = b""
        self.lost = False

    # -- protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send(HEADER.format(domain=self.domain))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.user}: lost during login: {exc}"))

    def send(self, data: str) -> None:
        assert self.transport is not None
        self.transport.write(data.encode())

    def data_received(self, data: bytes) -> None:
        if self.stage == "ready":
            buf = self.buf + data if self.buf else data
            cut = buf.rfind(b"</message>")
            if cut < 0:
                self.buf = buf if b"<message" in buf else b""
                return
            cut += 10
            part = buf[:cut]
            rest = buf[cut:]
            self.buf = rest if b"<message" in rest else b""
            now = time.perf_counter_ns()
            lat = self.latencies
            n = 0
            for m in BODY_RE.finditer(part):
                n += 1
                if lat is not None:
                    lat.append(now - int(m.group(1)))
            self.received += n
            if b"type='error'" in part:
                self.errors += part.count(b"type='error'")
            return
        self.buf += data
        self._login_step()

    # -- login ----------------------------------------------------------------------------

    def _login_step(self) -> None:
        buf = self.buf
        if b"<failure" in buf or b"stream:error" in buf:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"{self.user}: {buf[-300:]!r}"))
            return
        if self.stage == "features1" and b"</stream:features>" in buf:
            self.buf = b""
            if self.mech == "PLAIN":
                blob = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
                self.send(
                    f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                    f"{blob}</auth>"
                )
                self.stage = "success"
            else:
                nonce = base64.b64encode(os.urandom(12)).decode()
                self._first_bare = f"n={self.user},r={nonce}"
                blob = base64.b64encode(("n,," + self._first_bare).encode()).decode()
                self.send(
                    f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                    f"mechanism='SCRAM-SHA-1'>{blob}</auth>"
                )
                self.stage = "challenge"
        elif self.stage == "challenge" and b"</challenge>" in buf:
            text = buf.split(b">", 1)[1].split(b"<", 1)[0]
            self.buf = b""
            server_first = base64.b64decode(text).decode()
            attrs = dict(p.split("=", 1) for p in server_first.split(","))
            salt = base64.b64decode(attrs["s"])
            key = salt + attrs["i"].encode()
            cached = self.scram_cache.get(key)
            if cached is None:
                salted = hashlib.pbkdf2_hmac("sha1", self.password.encode(), salt, int(attrs["i"]))
                ck = hmac.new(salted, b"Client Key", "sha1").digest()
                sk = hmac.new(salted, b"Server Key", "sha1").digest()
                cached = self.scram_cache[key] = (ck, sk)
            ck, sk = cached
            stored = hashlib.sha1(ck).digest()  # noqa: S324 - SCRAM-SHA-1 by definition
            without = f"c=biws,r={attrs['r']}"
            auth_msg = f"{self._first_bare},{server_first},{without}".encode()
            sig = hmac.new(stored, auth_msg, "sha1").digest()
            proof = base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig, strict=True)))
            self._server_sig = hmac.new(sk, auth_msg, "sha1").digest()
            final = f"{without},p={proof.decode()}"
            self.send(
                f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                f"{base64.b64encode(final.encode()).decode()}</response>"
            )
            self.stage = "success"
        elif (
            self.stage == "success"
            and b"<success" in buf
            and (b"</success>" in buf or b"/>" in buf)
        ):
            self.buf = b""
            self.send(HEADER.format(domain=self.domain))
            self.stage = "features2"
        elif self.stage == "features2" and b"</stream:features>" in buf:
            self.buf = b""
            self.send(
                "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<resource>{self.resource}</resource></bind></iq>"
            )
            self.stage = "bind"
        elif self.stage == "bind" and b"</iq>" in buf:
            m = re.search(rb"<jid>([^<]+)</jid>", buf)
            self.jid = m.group(1).decode() if m else ""
            self.buf = b""
            self.send("<presence/>")
            self.stage = "ready"
            self.ready.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()


async def connect_user(
    host: str,
    port: int,
    user: str,
    domain: str,
    password: str,
    mech: str = "PLAIN",
    cache: dict[bytes, tuple[bytes, bytes]] | None = None,
    timeout: float = 30,
    resource: str = "r",
) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: Conn(user, domain, password, mech, cache, resource), host, port
    )
    await asyncio.wait_for(conn.ready, timeout)
    return conn


async def connect_many(
    host: str,
    port: int,
    users: list[str],
    domain: str,
    password: str,
    in_flight: int = 10,
    mech: str = "PLAIN",
    resources: bool = False,
) -> tuple[list[Conn], float]:
    """Log users in with ``in_flight`` concurrent logins; return conns and elapsed seconds."""
    sem = asyncio.Semaphore(in_flight)
    cache = SCRAM_CACHE
    conns: list[Conn | None] = [None] * len(users)

    async def one(i: int, user: str) -> None:
        async with sem:
            for attempt in range(3):
                try:
                    conns[i] = await connect_user(
                        host,
                        port,
                        user,
                        domain,
                        password,
                        mech,
                        cache,
                        resource=f"r{i}" if resources else "r",
                    )
                    return
                except (TimeoutError, OSError, ConnectionError):
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.2)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    return [c for c in conns if c is not None], time.perf_counter() - start


@dataclass
class StepResult:
    rate: int
    duration: float
    sent: int
    received_during: int
    received_total: int
    errors: int
    p50_ms: float
    p99_ms: float
    backlog: list[int] = field(default_factory=list)
    gen_cpu: float = 0.0
    drained_s: float = 0.0
    server_cpu: float = 0.0
    """Share of one CPU the server used during the step (all its threads)."""
    server_wait: float = 0.0
    """Time the server was runnable but waiting for a CPU (other processes had it)."""
    server_us_per_msg: float = 0.0
    loadavg1: float = 0.0
    """The 1-minute load average when the step started."""

    @property
    def sustained(self) -> bool:
        """PEERS.md: no errors, >=97 % sent, >=98 % received while sending, a bounded backlog
        (never more than half a second of traffic in flight), everything delivered in the
        drain."""
        target = self.rate * self.duration
        bounded = not self.backlog or max(self.backlog) <= self.rate * 0.5
        return (
            self.errors == 0
            and self.sent >= 0.97 * target
            and self.received_during >= 0.98 * self.sent
            and self.received_total >= self.sent
            and bounded
        )


async def run_step(
    senders: list[Conn],
    receivers: list[Conn],
    domain: str,
    rate: int,
    duration: float,
    drain: float = 3.0,
    tick: float = 0.005,
) -> StepResult:
    """Send ``rate`` messages/s for ``duration`` s from senders[i] to receivers[i]."""
    pairs = list(zip(senders, receivers, strict=True))
    targets = [r.jid or f"{r.user}@{domain}/r" for r in receivers]
    lat: list[int] = []
    for r in receivers:
        r.latencies = lat
        r.errors = 0
    base_recv = sum(r.received for r in receivers)
    sent = 0
    backlog: list[int] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    next_sample = start + 1.0
    k = 0
    n_pairs = len(pairs)
    while True:
        now = time.perf_counter()
        elapsed = now - start
        if elapsed >= duration:
            break
        due = int(rate * elapsed) - sent
        if due > 0:
            batches: dict[int, list[str]] = {}
            ts = time.perf_counter_ns()
            for _ in range(due):
                i = k % n_pairs
                k += 1
                batches.setdefault(i, []).append(
                    f"<message to='{targets[i]}' type='chat'><body>{ts} {k}</body></message>"
                )
            for i, items in batches.items():
                s = pairs[i][0]
                if s.transport is not None and not s.lost:
                    s.transport.write("".join(items).encode())
            sent += due
        if now >= next_sample:
            backlog.append(sent - (sum(r.received for r in receivers) - base_recv))
            next_sample += 1.0
        await asyncio.sleep(tick)
    received_during = sum(r.received for r in receivers) - base_recv
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - start
    drain_start = time.perf_counter()
    while time.perf_counter() - drain_start < drain:
        if sum(r.received for r in receivers) - base_recv >= sent:
            break
        await asyncio.sleep(0.02)
    drained = time.perf_counter() - drain_start
    received_total = sum(r.received for r in receivers) - base_recv
    for r in receivers:
        r.latencies = None
    lat.sort()

    def pct(p: float) -> float:
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6

    return StepResult(
        rate=rate,
        duration=wall,
        sent=sent,
        received_during=received_during,
        received_total=received_total,
        errors=sum(r.errors for r in receivers),
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        backlog=backlog,
        gen_cpu=cpu / wall,
        drained_s=drained,
    )
