"""A small client-side XMPP stream reader for the probes (RFC 6120 §4).

The probe talks to the server as any client would, over its own sockets; it does not use the
data plane's parser (nothing in the control plane imports ``xmpp.core``). lxml's
``XMLPullParser`` (no entities resolved, no DTD, no network) reads the stream incrementally;
each top-level child of ``<stream:stream>`` is handed out whole, and the amount read is
bounded so that a hostile or broken peer cannot grow memory.
"""

from __future__ import annotations

import asyncio
from collections import deque

from lxml import etree

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
MAX_BYTES = 256 * 1024


class StreamProblem(Exception):
    """The peer did not speak XMPP as expected; the message is in plain words."""


def header(domain: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{NS_STREAM}' to='{domain}' version='1.0'>"
    ).encode()


class XmlStream:
    """Reads one XMPP stream; ``restart`` starts a fresh parser (after STARTTLS and SASL)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.read_bytes = 0
        self._parser = new_parser()
        self._depth = 0
        self._opened = False
        self._ready: deque[etree._Element] = deque()
        self.stream_attrs: dict[str, str] = {}

    def restart(self) -> None:
        self._parser = new_parser()
        self._depth = 0
        self._opened = False
        self._ready.clear()

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def open(self, domain: str) -> dict[str, str]:
        """Send the stream header and wait for the server's; returns its attributes."""
        self.restart()
        await self.send(header(domain))
        while not self._opened:
            await self._feed()
        return self.stream_attrs

    async def next_element(self) -> etree._Element:
        """The next top-level element of the stream."""
        while not self._ready:
            await self._feed()
        return self._ready.popleft()

    async def _feed(self) -> None:
        data = await self.reader.read(16384)
        if not data:
            raise StreamProblem("the server closed the connection")
        self.read_bytes += len(data)
        if self.read_bytes > MAX_BYTES:
            raise StreamProblem("the server sent far more data than an XMPP server would")
        try:
            self._parser.feed(data)
            for event, elem in self._parser.read_events():
                if isinstance(elem, etree._Element):
                    self._event(str(event), elem)
        except etree.XMLSyntaxError as exc:
            raise StreamProblem("the server did not answer with an XMPP stream") from exc

    def _event(self, event: str, elem: etree._Element) -> None:
        if event == "start":
            self._depth += 1
            if self._depth == 1:
                if elem.tag != f"{{{NS_STREAM}}}stream":
                    raise StreamProblem("the server did not answer with an XMPP stream")
                self._opened = True
                self.stream_attrs = {str(k): str(v) for k, v in elem.attrib.items()}
            return
        self._depth -= 1
        if self._depth == 0:
            raise StreamProblem("the server closed the XMPP stream")
        if self._depth == 1:
            if elem.tag == f"{{{NS_STREAM}}}error":
                raise StreamProblem(f"the server ended the stream ({stream_error_text(elem)})")
            self._ready.append(elem)
            # keep memory flat: the stream root forgets the children handed out
            parent = elem.getparent()
            if parent is not None:
                parent.remove(elem)


def new_parser() -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )


def parse_frame(frame: str | bytes) -> etree._Element:
    """One complete XML document (a WebSocket frame, RFC 7395), parsed safely."""
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    data = frame.encode() if isinstance(frame, str) else frame
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise StreamProblem("the server sent something that is not XMPP") from exc


def stream_error_text(elem: etree._Element) -> str:
    """The condition and, when given, the text of a stream or SASL error, in plain words."""
    condition = ""
    text = ""
    for child in elem.iterchildren():
        local = str(child.tag).rsplit("}", 1)[-1]
        if local == "text":
            text = (child.text or "").strip()
        elif not condition:
            condition = local.replace("-", " ")
    if condition and text:
        return f"{condition}: {text}"
    return condition or text or "no reason given"
