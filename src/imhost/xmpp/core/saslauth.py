"""SASL authentication of a client stream (RFC 6120 §6), as a negotiation step.

The mechanisms themselves (SCRAM, PLAIN, the fake credentials of unknown accounts) are in
:mod:`.sasl`; this step offers them in the stream features, runs one exchange at a time,
answers ``<challenge/>``, ``<success/>`` or ``<failure/>``, and on success records who the
client is and restarts the stream (RFC 6120 §6.4.6)::

    C: <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>biws...</auth>
    S: <challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1...</challenge>
    C: <response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1...</response>
    S: <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1...</success>
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .errors import StreamError, StreamErrorCondition
from .negotiation import State
from .sasl import MECHANISMS, Outcome, SaslExchange, Step
from .xml import NS_SASL, Element, escape_text

if TYPE_CHECKING:
    from .stream import C2SStream

NS_CB = "urn:xmpp:sasl-cb:0"
"""XEP-0440: the channel-binding types the server can offer."""


class SaslAuth:
    """RFC 6120 §6 on one stream: the mechanisms offered, the exchange in progress, and the
    failures counted on this connection (too many close it)."""

    __slots__ = ("_exchange", "_failures", "stream")

    def __init__(self, stream: C2SStream) -> None:
        self.stream = stream
        self._exchange: SaslExchange | None = None
        self._failures = 0

    # -- NegotiationStep --------------------------------------------------------------------

    def offer(self) -> str:
        """``<mechanisms/>`` (and XEP-0440 channel-binding types) until authenticated, where
        encryption is good enough for authentication."""
        stream = self.stream
        if stream.authenticated or not stream.secure_enough_for_auth():
            return ""
        mechs = "".join(f"<mechanism>{m}</mechanism>" for m in self.mechanisms())
        out = f"<mechanisms xmlns='{NS_SASL}'>{mechs}</mechanisms>"
        cbs = self.channel_bindings()
        if cbs:
            types = "".join(f"<channel-binding type='{t}'/>" for t in cbs)
            out += f"<sasl-channel-binding xmlns='{NS_CB}'>{types}</sasl-channel-binding>"
        return out

    def negotiate(self, el: Element) -> bool:
        if el.ns != NS_SASL:
            return False
        if self.stream.authenticated:
            raise StreamError(StreamErrorCondition.POLICY_VIOLATION, "already authenticated")
        self._sasl_element(el)
        return True

    # -- what this connection can offer -----------------------------------------------------

    def mechanisms(self) -> list[str]:
        stream = self.stream
        settings = stream.services.settings
        secure = stream.tls or (stream.ws and self._ws_secure())
        out = []
        cbs = self.channel_bindings()
        for name, (h, plus) in MECHANISMS.items():
            if plus and not cbs:
                continue
            if h is None and not (secure or settings.allow_plain_without_tls):
                continue
            out.append(name)
        return out

    def _ws_secure(self) -> bool:
        transport = self.stream.transport
        return bool(transport and transport.get_extra_info("secure", False))

    def channel_bindings(self) -> dict[str, bytes]:
        """RFC 5929 / RFC 9266 data computable on this connection."""
        stream = self.stream
        if not stream.tls or stream.transport is None:
            return {}
        out: dict[str, bytes] = {}
        obj = stream.transport.get_extra_info("ssl_object")
        if obj is not None:
            version = obj.version() or ""
            if version in ("TLSv1.2",):
                try:
                    unique = obj.get_channel_binding("tls-unique")
                except (ValueError, ssl.SSLError):
                    unique = None
                if unique:
                    out["tls-unique"] = unique
        if stream.services.tls_server_end_point:
            out["tls-server-end-point"] = stream.services.tls_server_end_point
        return out

    # -- the exchange -----------------------------------------------------------------------

    def _sasl_element(self, el: Element) -> None:
        stream = self.stream
        name = el.name
        if name == "abort":
            self._exchange = None
            self._sasl_failure("aborted")
            return
        if name == "auth":
            host = stream.host_state
            assert host is not None
            if not stream.secure_enough_for_auth():
                self._sasl_failure("encryption-required", "use STARTTLS first")
                return
            mechanism = el.get("mechanism", "")
            if mechanism not in self.mechanisms():
                self._sasl_failure("invalid-mechanism")
                return
            initial = self._decode_sasl(el)
            if initial is False or initial is True:
                return
            self._exchange = SaslExchange(
                mechanism,
                auth=stream.services.router.stores.auth,
                domain=host.domain,
                address=stream.address,
                secret=stream.services.secret,
                channel_bindings=self.channel_bindings(),
            )
            if not host.active:
                # Told only after a right password: a stranger learns nothing of the reason.
                self._exchange.suspended_reason = host.vhost.status_reason or "service suspended"
            stream.hold_input()
            stream.run_in_order(self._sasl_step(self._exchange.start(initial)))
            return
        if name == "response":
            if self._exchange is None:
                self._sasl_failure("malformed-request", "no exchange in progress")
                return
            data = self._decode_sasl(el)
            if data is False or data is True:
                return
            stream.hold_input()
            stream.run_in_order(self._sasl_step(self._exchange.step(data or b"")))
            return
        raise StreamError(StreamErrorCondition.BAD_FORMAT, f"unexpected SASL element {name}")

    def _decode_sasl(self, el: Element) -> bytes | bool | None:
        text = el.text.strip()
        if not text:
            return None
        if text == "=":
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self._exchange = None
            self._sasl_failure("incorrect-encoding")
            return False

    async def _sasl_step(self, pending: Awaitable[Outcome]) -> None:
        stream = self.stream
        outcome = await pending
        if stream.state is State.CLOSED:
            return
        if outcome.step is Step.CHALLENGE:
            data = base64.b64encode(outcome.data).decode() if outcome.data else ""
            stream.write(f"<challenge xmlns='{NS_SASL}'>{data}</challenge>")
            return
        if outcome.delay_seconds > 0:
            # The brute-force model's delay, before any final answer (right or wrong alike,
            # so that waiting tells nothing).
            await asyncio.sleep(outcome.delay_seconds)
            if stream.closed:
                return
        if outcome.step is Step.SUCCESS:
            self._exchange = None
            data = base64.b64encode(outcome.data).decode() if outcome.data else ""
            stream.write(f"<success xmlns='{NS_SASL}'>{data}</success>")
            stream.authenticated_as(outcome.localpart)
            return
        self._exchange = None
        host = stream.host_state
        if host is not None:
            host.counters.auth_failures += 1
        stream.services.auth_failures_total += 1
        self._sasl_failure(outcome.condition, outcome.text)

    def _sasl_failure(self, condition: str, text: str = "") -> None:
        """RFC 6120 §6.4.5; too many failures on one connection close it."""
        stream = self.stream
        extra = f"<text xml:lang='en'>{escape_text(text)}</text>" if text else ""
        stream.write(f"<failure xmlns='{NS_SASL}'><{condition}/>{extra}</failure>")
        if condition not in ("aborted", "invalid-mechanism"):
            self._failures += 1
        if self._failures >= stream.services.settings.max_auth_failures_per_connection:
            stream.fail(
                StreamError(
                    StreamErrorCondition.POLICY_VIOLATION, "too many authentication failures"
                )
            )
