"""A hardened, incremental XML stream parser on expat.

RFC 6120 §11 restricts what an XMPP stream may contain: no DTD, no comments, no processing
instructions, no entity references other than the five predefined ones (§11.1), UTF-8 only
(§11.6). This parser refuses all of them as soon as expat reports them (so Billion Laughs and
the CVE-2022-0217 class never expand), and enforces limits on stanza size, depth, attribute
count and name length *while* parsing: after every chunk the bytes buffered for the current
stanza are checked, and every start tag is checked when expat reports it.
"""

from __future__ import annotations

import pyexpat
from collections.abc import Callable

from .errors import StreamError, StreamErrorCondition
from .xml import NS_STREAMS, Element, escape_attr

_SEP = "\x01"
"""Separator expat puts between namespace URI and local name (cannot occur in either)."""


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
    """

    __slots__ = (
        "_base",
        "_decls",
        "_depth",
        "_fed",
        "_header_bytes",
        "_mark",
        "_parser",
        "_paused",
        "_primed",
        "_stack",
        "_stream_ns",
        "max_attrs",
        "max_depth",
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
        header: bytes | None = None,
    ) -> None:
        self.on_header = on_header
        self.on_stanza = on_stanza
        self.on_end = on_end
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.max_attrs = max_attrs
        self.max_name = max_name
        self._stack: list[Element] = []
        self._depth = 0
        self._fed = 0
        self._base = 0
        self._mark = 0
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
            self._fed = self._base = self._mark = len(header)

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
    def at_boundary(self) -> bool:
        """True when no stanza is in progress and no input is buffered inside expat."""
        return self._depth == 1 and self._mark >= self._fed

    def pause(self) -> None:
        self._paused = True

    def feed(self, data: bytes) -> bytes:
        """Parse ``data``; return the unparsed remainder if a handler paused, else ``b""``.

        Raises :class:`StreamError` for anything RFC 6120 §11 forbids or a limit exceeded.
        """
        self._base = self._fed
        self._fed += len(data)
        try:
            self._parser.Parse(data, False)
        except _Pause:
            index = self._parser.CurrentByteIndex - self._base
            end = data.find(b">", max(index, 0))
            return data[end + 1 :] if end >= 0 else b""
        except pyexpat.ExpatError as exc:
            raise StreamError(StreamErrorCondition.NOT_WELL_FORMED, str(exc)) from None
        except RecursionError:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "too deep") from None
        if self._depth >= 1 and self._fed - self._mark > self.max_stanza_bytes:
            raise StreamError(
                StreamErrorCondition.POLICY_VIOLATION,
                f"stanza larger than {self.max_stanza_bytes} bytes",
            )
        return b""

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
            self._mark = self._base + max(self._parser.CurrentByteIndex - self._base, 0)
            self._stack.append(el)
            return
        self._stack[-1].children.append(el)
        self._stack.append(el)

    def _end(self, qname: str) -> None:
        depth = self._depth - 1
        self._depth = depth
        if depth == 0:
            self.on_end()
            return
        el = self._stack.pop()
        if depth == 1:
            self._mark = self._fed
            self.on_stanza(el)
            if self._paused:
                raise _Pause

    def _chars(self, data: str) -> None:
        if self._depth >= 2:
            children = self._stack[-1].children
            children.append(data)
        elif self._depth == 1:
            if not data.isspace():
                raise StreamError(StreamErrorCondition.BAD_FORMAT, "text at stream level")
            # whitespace keepalive (RFC 6120 §4.6.1)
            self._mark = self._fed

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
