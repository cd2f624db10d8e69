"""Modules are registered explicitly: a plain list of classes, checked when the server is made,
and one typed context (no optional capabilities probed with getattr, no string imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import imhost.xmpp
from imhost.xmpp.memory import MemoryBackend
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.blocking import BlockingModule
from imhost.xmpp.modules.defaults import DEFAULT_MODULES
from imhost.xmpp.modules.presence import PresenceModule
from imhost.xmpp.modules.roster import RosterModule
from imhost.xmpp.server import XmppServer

from .harness import DOMAIN, settings

pytestmark = pytest.mark.anyio

XMPP_SRC = Path(imhost.xmpp.__file__).parent
PROBES = {"getattr", "hasattr", "setattr", "__import__"}


def _probes_in(path: Path) -> list[str]:
    """Calls of getattr/hasattr/setattr/__import__, importlib use, and handlers of ImportError."""
    found: list[str] = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        where = f"{path.relative_to(XMPP_SRC)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in PROBES:
                found.append(f"{where} {node.func.id}()")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            uses_importlib = "importlib" in names or (module or "").startswith("importlib")
            # importlib.metadata (the package's version) is a lookup, not an import by name
            if uses_importlib and (module != "importlib" or names != ["metadata"]):
                found.append(f"{where} importlib")
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            caught = ast.unparse(node.type)
            if "ImportError" in caught or "ModuleNotFoundError" in caught:
                found.append(f"{where} except {caught}")
    return found


def test_the_data_plane_has_no_feature_probes_or_string_imports() -> None:
    found = [p for path in sorted(XMPP_SRC.rglob("*.py")) for p in _probes_in(path)]
    assert found == []


def test_the_server_loads_the_default_list_unless_given_one() -> None:
    backend = MemoryBackend()
    assert XmppServer.with_memory_backend(settings(), backend).module_classes == DEFAULT_MODULES
    only = XmppServer.with_memory_backend(settings(), backend, modules=[RosterModule])
    assert only.module_classes == [RosterModule]


def test_a_module_without_what_it_depends_on_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="the presence module needs the roster module"):
        XmppServer.with_memory_backend(settings(), MemoryBackend(), modules=[PresenceModule])
    with pytest.raises(ValueError, match="loaded before it"):
        XmppServer.with_memory_backend(
            settings(), MemoryBackend(), modules=[PresenceModule, RosterModule]
        )


def test_two_modules_of_one_name_are_refused() -> None:
    class OtherRoster(Module):
        name = "roster"

    with pytest.raises(ValueError, match="'roster' is used twice"):
        XmppServer.with_memory_backend(
            settings(), MemoryBackend(), modules=[RosterModule, OtherRoster]
        )


async def test_a_module_finds_its_sibling_on_its_own_server_and_host() -> None:
    """Two servers on one backend (as in tests, or a restart in one process): each host's
    modules see their own siblings, not the other server's."""
    backend = MemoryBackend()
    backend.add_host(DOMAIN)
    backend.add_host("other.test")
    modules: list[type[Module]] = [RosterModule, PresenceModule, BlockingModule]
    servers = [XmppServer.with_memory_backend(settings(), backend, modules=modules)]
    servers.append(XmppServer.with_memory_backend(settings(), backend, modules=modules))
    for server in servers:
        await server.start(listen=False)
    try:
        for server in servers:
            for domain in (DOMAIN, "other.test"):
                roster, presence, blocking = server.router.hosts[domain].modules
                assert isinstance(presence, PresenceModule)
                assert presence.roster is roster
                assert blocking.ctx.module(RosterModule) is roster
                assert blocking.ctx.module(PresenceModule) is presence
    finally:
        for server in servers:
            await server.stop()
