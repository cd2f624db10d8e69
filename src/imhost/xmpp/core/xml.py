"""A minimal element tree with slots, and its serialiser.

Every stanza the server emits is built from these objects and re-serialised (RFC 6120 §11.4:
never forward raw bytes). Names are namespace-qualified: ``el.ns`` is the namespace URI and
``el.name`` the local name. Attributes in a namespace (only ``xml:lang`` in practice) are keyed
``"{uri}local"``; unqualified attributes by their plain name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import overload

NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_SM = "urn:xmpp:sm:3"
NS_DELAY = "urn:xmpp:delay"
NS_XML = "http://www.w3.org/XML/1998/namespace"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
XML_LANG = "{" + NS_XML + "}lang"


def escape_text(value: str) -> str:
    """Escape character data (XML 1.0 §2.4)."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    return value


def escape_attr(value: str) -> str:
    """Escape an attribute value for single or double quotes (XML 1.0 §3.3.3)."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "'" in value:
        value = value.replace("'", "&apos;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value or "\r" in value or "\t" in value:
        value = value.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return value


class Element:
    """An XML element: namespace, local name, attributes and mixed children (str or Element)."""

    __slots__ = ("attrs", "children", "name", "ns")

    def __init__(
        self,
        name: str,
        ns: str = NS_CLIENT,
        attrs: dict[str, str] | None = None,
        children: list[Element | str] | None = None,
    ) -> None:
        self.name = name
        self.ns = ns
        self.attrs: dict[str, str] = attrs if attrs is not None else {}
        self.children: list[Element | str] = children if children is not None else []

    # -- reading ----------------------------------------------------------------------------

    @overload
    def get(self, key: str) -> str | None: ...

    @overload
    def get(self, key: str, default: str) -> str: ...

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.attrs.get(key, default)

    @property
    def text(self) -> str:
        """Concatenated direct character data."""
        return "".join(c for c in self.children if isinstance(c, str))

    def elements(self) -> Iterator[Element]:
        for c in self.children:
            if isinstance(c, Element):
                yield c

    def find(self, name: str, ns: str | None = None) -> Element | None:
        """First child element with this local name (and namespace, if given)."""
        for c in self.children:
            if isinstance(c, Element) and c.name == name and (ns is None or c.ns == ns):
                return c
        return None

    def find_ns(self, ns: str) -> Element | None:
        """First child element in namespace ``ns``."""
        for c in self.children:
            if isinstance(c, Element) and c.ns == ns:
                return c
        return None

    def find_text(self, name: str, ns: str | None = None) -> str | None:
        child = self.find(name, ns)
        return child.text if child is not None else None

    # -- building ---------------------------------------------------------------------------

    def append(self, child: Element | str) -> Element | str:
        self.children.append(child)
        return child

    def sub(
        self,
        name: str,
        ns: str | None = None,
        attrs: dict[str, str] | None = None,
        text: str | None = None,
    ) -> Element:
        """Append and return a new child element (same namespace as self by default)."""
        child = Element(name, self.ns if ns is None else ns, attrs)
        if text is not None:
            child.children.append(text)
        self.children.append(child)
        return child

    def copy(self) -> Element:
        """A deep copy (children elements copied, strings shared)."""
        return Element(
            self.name,
            self.ns,
            dict(self.attrs),
            [c.copy() if isinstance(c, Element) else c for c in self.children],
        )

    # -- writing ----------------------------------------------------------------------------

    def serialize(self, parent_ns: str = NS_CLIENT) -> str:
        """Serialise; ``xmlns`` is written where the namespace differs from ``parent_ns``."""
        return _serialize(self, parent_ns)

    def __repr__(self) -> str:
        return f"<Element {self.serialize('')[:200]}>"


_str = str


def _attr_text(el: Element) -> str:
    return "".join(
        [
            f" {key}='{escape_attr(value)}'" if key[0] != "{" else _qualified_attr(key, value, i)
            for i, (key, value) in enumerate(el.attrs.items())
        ]
    )


def _qualified_attr(key: str, value: str, index: int) -> str:
    uri, _, local = key[1:].partition("}")
    if uri == NS_XML:
        return f" xml:{local}='{escape_attr(value)}'"
    prefix = f"ns{index}"
    return f" xmlns:{prefix}='{escape_attr(uri)}' {prefix}:{local}='{escape_attr(value)}'"


def _serialize(el: Element, parent_ns: str) -> str:
    """Hot path: one f-string per element, children joined (no per-token appends)."""
    name = el.name
    ns = el.ns
    head = name if ns == parent_ns else f"{name} xmlns='{escape_attr(ns)}'"
    attrs = _attr_text(el) if el.attrs else ""
    children = el.children
    if not children:
        return f"<{head}{attrs}/>"
    if len(children) == 1:
        child = children[0]
        inner = (
            escape_text(child) if child.__class__ is _str else _serialize(child, ns)  # type: ignore[arg-type]
        )
    else:
        inner = "".join(
            [
                escape_text(c) if c.__class__ is _str else _serialize(c, ns)  # type: ignore[arg-type]
                for c in children
            ]
        )
    return f"<{head}{attrs}>{inner}</{name}>"
