"""XEP-0160 (offline messages) and XEP-0203 (delay stamp): what the core leaves to a module."""

from __future__ import annotations

from .api import Hook, Module, StanzaEvent

NS_HINTS = "urn:xmpp:hints"
FEATURE_MSGOFFLINE = "msgoffline"


class OfflineModule(Module):
    """XEP-0160 §4 best practices, on top of the core's storage.

    The core stores a chat/normal message with a body for an account with no available
    resource (up to the host's ``max_offline_messages`` per account and its plan's storage,
    ``max_storage_bytes``, shared with private XML; past either ``service-unavailable``, as
    XEP-0160 §2 step 3 says, with a text naming which limit was reached) and
    delivers it at the next initial presence with
    ``<delay xmlns='urn:xmpp:delay' from='example.test' stamp='...'>`` (XEP-0203). This module
    advertises ``msgoffline`` (XEP-0160 §5) and honours the XEP-0334 hints
    ``<no-store/>`` and ``<no-permanent-store/>``::

        C: <message to='carol@example.test' type='chat'><body>typing...</body>
             <no-store xmlns='urn:xmpp:hints'/></message>
        (carol offline: not stored, no error)
    """

    name = "offline"

    def load(self) -> None:
        self.ctx.add_feature(FEATURE_MSGOFFLINE)
        self.ctx.hook(Hook.OFFLINE_STORE, self.on_store)

    def on_store(self, event: StanzaEvent) -> bool:
        stanza = event.stanza
        for child in stanza.elements():
            if child.ns == NS_HINTS and child.name in ("no-store", "no-permanent-store"):
                return True
        return False
