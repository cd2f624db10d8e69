"""XEP-0045 Multi-User Chat: the conference service (``conference.<domain>``) of a host.

:mod:`.room` holds a room's state and its configuration form; :mod:`.service` is the module.
"""

from .service import MucModule

__all__ = ["MucModule"]
