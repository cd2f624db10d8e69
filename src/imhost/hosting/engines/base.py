"""The provisioning interface of an IM engine.

The built-in engine reads everything through the ports (:mod:`imhost.hosting.ports`) and
learns changes after each commit, so it needs no provisioning calls. An external engine (an
ejabberd cluster a provider already runs) keeps its own user database: hosting calls it
through this interface after the control-plane transaction commits, and a failed call is
retried by the caller (each operation is idempotent: creating an existing account sets its
password, deleting a missing one succeeds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class EngineError(Exception):
    """The engine refused or could not be reached; the message says which and why."""


class ImEngine(ABC):
    """What hosting asks of an IM engine. Domains and localparts are RFC 7622-prepared."""

    name: str = "engine"

    @abstractmethod
    async def create_account(self, domain: str, localpart: str, password: str) -> None:
        """Create the account (or set its password if it exists)."""

    @abstractmethod
    async def delete_account(self, domain: str, localpart: str) -> None:
        """Delete the account and its stored data; closes its sessions."""

    @abstractmethod
    async def set_password(self, domain: str, localpart: str, password: str) -> None: ...

    @abstractmethod
    async def kick_sessions(self, domain: str, localpart: str, reason: str) -> int:
        """Close every session of the account with ``reason``; return how many were closed."""

    @abstractmethod
    async def suspend_host(self, domain: str, reason: str) -> None:
        """Close the host's sessions and refuse logins with ``reason`` until reactivated."""

    @abstractmethod
    async def reactivate_host(self, domain: str) -> None: ...

    @abstractmethod
    async def connected_sessions(self, domain: str) -> int:
        """Sessions open on the host now (for the usage-against-limits view)."""
