"""Old module paths keep working: `pytest_costguard.pricing` is `pytest_costguard.core.pricing`, and so on.

Until 0.2 the package was flat. A finder at the end of `sys.meta_path` answers only for those old names, and
only after every real finder has missed, so it changes nothing for any other import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

MOVED: dict[str, str] = {
    "pytest_costguard.pricing": "pytest_costguard.core.pricing",
    "pytest_costguard.budget": "pytest_costguard.core.budget",
    "pytest_costguard.routing": "pytest_costguard.core.routing",
    "pytest_costguard.tracking": "pytest_costguard.core.tracking",
    "pytest_costguard.retry": "pytest_costguard.core.retry",
    "pytest_costguard.caching": "pytest_costguard.core.caching",
    "pytest_costguard.pipeline": "pytest_costguard.core.pipeline",
    "pytest_costguard.guard": "pytest_costguard.metering.guard",
    "pytest_costguard.ledger": "pytest_costguard.metering.ledger",
    "pytest_costguard.sqlite_ledger": "pytest_costguard.metering.sqlite_ledger",
    "pytest_costguard.report": "pytest_costguard.reports.model",
    "pytest_costguard.merge": "pytest_costguard.reports.merge",
    "pytest_costguard.baseline": "pytest_costguard.reports.baseline",
    "pytest_costguard.settings": "pytest_costguard.plugin.settings",
    "pytest_costguard.xdist": "pytest_costguard.plugin.xdist",
}
"""Old module name -> where it lives now."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module already ran; the import system has just given it the alias's spec: give its own back, so its
        # relative imports and pickles still name where it lives.
        module.__spec__ = self.spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolve an old flat module name to the module that now holds its code."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        moved = MOVED.get(fullname)
        if moved is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(moved))


def install() -> None:
    """Add the finder once, last, so real modules always win."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
