"""The in-memory host cache the host directory fills and the other adapters read."""

from __future__ import annotations

from dataclasses import dataclass, field

from imhost.xmpp.ports import VirtualHost


@dataclass(frozen=True, slots=True)
class HostEntry:
    host: VirtualHost
    organization_id: str


@dataclass(slots=True)
class HostCache:
    """Hosted domains as this process knows them. Only
    :class:`~imhost.hosting.dataplane.directory.DbHostDirectory` changes it."""

    hosts: dict[str, HostEntry] = field(default_factory=dict)
    removed: dict[str, HostEntry] = field(default_factory=dict)
    """Hosts removed while running: their last usage still needs an organization."""
    loaded: bool = False
    generation: int = 0
    """Counts applied changes, so a snapshot (hosts, an account) read meanwhile is not trusted."""

    def get(self, domain: str) -> HostEntry | None:
        return self.hosts.get(domain)

    def organization_of(self, domain: str) -> str | None:
        entry = self.hosts.get(domain) or self.removed.get(domain)
        return entry.organization_id if entry else None

    def service_id_of(self, domain: str) -> str | None:
        """The service id of a hosted domain (for the storage adapter)."""
        entry = self.hosts.get(domain)
        return None if entry is None else entry.host.service_id

    def usage_owner(self, domain: str) -> tuple[str, str] | None:
        """(organization id, service id) of a host, also of one removed while running."""
        entry = self.hosts.get(domain) or self.removed.get(domain)
        return None if entry is None else (entry.organization_id, entry.host.service_id)
