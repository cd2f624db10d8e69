"""The hardened parser, a replayed corpus of malformed inputs, and a bounded fuzz test.

Properties: whatever bytes arrive, the server never fails internally
(no ``internal-server-error``), everything it writes is well-formed XML, and a refused input
closes the connection. Inputs that once broke something go into ``corpus/`` and are replayed
on every run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imhost.xmpp.core.errors import StreamError
from imhost.xmpp.core.parser import StreamParser, parse_fragment
from imhost.xmpp.core.xml import Element

from .harness import HEADER, Client, Harness

CORPUS = Path(__file__).parent / "corpus"


def collect(data: bytes, chunk: int = 7, **kw: int) -> tuple[list[Element], StreamError | None]:
    out: list[Element] = []
    parser = StreamParser(lambda *a: None, out.append, lambda: None, **kw)
    try:
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    except StreamError as exc:
        return out, exc
    return out, None


HDR = HEADER.format(to="example.test").encode()


def test_incremental_parse_any_chunking() -> None:
    doc = HDR + b"<message to='a@b'><body>x &amp; y</body></message><presence/>"
    for chunk in (1, 2, 3, 5, 64):
        els, err = collect(doc, chunk)
        assert err is None
        assert [e.name for e in els] == ["message", "presence"]
        assert els[0].find_text("body") == "x & y"


def test_roundtrip_escaping() -> None:
    el = Element("message", attrs={"to": "a'\"<>&\n"})
    el.sub("body", text="<&>\r]]>")
    again = parse_fragment(el.serialize())
    assert again.attrs["to"] == "a'\"<>&\n"
    assert again.find_text("body") == "<&>\r]]>"


def test_namespaced_attributes_and_xml_lang() -> None:
    els, err = collect(HDR + b"<message xml:lang='fr' xmlns:x='urn:x' x:k='v'/>")
    assert err is None
    el = els[0]
    assert el.attrs["{http://www.w3.org/XML/1998/namespace}lang"] == "fr"
    assert el.attrs["{urn:x}k"] == "v"
    again = parse_fragment(el.serialize())
    assert again.attrs == el.attrs


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!DOCTYPE a>", "restricted-xml"),
        (HDR + b"<!-- c -->", "restricted-xml"),
        (HDR + b"<?pi x?>", "restricted-xml"),
        (HDR + b"<a>&ent;</a>", "not-well-formed"),
        (HDR + b"<a>\xff</a>", "not-well-formed"),
        (HDR + b"<a b='1' b='2'/>", "not-well-formed"),
    ],
)
def test_refusals(data: bytes, condition: str) -> None:
    _, err = collect(data)
    assert err is not None and err.condition.value == condition


def test_limits_while_parsing() -> None:
    _, err = collect(HDR + b"<a>" + b"x" * 5000, chunk=1000, max_stanza_bytes=2048)
    assert err is not None and err.condition.value == "policy-violation"
    _, err = collect(HDR + b"<a " + b"x" * 300 + b"='1'/>", max_name=64)
    assert err is not None and err.condition.value == "policy-violation"
    _, err = collect(HDR + b"<a><b><c><d><e>", max_depth=4)
    assert err is not None and err.condition.value == "policy-violation"
    # a huge attribute value in a start tag that never completes still trips the limit
    _, err = collect(HDR + b"<a x='" + b"y" * 10_000, chunk=500, max_stanza_bytes=2048)
    assert err is not None and err.condition.value == "policy-violation"


# -- end to end: corpus and fuzz against a stream -------------------------------------------


def check_output(client: Client) -> None:
    raw = client.raw
    assert "internal-server-error" not in raw, raw[-500:]
    client._pump()  # must parse as XML: raises if the server wrote something broken


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.xml")), ids=lambda p: p.name)
def test_corpus_is_refused_cleanly(path: Path) -> None:
    async def run() -> None:
        async with Harness() as h:
            client = h.client()
            data = path.read_bytes()
            for i in range(0, len(data), 13):
                client.send(data[i : i + 13])
            await client.recv()
            check_output(client)
            assert client.transport.closed, "a malformed input must close the stream"

    asyncio.run(run())


_fragments = st.sampled_from(
    [
        b"<message to='bob@example.test'><body>hi</body></message>",
        b"<presence/>",
        b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
        b"<iq type='set' id='2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        b"<r xmlns='urn:xmpp:sm:3'/>",
        b"<a xmlns='urn:xmpp:sm:3' h='99'/>",
        b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        b"</stream:stream>",
        b"<message to='@@'/>",
        b"<message to='x@other.test' type='error'/>",
        b" ",
        b"<",
        b">",
        b"&amp;",
        b"\xc3",
        b"<!--",
        b"]]>",
        b"<stream:stream>",
        b"<body>",
        b"</body>",
    ]
)
_noise = st.binary(min_size=0, max_size=40)
_inputs = st.lists(st.one_of(_fragments, _noise), min_size=1, max_size=12)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(pieces=_inputs, logged_in=st.booleans())
def test_fuzz_stream(pieces: list[bytes], logged_in: bool) -> None:
    async def run() -> None:
        async with Harness() as h:
            if logged_in:
                client = await h.online("alice")
                await h.online("bob")
            else:
                client = h.client()
                client.send(HDR)
            for piece in pieces:
                if client.transport.closed:
                    break
                client.send(piece)
            await client.recv(30)
            try:
                check_output(client)
            except Exception:
                print("FAILING INPUT", pieces, logged_in, client.raw[-600:])
                raise
            if logged_in and not client.transport.closed:
                # the session still routes
                client.send("<message to='bob@example.test'><body>still ok</body></message>")
                await client.recv()
                check_output(client)

    asyncio.run(run())
