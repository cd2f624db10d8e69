"""Pure helpers shared by every package: money, clock, ids, jid, crypto, errors.

Nothing in ``kit`` imports anything else of imhost.
"""

import importlib
from types import ModuleType


def optional_module(name: str) -> ModuleType | None:
    """Import ``name`` if it (or its package) exists; a missing module gives ``None``.

    Used where a package contributes optional parts (demo data, sub-commands, jobs), so that a
    deployment can leave a package out. An import error *inside* an existing module is raised.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise
