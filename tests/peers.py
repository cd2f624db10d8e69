"""Third-party programs the interop tests run (ejabberd, Node.js and xmpp.js, ...).

Where one is missing, a developer's run skips the tests that need it; CI installs them all
(``.ci/run``) and sets ``IMHOST_REQUIRE_PEERS=1``, which turns that skip into a failure, so a
broken install cannot pass as "skipped".
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_PEERS = "IMHOST_REQUIRE_PEERS"


def peers_required() -> bool:
    """True when every peer must be present (``IMHOST_REQUIRE_PEERS=1``, set by ``.ci/run``)."""
    return os.environ.get(REQUIRE_PEERS, "").strip().lower() in {"1", "true", "yes"}


def missing_peer(reason: str) -> NoReturn:
    """Skip (a developer's machine) or fail (CI) because a peer program is missing."""
    if peers_required():
        pytest.fail(f"{reason} ({REQUIRE_PEERS}=1: this run must have it)", pytrace=False)
    pytest.skip(reason)
