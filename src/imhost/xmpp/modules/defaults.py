"""The IM modules every virtual host loads (read by ``XmppServer`` at start).

Order matters only for hooks of equal priority; each module sets its own priorities.
"""

from __future__ import annotations

from .api import Module
from .blocking import BlockingModule
from .caps import CapsModule
from .carbons import CarbonsModule
from .csi import CsiModule
from .disco import DiscoModule
from .mam import MamModule
from .muc import MucModule
from .offline import OfflineModule
from .ping import PingModule
from .presence import PresenceModule
from .private import PrivateModule
from .register import RegisterModule
from .roster import RosterModule
from .vcard import VCardModule
from .version import VersionModule

DEFAULT_MODULES: list[type[Module]] = [
    RosterModule,
    PresenceModule,
    BlockingModule,
    CarbonsModule,
    CsiModule,
    OfflineModule,
    MamModule,
    PingModule,
    VersionModule,
    VCardModule,
    PrivateModule,
    RegisterModule,
    DiscoModule,
    CapsModule,
    MucModule,
]
