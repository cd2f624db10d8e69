"""XEP-0054: vcard-temp."""

from __future__ import annotations

from ..core.parser import parse_fragment
from .api import (
    NS_CLIENT,
    Element,
    IqTarget,
    IqType,
    Module,
    StanzaError,
    StanzaErrorCondition,
    StanzaEvent,
    result_of,
)
from .common import BLOCKLIST, is_blocked

NS_VCARD = "vcard-temp"
MAX_VCARD_BYTES = 64 * 1024
"""Largest vCard accepted (avatars belong in XEP-0084; this leaves room for a small photo)."""


class VCardModule(Module):
    """XEP-0054 §3.1 (retrieve own), §3.2 (update own), §3.3 (another user's).

    The server stores the ``<vCard/>`` as the user sent it (re-serialised) and answers for
    the account, online or not::

        C: <iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>
        S: <iq type='result' id='v1' to='alice@example.test/res'/>
        C (bob): <iq type='get' id='v2' to='alice@example.test'><vCard xmlns='vcard-temp'/></iq>
        S: <iq type='result' id='v2' from='alice@example.test' to='bob@example.test/res'>
             <vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>

    No vCard yet: an empty ``<vCard/>``. Errors: setting another user's vCard
    ``forbidden``; larger than 64 KiB ``not-acceptable``; a payload that is not a vCard
    ``bad-request``; an account that does not exist, or that blocked the requester,
    ``service-unavailable`` (RFC 6121 §8.5.1, XEP-0191 §3.4).

    vCards do not count toward the plan's storage (``HostLimits.max_storage_bytes``): like the
    roster and the block list they are one bounded profile per account (64 KiB at most, so the
    account limit bounds them), and the storage limit covers exactly the bytes metered and
    billed as storage (offline messages and private XML).
    """

    name = "vcard"

    def load(self) -> None:
        self.ctx.add_feature(NS_VCARD, IqTarget.BOTH)
        self.ctx.iq_handler(NS_VCARD, IqType.GET, self.on_get, IqTarget.ACCOUNT)
        self.ctx.iq_handler(NS_VCARD, IqType.SET, self.on_set, IqTarget.ACCOUNT)

    async def on_get(self, event: StanzaEvent) -> Element:
        ctx = self.ctx
        to = event.to
        session = event.session
        assert to is not None and session is not None
        if to.bare != session.bare_str:
            if not await ctx.stores.auth.account_exists(ctx.domain, to.local):
                raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
            if await self._blocks(to.local, event):
                raise StanzaError(StanzaErrorCondition.SERVICE_UNAVAILABLE)
        stored = await ctx.stores.vcard.get_vcard(ctx.domain, to.local)
        reply = result_of(event.stanza)
        vcard: Element | None = None
        if stored:
            try:
                vcard = parse_fragment(stored)
            except ValueError:
                vcard = None
        reply.children.append(vcard if vcard is not None else Element("vCard", NS_VCARD))
        return reply

    async def _blocks(self, localpart: str, event: StanzaEvent) -> bool:
        sender = event.sender
        if sender is None:
            return False
        sessions = self.ctx.sessions(localpart)
        if sessions:
            blocklist = sessions[0].get(BLOCKLIST)
        else:
            blocklist = frozenset(
                await self.ctx.stores.blocklist.get_blocklist(self.ctx.domain, localpart)
            )
        return is_blocked(blocklist, sender)

    async def on_set(self, event: StanzaEvent) -> Element:
        to = event.to
        session = event.session
        assert to is not None and session is not None
        if to.bare != session.bare_str:
            raise StanzaError(StanzaErrorCondition.FORBIDDEN, "you can only change your own vCard")
        vcard = event.stanza.find("vCard", NS_VCARD)
        if vcard is None:
            raise StanzaError(
                StanzaErrorCondition.BAD_REQUEST, "expected <vCard xmlns='vcard-temp'/>"
            )
        xml = vcard.serialize(NS_CLIENT)
        if len(xml.encode("utf-8")) > MAX_VCARD_BYTES:
            raise StanzaError(
                StanzaErrorCondition.NOT_ACCEPTABLE,
                f"the vCard is larger than {MAX_VCARD_BYTES // 1024} KiB",
            )
        await self.ctx.stores.vcard.set_vcard(self.ctx.domain, session.localpart, xml)
        return result_of(event.stanza)
