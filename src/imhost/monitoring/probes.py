"""Probes that check a hosted service from outside, the way a client would.

Each probe is a list of steps (connect, TLS, stream, login, ping ...). Every step is timed and
has its own timeout; the first step that fails stops the probe and says, in plain words, what
went wrong. Nothing here touches the database: the scheduler (``scheduler.py``) runs probes
and records their outcome.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import smtplib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from lxml import etree

from imhost.kit.scram import ScramHash, salted_password

from .xmlstream import NS_CLIENT, StreamProblem, XmlStream, parse_frame, stream_error_text

NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_PING = "urn:xmpp:ping"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"

T = TypeVar("T")


class TlsMode(StrEnum):
    STARTTLS = "starttls"
    DIRECT = "direct_tls"


@dataclass(frozen=True)
class Step:
    """One timed step of a probe."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""
    warning: str = ""


@dataclass
class ProbeResult:
    """What a probe found: its steps in order; it passed when every step passed."""

    check: str
    steps: list[Step] = field(default_factory=list)
    certificate_days_left: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def failed(self) -> Step | None:
        return next((step for step in self.steps if not step.ok), None)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def summary(self) -> str:
        bad = self.failed
        if bad is None:
            return "all checks passed"
        return f"{bad.name}: {bad.detail}"

    @property
    def warnings(self) -> list[str]:
        return [step.warning for step in self.steps if step.warning]


class StepFailed(Exception):
    """Raised inside a step with a plain message for the report."""


@dataclass(frozen=True)
class XmppTarget:
    """Where and how to probe one hosted service.

    ``host``/``port`` is where to connect (the SRV target, or the platform's listener);
    ``domain`` is the service's XMPP domain, used for the stream ``to``, SNI and the
    certificate's name. ``ca_file`` is the CA bundle the chain is checked against (None: the
    system's). ``username``/``password`` is the probe account; without it the probe stops after
    reading the stream features.
    """

    host: str
    port: int
    domain: str
    tls: TlsMode = TlsMode.STARTTLS
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    step_timeout: float = 5.0
    expiry_warning_days: int = 14
    resource: str = "imhost-probe"


class _Probe:
    def __init__(self, result: ProbeResult, timeout: float) -> None:
        self.result = result
        self.timeout = timeout

    async def step(self, name: str, work: Callable[[], Awaitable[T]]) -> T:
        start = time.perf_counter()
        try:
            value = await asyncio.wait_for(work(), self.timeout)
        except TimeoutError:
            self._add(name, start, f"no answer within {self.timeout:g} seconds")
            raise StepFailed from None
        except StepFailed as exc:
            self._add(name, start, str(exc))
            raise StepFailed from None
        except StreamProblem as exc:
            self._add(name, start, str(exc))
            raise StepFailed from None
        except ssl.SSLCertVerificationError as exc:
            self._add(name, start, certificate_problem(exc))
            raise StepFailed from None
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self._add(name, start, connection_problem(exc))
            raise StepFailed from None
        self.result.steps.append(Step(name, True, time.perf_counter() - start))
        return value

    def warn(self, text: str) -> None:
        last = self.result.steps[-1]
        self.result.steps[-1] = Step(last.name, last.ok, last.seconds, last.detail, text)

    def _add(self, name: str, start: float, detail: str) -> None:
        self.result.steps.append(Step(name, False, time.perf_counter() - start, detail))


def certificate_problem(exc: ssl.SSLCertVerificationError) -> str:
    code = exc.verify_code
    if code == 10:
        return "the certificate has expired"
    if code == 9:
        return "the certificate is not valid yet"
    if code == 62 or "hostname mismatch" in (exc.verify_message or "").lower():
        return "the certificate is for another name"
    if code in (18, 19, 20, 21):
        return "the certificate is not signed by a trusted authority"
    return "the certificate could not be verified"


def connection_problem(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused (nothing listens on the port)"
    if isinstance(exc, ConnectionResetError):
        return "the server reset the connection"
    if isinstance(exc, ssl.SSLError):
        return "the secure connection could not be set up (TLS handshake failed)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"the connection failed ({os.strerror(exc.errno).lower()})"
    return "the connection failed"


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def days_left(writer: asyncio.StreamWriter, now: datetime) -> int | None:
    sslobj = writer.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return int((cert.not_valid_after_utc - now).total_seconds() // 86400)


async def probe_xmpp(target: XmppTarget, *, now: datetime | None = None) -> ProbeResult:
    """Probe one XMPP service: connect, TLS (STARTTLS or Direct TLS) with the certificate
    checked, stream features, SCRAM login with the probe account, resource binding, ping."""
    result = ProbeResult(f"xmpp-{target.tls.value}")
    probe = _Probe(result, target.step_timeout)
    writer: asyncio.StreamWriter | None = None
    try:
        ctx = tls_context(target.ca_file)
        if target.tls is TlsMode.DIRECT:
            reader, conn = await probe.step("connect", _connect(target))
            writer = conn
            await probe.step("tls", _upgrade(conn, ctx, target.domain))
        else:
            reader, conn = await probe.step("connect", _connect(target))
            writer = conn
        stream = XmlStream(reader, conn)
        features = await probe.step("stream", _features(stream, target.domain))
        if target.tls is TlsMode.STARTTLS:
            if features.find(f"{{{NS_TLS}}}starttls") is None:
                probe.result.steps.append(
                    Step("starttls", False, 0.0, "the server does not offer STARTTLS")
                )
                return result
            await probe.step("starttls", _starttls(stream, ctx, target.domain))
            features = await probe.step("stream-after-tls", _features(stream, target.domain))
        result.certificate_days_left = days_left(stream.writer, now or datetime.now(UTC))
        days = result.certificate_days_left
        if days is not None and days < target.expiry_warning_days:
            probe.warn(f"the certificate expires in {days} days")
        if target.username is None or target.password is None:
            return result
        await probe.step(
            "login", _login(stream, features, target.username, target.password, target.domain)
        )
        await probe.step("bind", _bind(stream, target.resource))
        await probe.step("ping", _ping(stream, target.domain))
        await _close(stream)
    except StepFailed:
        pass
    finally:
        if writer is not None:
            writer.close()
    return result


def _connect(
    target: XmppTarget,
) -> Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    async def work() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(target.host, target.port)

    return work


def _upgrade(
    writer: asyncio.StreamWriter, ctx: ssl.SSLContext, name: str
) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        await writer.start_tls(ctx, server_hostname=name)

    return work


def _features(stream: XmlStream, domain: str) -> Callable[[], Awaitable[etree._Element]]:
    async def work() -> etree._Element:
        await stream.open(domain)
        elem = await stream.next_element()
        if elem.tag != "{http://etherx.jabber.org/streams}features":
            raise StepFailed("the server did not send its stream features")
        return elem

    return work


def _starttls(stream: XmlStream, ctx: ssl.SSLContext, domain: str) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        await stream.send(f"<starttls xmlns='{NS_TLS}'/>")
        answer = await stream.next_element()
        if answer.tag != f"{{{NS_TLS}}}proceed":
            raise StepFailed("the server refused to start TLS")
        await stream.writer.start_tls(ctx, server_hostname=domain)

    return work


SCRAM_MECHANISMS = (("SCRAM-SHA-256", ScramHash.SHA256), ("SCRAM-SHA-1", ScramHash.SHA1))


def _login(
    stream: XmlStream, features: etree._Element, username: str, password: str, domain: str
) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        offered = {(m.text or "").strip() for m in features.iter(f"{{{NS_SASL}}}mechanism")}
        choice = next(((n, h) for n, h in SCRAM_MECHANISMS if n in offered), None)
        if choice is None:
            raise StepFailed("the server offers no SCRAM sign-in")
        mechanism, h = choice
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={_saslname(username)},r={nonce}"
        await stream.send(
            f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{_b64('n,,' + first_bare)}</auth>"
        )
        challenge = await _sasl_answer(stream, "challenge")
        server_first = base64.b64decode(challenge).decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(",") if "=" in part)
        if not attrs.get("r", "").startswith(nonce) or "s" not in attrs or "i" not in attrs:
            raise StepFailed("the server's sign-in challenge is malformed")
        salted = salted_password(password, base64.b64decode(attrs["s"]), int(attrs["i"]), h)
        client_key = hmac.new(salted, b"Client Key", h.value).digest()
        stored_key = hashlib.new(h.value, client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, h.value).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        await stream.send(
            f"<response xmlns='{NS_SASL}'>"
            f"{_b64(without_proof + ',p=' + base64.b64encode(proof).decode())}</response>"
        )
        final = base64.b64decode(await _sasl_answer(stream, "success")).decode()
        server_key = hmac.new(salted, b"Server Key", h.value).digest()
        expected = base64.b64encode(hmac.new(server_key, auth_message, h.value).digest()).decode()
        if final != f"v={expected}":
            raise StepFailed("the server could not prove it knows the probe account")
        await stream.open(domain)
        elem = await stream.next_element()
        if elem.find(f"{{{NS_BIND}}}bind") is None:
            raise StepFailed("the server does not offer resource binding after sign-in")

    return work


async def _sasl_answer(stream: XmlStream, wanted: str) -> str:
    elem = await stream.next_element()
    if elem.tag == f"{{{NS_SASL}}}failure":
        raise StepFailed(f"the probe account could not sign in ({stream_error_text(elem)})")
    if elem.tag != f"{{{NS_SASL}}}{wanted}":
        raise StepFailed("the server answered the sign-in with something unexpected")
    return (elem.text or "").strip()


def _bind(stream: XmlStream, resource: str) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        await stream.send(
            f"<iq type='set' id='probe-bind'><bind xmlns='{NS_BIND}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        answer = await _iq_answer(stream, "probe-bind")
        if answer.get("type") != "result":
            raise StepFailed("the server refused to bind a resource")

    return work


def _ping(stream: XmlStream, domain: str) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        await stream.send(
            f"<iq type='get' id='probe-ping' to='{domain}'><ping xmlns='{NS_PING}'/></iq>"
        )
        # Any answer (even an error) is a full round trip through the server's router.
        await _iq_answer(stream, "probe-ping")

    return work


async def _iq_answer(stream: XmlStream, iq_id: str) -> etree._Element:
    while True:
        elem = await stream.next_element()
        if elem.tag == f"{{{NS_CLIENT}}}iq" and elem.get("id") == iq_id:
            return elem


async def _close(stream: XmlStream) -> None:
    try:
        await stream.send("</stream:stream>")
    except (ConnectionError, OSError):
        return


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


# -- WebSocket (RFC 7395) -----------------------------------------------------------------


async def probe_websocket(
    url: str, domain: str, *, timeout: float = 5.0, ca_file: Path | None = None
) -> ProbeResult:
    """Open an RFC 7395 XMPP-over-WebSocket session, read the features, close it."""
    import websockets

    result = ProbeResult("websocket")
    probe = _Probe(result, timeout)
    holder: list[websockets.ClientConnection] = []

    async def connect() -> None:
        ssl_ctx = tls_context(ca_file) if url.startswith("wss:") else None
        holder.append(
            await websockets.connect(
                url,
                subprotocols=[websockets.Subprotocol("xmpp")],
                ssl=ssl_ctx,
                open_timeout=timeout,
            )
        )
        if holder[0].subprotocol != "xmpp":
            raise StepFailed("the server did not accept the XMPP WebSocket subprotocol")

    async def open_stream() -> None:
        ws = holder[0]
        await ws.send(f"<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>")
        first = _ws_element(await ws.recv())
        if first.tag != f"{{{NS_FRAMING}}}open":
            raise StepFailed("the server did not answer with an XMPP <open/>")
        features = _ws_element(await ws.recv())
        if features.tag != "{http://etherx.jabber.org/streams}features":
            raise StepFailed("the server did not send its stream features")

    async def close() -> None:
        ws = holder[0]
        await ws.send(f"<close xmlns='{NS_FRAMING}'/>")
        answer = _ws_element(await ws.recv())
        if answer.tag != f"{{{NS_FRAMING}}}close":
            raise StepFailed("the server did not answer <close/>")

    try:
        await probe.step("connect", connect)
        await probe.step("stream", open_stream)
        await probe.step("close", close)
    except StepFailed:
        pass
    except websockets.exceptions.WebSocketException:
        result.steps.append(Step("websocket", False, 0.0, "the WebSocket session failed"))
    finally:
        if holder:
            await holder[0].close()
    return result


def _ws_element(frame: str | bytes) -> etree._Element:
    return parse_frame(frame)


# -- DNS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


async def probe_srv(
    domain: str,
    *,
    nameservers: list[str] | None = None,
    port: int = 53,
    timeout: float = 5.0,
) -> tuple[ProbeResult, list[SrvRecord]]:
    """Look up ``_xmpp-client._tcp`` and ``_xmpps-client._tcp`` (RFC 6120 §3.2, XEP-0368)."""
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
    if nameservers is not None:
        resolver.nameservers = nameservers
        resolver.port = port
    resolver.lifetime = timeout
    result = ProbeResult("srv")
    records: list[SrvRecord] = []
    start = time.perf_counter()
    problems: list[str] = []
    for service in ("_xmpp-client._tcp", "_xmpps-client._tcp"):
        try:
            answer = await resolver.resolve(f"{service}.{domain}", "SRV")
        except dns.resolver.NXDOMAIN:
            problems.append(f"{service}.{domain} does not exist")
            continue
        except dns.resolver.NoAnswer:
            problems.append(f"{service}.{domain} has no SRV record")
            continue
        except dns.exception.Timeout:
            problems.append("the name servers did not answer")
            continue
        except dns.exception.DNSException:
            problems.append(f"{service}.{domain} could not be looked up")
            continue
        for rr in answer:
            records.append(SrvRecord(rr.priority, rr.weight, rr.port, str(rr.target).rstrip(".")))
    seconds = time.perf_counter() - start
    if records:
        result.steps.append(Step("srv", True, seconds, warning="; ".join(problems)))
    else:
        result.steps.append(
            Step("srv", False, seconds, "; ".join(problems) or "no SRV records found")
        )
    return result, records


# -- Platform checks ----------------------------------------------------------------------


async def probe_tcp(host: str, port: int, *, timeout: float = 5.0) -> ProbeResult:
    """Only the TCP connect (a quick reachability check of a port)."""
    result = ProbeResult(f"tcp-{port}")
    probe = _Probe(result, timeout)
    try:
        _, writer = await probe.step("connect", _connect(XmppTarget(host, port, host)))
        writer.close()
    except StepFailed:
        pass
    return result


async def probe_http(url: str, *, timeout: float = 5.0, ca_file: Path | None = None) -> ProbeResult:
    """GET ``url``; a 2xx answer passes (``/healthz``: the web process answers, ``/readyz``:
    and its database is reachable at the newest migration)."""
    import httpx

    result = ProbeResult("http")
    probe = _Probe(result, timeout)

    async def work() -> None:
        verify: ssl.SSLContext | bool = tls_context(ca_file) if url.startswith("https:") else True
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
                answer = await client.get(url)
        except httpx.TimeoutException as exc:
            raise StepFailed(f"no answer within {timeout:g} seconds") from exc
        except httpx.HTTPError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise StepFailed(connection_problem(cause)) from exc
            if isinstance(exc, httpx.ConnectError):
                raise StepFailed("could not connect to the server") from exc
            raise StepFailed("the request failed") from exc
        if not 200 <= answer.status_code < 300:
            raise StepFailed(f"the server answered {answer.status_code}")

    with contextlib.suppress(StepFailed):
        await probe.step("http", work)
    return result


def check_disk(path: Path, *, min_free_bytes: int, min_free_ratio: float = 0.05) -> ProbeResult:
    """Disk free in the data directory."""
    start = time.perf_counter()
    usage = shutil.disk_usage(path)
    ratio = usage.free / usage.total if usage.total else 0.0
    ok = usage.free >= min_free_bytes and ratio >= min_free_ratio
    detail = "" if ok else f"only {usage.free // (1024 * 1024)} MB free ({ratio:.1%})"
    return ProbeResult("disk", [Step("disk", ok, time.perf_counter() - start, detail)])


async def check_smtp(
    host: str, port: int, *, timeout: float = 5.0, implicit_tls: bool = False
) -> ProbeResult:
    """The SMTP relay answers 220, EHLO and QUIT (``implicit_tls``: smtps, port 465)."""

    def talk() -> None:
        factory = smtplib.SMTP_SSL if implicit_tls else smtplib.SMTP
        with factory(host, port, timeout=timeout) as smtp:
            code, _ = smtp.ehlo()
            if code != 250:
                raise StepFailed("the mail relay refused EHLO")

    result = ProbeResult("smtp")
    probe = _Probe(result, timeout)

    async def work() -> None:
        try:
            await asyncio.to_thread(talk)
        except smtplib.SMTPException as exc:
            raise StepFailed("the mail relay did not greet as an SMTP server") from exc

    with contextlib.suppress(StepFailed):
        await probe.step("smtp", work)
    return result


def check_lag(name: str, last: datetime | None, now: datetime, limit_seconds: float) -> ProbeResult:
    """A lag check: ``last`` (when a job last ran, when usage was last flushed) must be recent."""
    if last is None:
        return ProbeResult(name, [Step(name, False, 0.0, "it has never run")])
    lag = (now - last).total_seconds()
    ok = lag <= limit_seconds
    detail = "" if ok else f"last ran {int(lag)} seconds ago (limit {int(limit_seconds)})"
    return ProbeResult(name, [Step(name, ok, max(lag, 0.0), detail)])
