"""Size limits on what a client sends, checked while parsing and exact to the byte.

The stanza limit (``max_stanza_bytes``, or the host plan's smaller one) counts a top-level
element from its ``<`` to the ``>`` of its end tag; the stream header (and the WebSocket
``<open/>``) has its own small bound. Whatever the chunking, expat never sees more than the
limit's worth of an element's bytes.
"""

from __future__ import annotations

import pytest

from imhost.xmpp.core.errors import StreamError
from imhost.xmpp.core.parser import MAX_HEADER_BYTES, StreamParser
from imhost.xmpp.core.xml import Element
from imhost.xmpp.ports import HostLimits

from .harness import DOMAIN, HEADER, Harness, MemTransport, settle
from .test_stream import error_of, stream_error_from_raw

pytestmark = pytest.mark.anyio

HDR = HEADER.format(to=DOMAIN).encode()
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def message_of(size: int, to: str = f"bob@{DOMAIN}") -> bytes:
    """A chat message of exactly ``size`` bytes."""
    head = f"<message to='{to}' type='chat' id='m1'><body>".encode()
    tail = b"</body></message>"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def presence_of(size: int) -> bytes:
    """An empty-element presence of exactly ``size`` bytes, '>' in its attribute value."""
    head = b"<presence id='"
    tail = b"'/>"
    return head + b">" * (size - len(head) - len(tail)) + tail


def parse(data: bytes, chunk: int, limit: int) -> tuple[list[Element], StreamParser, str | None]:
    out: list[Element] = []
    parser = StreamParser(lambda *a: None, out.append, lambda: None, max_stanza_bytes=limit)
    try:
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    except StreamError as exc:
        return out, parser, exc.text
    return out, parser, None


# -- the parser, any chunking ------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1024, 1025, 4096, 1 << 20])
@pytest.mark.parametrize("make", [message_of, presence_of])
def test_an_element_of_exactly_the_limit_passes_and_one_byte_more_is_refused(
    chunk: int, make: object
) -> None:
    assert callable(make)
    limit = 1024
    ok = HDR + b" " + make(limit) + b"\n" + make(limit) + b"</stream:stream>"
    els, _, error = parse(ok, chunk, limit)
    assert error is None and len(els) == 2

    els, _, error = parse(HDR + make(limit) + b" " + make(limit + 1), chunk, limit)
    assert error == f"stanza larger than {limit} bytes"
    assert len(els) == 1  # the first one passed, the second never reached the handler


def test_a_huge_chunk_is_cut_off_at_the_limit_not_parsed_whole() -> None:
    limit = 10_240
    start = len(HDR)
    els, parser, error = parse(HDR + message_of(10 * 1024 * 1024), 1 << 30, limit)
    assert error == f"stanza larger than {limit} bytes" and els == []
    assert parser.bytes_parsed - start == limit


def test_many_small_stanzas_in_one_chunk_are_not_one_big_stanza() -> None:
    data = HDR + b"".join(message_of(200) for _ in range(100))
    els, _, error = parse(data, len(data), 1024)
    assert error is None and len(els) == 100


def test_whitespace_keepalives_between_stanzas_do_not_count() -> None:
    data = HDR + message_of(1024) + b" " * 5000 + message_of(1024)
    els, _, error = parse(data, 3, 1024)
    assert error is None and len(els) == 2


@pytest.mark.parametrize("chunk", [1, 100, 1 << 20])
def test_the_stream_header_is_bounded(chunk: int) -> None:
    unfinished = HDR[:-1] + b" x='" + b"a" * (2 * MAX_HEADER_BYTES)
    _, parser, error = parse(unfinished, chunk, 1 << 20)
    assert error == f"the stream header is larger than {MAX_HEADER_BYTES} bytes"
    assert parser.bytes_parsed <= MAX_HEADER_BYTES
    # a header of exactly the bound passes
    exact = HDR[:-1] + b" x='" + b"a" * (MAX_HEADER_BYTES - len(HDR) - 5) + b"'>"
    assert len(exact) == MAX_HEADER_BYTES
    _, _, error = parse(exact + message_of(300), chunk, 1024)
    assert error is None


# -- on a stream: policy-violation, the host plan's limit ------------------------------------


@pytest.mark.parametrize("chunk", [None, 1000, 7])
async def test_a_stanza_at_the_plans_limit_is_delivered_one_byte_more_is_refused(
    chunk: int | None,
) -> None:
    limit = 10_240
    async with Harness(limits=HostLimits(message_rate=None, max_stanza_bytes=limit)) as h:
        alice = await h.online("alice")
        bob = await h.online("bob")

        def send(data: bytes) -> None:
            step = chunk or len(data)
            for i in range(0, len(data), step):
                alice.send(data[i : i + step])

        send(message_of(limit))
        got = await bob.wait_for("message")
        assert got.find_text("body") == "x" * (limit - len(message_of(0)))
        send(message_of(limit + 1))
        assert await error_of(alice) == "policy-violation"
        assert alice.transport.closed
        assert [e for e in await bob.recv() if e.name == "message"] == []


async def test_an_endless_stream_header_gets_policy_violation() -> None:
    async with Harness() as h:
        c = h.client()
        c.send(HDR[:-1] + b" x='")
        for _ in range(3):
            c.send(b"a" * 2000)
        await settle()
        assert stream_error_from_raw(c) == "policy-violation"
        assert c.transport.closed
        assert "the stream header is larger than 4096 bytes" in c.raw


async def test_an_endless_websocket_open_gets_policy_violation() -> None:
    async with Harness() as h:
        transport = MemTransport()
        stream = h.server.new_stream(ws=True)
        stream.attach(transport)
        stream.data_received(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0' x='".encode())
        for _ in range(3):
            stream.data_received(b"a" * 2000)
        await settle()
        raw = bytes(transport.data).decode()
        assert "<policy-violation" in raw and "larger than 4096 bytes" in raw
        assert transport.closed

        # an ordinary <open/> is answered with features
        transport = MemTransport()
        stream = h.server.new_stream(ws=True)
        stream.attach(transport)
        stream.data_received(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>".encode())
        await settle()
        assert b"<stream:features" in transport.data and not transport.closed


# -- before sign-in: small elements, so an unfinished one cannot burn the CPU ----------------


def auth_of(size: int) -> bytes:
    """A SASL PLAIN <auth/> for alice of exactly ``size`` bytes (padded with whitespace,
    which SASL ignores)."""
    head = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
    blob = b"AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ=="
    tail = b"</auth>"
    return head + blob + b" " * (size - len(head) - len(blob) - len(tail)) + tail


async def test_before_sign_in_elements_are_limited_to_8_kib_exactly() -> None:
    async with Harness() as h:
        ok = h.client()
        await ok.open()
        ok.send(auth_of(8192))
        assert (await ok.wait_for_any(("success", "failure"))).name == "success"

        big = h.client()
        await big.open()
        big.send(auth_of(8193))
        await settle()
        assert stream_error_from_raw(big) == "policy-violation"
        assert "stanza larger than 8192 bytes" in big.raw


async def test_unfinished_attributes_fed_byte_by_byte_do_not_stall_the_server() -> None:
    """The attack of the finding moved past the header: a valid header, then a start tag
    whose attribute never ends, one byte per read. Expat parses an unfinished tag again on
    every read, so its cost grows with the square of its length: 256 KiB cost minutes of
    CPU per connection. Before sign-in the tag is cut at 8 KiB."""
    import time

    async with Harness() as h:
        attackers = [h.client("198.51.100.66") for _ in range(8)]
        for a in attackers:
            await a.open()
            a.send(b"<iq type='get' id='x' a='")
        started = time.perf_counter()
        for a in attackers:
            for n in range(64 * 1024):
                if a.transport.closed:
                    break
                a.send(b"x")
                assert time.perf_counter() - started < 10, f"stalled after {n} bytes"
            assert a.transport.closed and n <= 8192
        # and a normal login is served at once
        c = h.client()
        assert (await c.login_plain("alice")).name == "success"
