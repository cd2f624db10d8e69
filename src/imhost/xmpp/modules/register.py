"""XEP-0077: In-Band Registration (password change; registration when the host allows it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imhost.kit.jid import prepare_localpart

from .api import (
    Element,
    IqTarget,
    IqType,
    Module,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    result_of,
)

if TYPE_CHECKING:
    from .api import C2SStream

NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
MAX_PASSWORD_CHARS = 1024


class RegisterModule(Module):
    """XEP-0077 §3.3 password change by an authenticated user, with the organisation's
    password policy applied by ``AccountAuth.set_password``::

        C: <iq type='set' id='r1' to='example.test'><query xmlns='jabber:iq:register'>
             <username>alice</username><password>a much better passphrase</password>
           </query></iq>
        S: <iq type='result' id='r1' from='example.test' to='alice@example.test/res'/>

    §3.1 a get answers ``<registered/>`` with the username. Errors: a username other than the
    user's ``not-allowed``; no password ``bad-request``; refused by the policy
    ``not-acceptable`` with the policy's message; ``<remove/>`` (§3.2) ``not-allowed``
    (accounts are removed by the organisation). Registering new accounts before
    authentication (§3.1 with ``<register/>`` in the stream features, where SASL is offered)
    happens only when ``HostLimits.registration_allowed``; otherwise no ``<register/>``
    feature is offered and a registration iq is refused with ``not-allowed``.
    """

    name = "register"

    def load(self) -> None:
        ctx = self.ctx
        ctx.add_feature(NS_REGISTER)
        ctx.iq_handler(NS_REGISTER, IqType.GET, self.on_get, IqTarget.HOST)
        ctx.iq_handler(NS_REGISTER, IqType.SET, self.on_set, IqTarget.BOTH)
        ctx.preauth_iq_handler(NS_REGISTER, self.on_preauth)
        ctx.add_stream_feature(self._register_feature, before_auth=True)

    def _register_feature(self, _session: C2SStream) -> Element | None:
        if not self.ctx.host.limits.registration_allowed:
            return None
        return Element("register", NS_REGISTER_FEATURE)

    async def on_preauth(self, _session: C2SStream, iq: Element) -> Element:
        """§3.1 registration of a new account before authentication (host option, off by
        default): a get lists the fields, a set creates the account through
        ``AccountAuth.register_account`` (limits and password policy apply there)."""
        if not self.ctx.host.limits.registration_allowed:
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED, "this service does not allow registration"
            )
        if iq.get("type") == "get":
            reply = result_of(iq)
            query = reply.sub("query", NS_REGISTER)
            query.sub("instructions", text="Choose a username and a password.")
            query.sub("username")
            query.sub("password")
            return reply
        form = iq.find("query", NS_REGISTER)
        username = form.find_text("username", NS_REGISTER) if form is not None else None
        password = form.find_text("password", NS_REGISTER) if form is not None else None
        if not username or not password:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "username and password needed")
        try:
            localpart = prepare_localpart(username)
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, str(exc)) from None
        auth = self.ctx.stores.auth
        if await auth.account_exists(self.ctx.domain, localpart):
            raise StanzaError(StanzaErrorCondition.CONFLICT, "this username is taken")
        try:
            await auth.register_account(self.ctx.domain, localpart, password)
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, str(exc)) from None
        return result_of(iq)

    def on_get(self, event: StanzaEvent) -> Element:
        session = event.session
        assert session is not None
        reply = result_of(event.stanza)
        query = reply.sub("query", NS_REGISTER)
        query.sub("registered")
        query.sub("username", text=session.localpart)
        query.sub("password")
        return reply

    async def on_set(self, event: StanzaEvent) -> Element:
        session = event.session
        assert session is not None
        if event.to is not None and event.to.local and event.to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "not your account")
        query = event.stanza.find("query", NS_REGISTER)
        if query is None:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "expected a register query")
        if query.find("remove", NS_REGISTER) is not None:
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED,
                "accounts are removed by your organisation's administrators",
            )
        username = query.find_text("username", NS_REGISTER)
        password = query.find_text("password", NS_REGISTER)
        if username is not None and username.strip().lower() != session.localpart:
            raise StanzaError(
                StanzaErrorCondition.NOT_ALLOWED, "you can only change your own password"
            )
        if not password:
            raise StanzaError(StanzaErrorCondition.BAD_REQUEST, "the new password is missing")
        if len(password) > MAX_PASSWORD_CHARS:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, "the password is too long")
        try:
            await self.ctx.stores.auth.set_password(self.ctx.domain, session.localpart, password)
        except ValueError as exc:
            raise StanzaError(StanzaErrorCondition.NOT_ACCEPTABLE, str(exc)) from None
        return result_of(event.stanza)
