"""Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3)."""

from __future__ import annotations

import enum

from .xml import NS_CLIENT, NS_STANZA_ERRORS, NS_STREAM_ERRORS, Element, escape_text


class StreamErrorCondition(enum.StrEnum):
    """RFC 6120 §4.9.3."""

    BAD_FORMAT = "bad-format"
    BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
    CONFLICT = "conflict"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_GONE = "host-gone"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_FROM = "invalid-from"
    INVALID_NAMESPACE = "invalid-namespace"
    INVALID_XML = "invalid-xml"
    NOT_AUTHORIZED = "not-authorized"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    RESOURCE_CONSTRAINT = "resource-constraint"
    RESTRICTED_XML = "restricted-xml"
    SEE_OTHER_HOST = "see-other-host"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNDEFINED_CONDITION = "undefined-condition"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_FEATURE = "unsupported-feature"
    UNSUPPORTED_STANZA_TYPE = "unsupported-stanza-type"
    UNSUPPORTED_VERSION = "unsupported-version"


class StreamError(Exception):
    """Raise to close the stream with this condition and an optional human-readable text."""

    def __init__(self, condition: StreamErrorCondition, text: str = "") -> None:
        super().__init__(f"{condition.value}: {text}" if text else condition.value)
        self.condition = condition
        self.text = text

    def to_xml(self, stream_prefix: str = "stream") -> str:
        """``<stream:error>`` as written inside the stream (RFC 6120 §4.9.2)."""
        text = (
            f"<text xmlns='{NS_STREAM_ERRORS}' xml:lang='en'>{escape_text(self.text)}</text>"
            if self.text
            else ""
        )
        tag = f"{stream_prefix}:error" if stream_prefix else "error"
        return f"<{tag}><{self.condition.value} xmlns='{NS_STREAM_ERRORS}'/>{text}</{tag}>"


class StanzaErrorCondition(enum.StrEnum):
    """RFC 6120 §8.3.3, with the error type §8.3.2 associates by default."""

    BAD_REQUEST = "bad-request"
    CONFLICT = "conflict"
    FEATURE_NOT_IMPLEMENTED = "feature-not-implemented"
    FORBIDDEN = "forbidden"
    GONE = "gone"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    JID_MALFORMED = "jid-malformed"
    NOT_ACCEPTABLE = "not-acceptable"
    NOT_ALLOWED = "not-allowed"
    NOT_AUTHORIZED = "not-authorized"
    POLICY_VIOLATION = "policy-violation"
    RECIPIENT_UNAVAILABLE = "recipient-unavailable"
    REDIRECT = "redirect"
    REGISTRATION_REQUIRED = "registration-required"
    REMOTE_SERVER_NOT_FOUND = "remote-server-not-found"
    REMOTE_SERVER_TIMEOUT = "remote-server-timeout"
    RESOURCE_CONSTRAINT = "resource-constraint"
    SERVICE_UNAVAILABLE = "service-unavailable"
    SUBSCRIPTION_REQUIRED = "subscription-required"
    UNDEFINED_CONDITION = "undefined-condition"
    UNEXPECTED_REQUEST = "unexpected-request"

    @property
    def default_type(self) -> str:
        return _TYPES.get(self, "cancel")


_TYPES = {
    StanzaErrorCondition.BAD_REQUEST: "modify",
    StanzaErrorCondition.JID_MALFORMED: "modify",
    StanzaErrorCondition.NOT_ACCEPTABLE: "modify",
    StanzaErrorCondition.POLICY_VIOLATION: "modify",
    StanzaErrorCondition.CONFLICT: "cancel",
    StanzaErrorCondition.FORBIDDEN: "auth",
    StanzaErrorCondition.NOT_AUTHORIZED: "auth",
    StanzaErrorCondition.REGISTRATION_REQUIRED: "auth",
    StanzaErrorCondition.SUBSCRIPTION_REQUIRED: "auth",
    StanzaErrorCondition.RECIPIENT_UNAVAILABLE: "wait",
    StanzaErrorCondition.RESOURCE_CONSTRAINT: "wait",
    StanzaErrorCondition.REMOTE_SERVER_TIMEOUT: "wait",
    StanzaErrorCondition.INTERNAL_SERVER_ERROR: "cancel",
    StanzaErrorCondition.UNEXPECTED_REQUEST: "wait",
}


class StanzaError(Exception):
    """Raise from a handler to answer the stanza with an error (RFC 6120 §8.3)."""

    def __init__(
        self, condition: StanzaErrorCondition, text: str = "", type_: str | None = None
    ) -> None:
        super().__init__(f"{condition.value}: {text}" if text else condition.value)
        self.condition = condition
        self.text = text
        self.type = type_ or condition.default_type


def make_error_reply(
    stanza: Element,
    condition: StanzaErrorCondition,
    text: str = "",
    type_: str | None = None,
    by: str | None = None,
) -> Element:
    """The error reply to ``stanza`` (RFC 6120 §8.3.1): addresses swapped, payload kept for
    messages and presence (it helps the sender), dropped for iq (§8.3.1 point 4 allows either).
    """
    attrs: dict[str, str] = {"type": "error"}
    sender = stanza.attrs.get("from")
    recipient = stanza.attrs.get("to")
    if sender:
        attrs["to"] = sender
    if recipient:
        attrs["from"] = recipient
    sid = stanza.attrs.get("id")
    if sid is not None:
        attrs["id"] = sid
    children: list[Element | str] = []
    if stanza.name != "iq":
        children = [c for c in stanza.children if isinstance(c, Element) and c.name != "error"]
    reply = Element(stanza.name, stanza.ns or NS_CLIENT, attrs, children)
    err_attrs = {"type": type_ or condition.default_type}
    if by:
        err_attrs["by"] = by
    err = reply.sub("error", attrs=err_attrs)
    err.sub(condition.value, NS_STANZA_ERRORS)
    if text:
        err.sub(
            "text", NS_STANZA_ERRORS, {"{http://www.w3.org/XML/1998/namespace}lang": "en"}, text
        )
    return reply
