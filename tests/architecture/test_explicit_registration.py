"""Parts are registered by explicit imports that mypy and import-linter can see.

Outside the data plane (``xmpp/``, whose module loading is its own), no module is imported
by a name in a string, no import error is swallowed to make a part optional, and no helper
exists to do either: a router, a page, a job, a subscriber or a sub-command is listed by
importing it. A missing part then fails at start, by name, instead of silently vanishing.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "imhost"

# db/registry.py lists the model modules by name: the database layer stands below every
# package that owns tables, so importing them by name there keeps the import direction.
ALLOWED_STRING_IMPORTS = {"db/registry.py"}
DYNAMIC_IMPORTS = {"import_module", "__import__", "optional_module"}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] != "xmpp")


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _caught(handler: ast.ExceptHandler) -> set[str]:
    kinds = handler.type
    names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds] if kinds else []
    return {n.id if isinstance(n, ast.Name) else getattr(n, "attr", "") for n in names}


def _findings(path: Path, root: Path = SRC) -> list[str]:
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    found = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and _called_name(node) in DYNAMIC_IMPORTS:
            if rel not in ALLOWED_STRING_IMPORTS:
                found.append(f"{where}: imports a module by name ({_called_name(node)})")
        elif isinstance(node, ast.FunctionDef) and node.name in DYNAMIC_IMPORTS:
            found.append(f"{where}: defines a string-import helper ({node.name})")
        elif isinstance(node, ast.ExceptHandler) and _caught(node) & IMPORT_ERRORS:
            found.append(f"{where}: swallows an import error")
        elif isinstance(node, ast.Call) and _called_name(node) in ("getattr", "hasattr"):
            # A probe for a module's function (getattr(module, "register_runtime", None)).
            target = node.args[0] if node.args else None
            if isinstance(target, ast.Name) and target.id in {"module", "mod", "_sub", "pages"}:
                found.append(f"{where}: probes a module for an attribute")
    return found


def test_no_string_imports_or_swallowed_import_errors_outside_the_data_plane() -> None:
    found = [f for path in _modules() for f in _findings(path)]
    assert not found, "\n".join(found)


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    """The scanner itself finds each forbidden form (so the test above can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import importlib\n"
        "try:\n    import foo\nexcept ModuleNotFoundError:\n    foo = None\n"
        "m = importlib.import_module('imhost.x')\n"
        "def f(module):\n    return getattr(module, 'register_runtime', None)\n"
    )
    found = _findings(sample, root=tmp_path)
    assert len(found) == 3, found
