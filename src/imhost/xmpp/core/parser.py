"""A hardened, incremental XML stream parser on expat.

RFC 6120 §11 restricts what an XMPP stream may contain: no DTD, no comments, no processing
instructions, no entity references other than the five predefined ones (§11.1), UTF-8 only
(§11.6). This parser refuses all of them as soon as expat reports them (so Billion Laughs and
the CVE-2022-0217 class never expand), and enforces limits on stanza size, depth, attribute
count and name length *while* parsing, at the byte: expat is never given more than the limit's
worth of bytes of one top-level element (see :meth:`StreamParser.feed`), and every start tag is
checked when expat reports it. The stream header has its own small bound
(:data:`MAX_HEADER_BYTES`), since it is not a stanza.
"""

from __future__ import annotations

import pyexpat
from collections.abc import Callable

from .errors import StreamError, StreamErrorCondition
from .xml import NS_STREAMS, Element, escape_attr

_SEP = "\x01"
"""Separator expat puts between namespace URI and local name (cannot occur in either)."""


MAX_HEADER_BYTES = 4096
"""Bytes allowed from the start of a stream up to the end of its header (XML declaration,
``<stream:stream ...>``; on WebSocket the ``<open/>`` element). Real headers take 200-400."""

_CACHE_MAX = 4096
_QNAMES: dict[str, tuple[str, str]] = {}
"""Expat qualified names already split (bounded: names are few in practice)."""
_PLAIN_KEYS: set[str] = set()
"""Attribute names already checked (short, no namespace)."""


class _Pause(Exception):
    """Raised inside a handler to stop parsing after the current top-level element."""


StanzaHandler = Callable[[Element], None]
HeaderHandler = Callable[[str, str, dict[str, str], str], None]


class StreamParser:
    """Feed bytes; get a callback for the stream header and one per top-level element.

    ``on_header(ns, name, attrs, default_ns)`` gets the root element's namespace and name,
    its attributes (names as in :class:`Element`) and the default namespace declared on it.
    ``on_stanza(el)`` gets each complete depth-1 element; ``on_end()`` the stream's end tag.

    A handler may call :meth:`pause`: parsing stops right after the current element and
    :meth:`feed` returns the bytes not yet parsed. The parser cannot continue after a pause;
    create a new one with :meth:`resume_copy` (primed with the same stream header).

    Size limits are exact: a top-level element of ``max_stanza_bytes`` bytes (from its ``<``
    to the ``>`` of its end tag) passes, one byte more is refused, and expat never sees more
    than that many of its bytes, however large the chunk that brought them. The header is
    bounded the same way by ``max_header_bytes``; ``first_element_limit`` bounds the first
    top-level element instead of ``max_stanza_bytes`` (RFC 7395's ``<open/>``, which stands
    for the header on a WebSocket).
    """

    __slots__ = (
        "_base",
        "_decls",
        "_depth",
        "_ended",
        "_fed",
        "_header_bytes",
        "_parser",
        "_paused",
        "_primed",
        "_seek",
        "_stack",
        "_start_at",
        "_stream_ns",
        "first_element_limit",
        "max_attrs",
        "max_depth",
        "max_header_bytes",
        "max_name",
        "max_stanza_bytes",
        "on_end",
        "on_header",
        "on_stanza",
    )

    def __init__(
        self,
        on_header: HeaderHandler,
        on_stanza: StanzaHandler,
        on_end: Callable[[], None],
        *,
        max_stanza_bytes: int = 262_144,
        max_depth: int = 32,
        max_attrs: int = 64,
        max_name: int = 256,
        max_header_bytes: int = MAX_HEADER_BYTES,
        first_element_limit: int | None = None,
        header: bytes | None = None,
    ) -> None:
        self.on_header = on_header
        self.on_stanza = on_stanza
        self.on_end = on_end
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self.max_name = max_name
        self.max_header_bytes = max_header_bytes
        self.first_element_limit = first_element_limit
        self._stack: list[Element] = []
        self._depth = 0
        self._fed = 0
        """Bytes given to expat so far (absolute positions count from the stream's start)."""
        self._base = 0
        """Absolute position of the first byte of the chunk being fed."""
        self._start_at = -1
        """Absolute position of the ``<`` of the top-level element in progress (-1: none)."""
        self._seek = 0
        """Where to look for the next top-level element's ``<``: after the last one's end."""
        self._ended = False
        self._paused = False
        self._stream_ns = ""
        self._header_bytes = header
        self._primed = False
        self._decls: dict[str, str] = {}
        self._parser = self._make()
        if header is not None:
            self._primed = True
            self._parser.Parse(header, False)
            self._primed = False
            self._fed = self._base = self._seek = len(header)

    def _make(self) -> pyexpat.XMLParserType:
        p = pyexpat.ParserCreate("UTF-8", _SEP)
        p.buffer_text = True
        p.buffer_size = 4096  # text arrives in chunks of at most this
        p.ordered_attributes = False
        p.specified_attributes = True
        p.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        p.StartDoctypeDeclHandler = self._forbidden_dtd
        p.EntityDeclHandler = self._forbidden_entity
        p.UnparsedEntityDeclHandler = self._forbidden_entity
        p.NotationDeclHandler = self._forbidden_entity
        p.ExternalEntityRefHandler = self._forbidden_external
        p.SkippedEntityHandler = self._forbidden_skipped
        p.CommentHandler = self._forbidden_comment
        p.ProcessingInstructionHandler = self._forbidden_pi
        p.XmlDeclHandler = self._xml_decl
        p.StartNamespaceDeclHandler = self._ns_decl
        return p

    def _ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if self._depth == 0:
            if len(self._decls) > 16:
                raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "too many namespaces")
            self._decls[prefix or ""] = uri or ""

    def _synthetic_header(self, ns: str, name: str) -> bytes:
        """Re-create the root start tag from its namespace declarations (for priming)."""
        prefix = ""
        for p, uri in self._decls.items():
            if p and uri == ns:
                prefix = p
                break
        tag = f"{prefix}:{name}" if prefix else name
        decls = "".join(
            f" xmlns:{p}='{escape_attr(u)}'" if p else f" xmlns='{escape_attr(u)}'"
            for p, u in self._decls.items()
        )
        return f"<{tag}{decls}>".encode()

    # -- public -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def header_bytes(self) -> bytes | None:
        """The raw stream header as received (used to prime a fresh parser)."""
        return self._header_bytes

    @property
    def bytes_parsed(self) -> int:
        """Bytes given to expat so far (a primed header included)."""
        return self._fed

    @property
    def at_boundary(self) -> bool:
        """True when no stanza is in progress and no input is buffered inside expat."""
        return self._depth == 1 and self._start_at < 0

    def pause(self) -> None:
        self._paused = True

    def feed(self, data: bytes) -> bytes:
        """Parse ``data``; return the unparsed remainder if a handler paused, else ``b""``.

        Raises :class:`StreamError` for anything RFC 6120 §11 forbids or a limit exceeded.

        The chunk is given to expat in slices that end where the element in progress would
        pass its limit. Between top-level elements only whitespace is allowed, and ``<``
        cannot occur inside a tag (not even in an attribute value), so the next ``<`` after
        the last element's end tag is the exact start of the next element; an element still
        open when expat has seen its limit's worth of bytes, with more to come, is too large.
        """
        base = self._base = self._fed
        end = base + len(data)
        pos = base
        try:
            while pos < end:
                stop = self._allowed_end(data, base)
                if stop <= pos:
                    raise self._too_large()
                if stop >= end:
                    stop = end
                    piece = data if pos == base else data[pos - base :]
                else:
                    piece = data[pos - base : stop - base]
                self._fed = stop
                self._parser.Parse(piece, False)
                pos = stop
        except _Pause:
            after = max(self._parser.CurrentByteIndex - base + 1, 0)
            index = data.find(b"<", after)
            return data[index:] if index >= 0 else b""
        except pyexpat.ExpatError as exc:
            raise StreamError(StreamErrorCondition.NOT_WELL_FORMED, str(exc)) from None
        except RecursionError:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "too deep") from None
        self._locate(data, base)
        return b""

    def _allowed_end(self, data: bytes, base: int) -> int:
        """The absolute position expat may be fed up to (exclusive) under the limits."""
        if self._depth == 0:
            if self._ended:
                return base + len(data)  # after the stream's end: expat refuses the rest
            # up to the next '>' only: what follows the header must be bounded as a stanza
            index = data.find(b">", max(self._fed - base, 0))
            stop = base + index + 1 if index >= 0 else base + len(data)
            return min(stop, self.max_header_bytes)
        self._locate(data, base)
        if self._start_at < 0:
            return base + len(data)  # whitespace only (keepalives) until the chunk's end
        return self._start_at + self._element_limit()

    def _locate(self, data: bytes, base: int) -> None:
        """Find the ``<`` that starts the next top-level element, if it has arrived."""
        if self._depth == 1 and self._start_at < 0:
            index = data.find(b"<", max(self._seek - base, 0))
            if index >= 0:
                self._start_at = base + index
            else:
                self._seek = max(self._seek, base + len(data))

    def _element_limit(self) -> int:
        first = self.first_element_limit
        return first if first is not None else self.max_stanza_bytes

    def _too_large(self) -> StreamError:
        if self._depth == 0:
            text = f"the stream header is larger than {self.max_header_bytes} bytes"
        elif self.first_element_limit is not None:
            text = f"the stream header is larger than {self.first_element_limit} bytes"
        else:
            text = f"stanza larger than {self.max_stanza_bytes} bytes"
        return StreamError(StreamErrorCondition.POLICY_VIOLATION, text)

    def resume_copy(self) -> StreamParser:
        """A fresh parser in the same stream (after a pause), primed with the header."""
        return StreamParser(
            self.on_header,
            self.on_stanza,
            self.on_end,
            max_stanza_bytes=self.max_stanza_bytes,
            max_depth=self.max_depth,
            max_attrs=self.max_attrs,
            max_name=self.max_name,
            max_header_bytes=self.max_header_bytes,
            header=self._header_bytes,
        )

    def close(self) -> None:
        """Drop references so that a closed connection frees its parser at once."""
        p = self._parser
        p.StartElementHandler = None
        p.EndElementHandler = None
        try:
            # replacing the handler flushes buffered text into the old one, which may object
            p.CharacterDataHandler = None
        except (StreamError, _Pause):
            p.CharacterDataHandler = None
        self._stack.clear()

    # -- expat handlers ---------------------------------------------------------------------

    def _start(self, qname: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        if depth >= self.max_depth:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "elements nested too deep")
        if len(attrs) > self.max_attrs:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "too many attributes")
        split = _QNAMES.get(qname)
        if split is None:
            if len(qname) > self.max_name:
                raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "element name too long")
            ns, _sep, name = qname.rpartition(_SEP)
            if len(_QNAMES) < _CACHE_MAX:
                _QNAMES[qname] = (ns, name)
        else:
            ns, name = split
        if attrs:
            fixed = False
            for key in attrs:
                if key in _PLAIN_KEYS:
                    continue
                if len(key) > self.max_name:
                    raise StreamError(
                        StreamErrorCondition.POLICY_VIOLATION, "attribute name too long"
                    )
                if _SEP in key:
                    fixed = True
                elif len(_PLAIN_KEYS) < _CACHE_MAX:
                    _PLAIN_KEYS.add(key)
            if fixed:
                qualified: dict[str, str] = {}
                for key, value in attrs.items():
                    uri, _, local = key.rpartition(_SEP)
                    qualified["{" + uri + "}" + local if uri else local] = value
                attrs = qualified
        el = Element(name, ns, attrs)
        self._depth = depth + 1
        if depth == 0:
            self._seek = self._parser.CurrentByteIndex + 1
            if self._primed:
                return
            self._stream_ns = ns
            self._parser.StartNamespaceDeclHandler = None
            if self._header_bytes is None:
                self._header_bytes = self._synthetic_header(ns, name)
            self.on_header(ns, name, attrs, self._decls.get("", ""))
            return
        if depth == 1:
            if name == "stream" and ns == NS_STREAMS:
                raise StreamError(StreamErrorCondition.BAD_FORMAT, "nested stream header")
            self._start_at = self._parser.CurrentByteIndex
            self._stack.append(el)
            return
        self._stack[-1].children.append(el)
        self._stack.append(el)

    def _end(self, qname: str) -> None:
        depth = self._depth - 1
        self._depth = depth
        if depth == 0:
            self._ended = True
            self.on_end()
            return
        el = self._stack.pop()
        if depth == 1:
            self._start_at = -1
            self._seek = self._parser.CurrentByteIndex + 1
            self.first_element_limit = None
            self.on_stanza(el)
            if self._paused:
                raise _Pause

    def _chars(self, data: str) -> None:
        if self._depth >= 2:
            children = self._stack[-1].children
            children.append(data)
        elif self._depth == 1 and not data.isspace():
            # only whitespace (keepalives, RFC 6120 §4.6.1) may stand between stanzas
            raise StreamError(StreamErrorCondition.BAD_FORMAT, "text at stream level")

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.upper() not in ("UTF-8", "UTF8"):
            raise StreamError(StreamErrorCondition.UNSUPPORTED_ENCODING, "only UTF-8 is allowed")

    def _forbidden_dtd(self, *args: object) -> None:
        raise StreamError(StreamErrorCondition.RESTRICTED_XML, "DTDs are not allowed")

    def _forbidden_entity(self, *args: object) -> None:
        raise StreamError(
            StreamErrorCondition.RESTRICTED_XML, "entity declarations are not allowed"
        )

    def _forbidden_external(self, *args: object) -> int:
        raise StreamError(StreamErrorCondition.RESTRICTED_XML, "external entities are not allowed")

    def _forbidden_skipped(self, *args: object) -> None:
        raise StreamError(StreamErrorCondition.RESTRICTED_XML, "entity references are not allowed")

    def _forbidden_comment(self, *args: object) -> None:
        raise StreamError(StreamErrorCondition.RESTRICTED_XML, "comments are not allowed")

    def _forbidden_pi(self, *args: object) -> None:
        raise StreamError(
            StreamErrorCondition.RESTRICTED_XML, "processing instructions are not allowed"
        )


def is_stream_header(ns: str, name: str) -> bool:
    return ns == NS_STREAMS and name == "stream"


_FRAGMENT_HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def parse_fragment(xml: str, max_bytes: int = 16 * 1024 * 1024) -> Element:
    """Parse one serialised stanza (e.g. from a store) with the same hardened rules."""
    found: list[Element] = []
    parser = StreamParser(
        lambda ns, n, a, d: None,
        found.append,
        lambda: None,
        max_stanza_bytes=max_bytes,
        header=_FRAGMENT_HEADER,
    )
    try:
        parser.feed(xml.encode("utf-8"))
    except StreamError as exc:
        raise ValueError(str(exc)) from None
    if len(found) != 1 or parser.depth != 1:
        raise ValueError("not exactly one complete element")
    return found[0]
