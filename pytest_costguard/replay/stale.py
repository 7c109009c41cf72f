"""Cassettes whose test is gone, found without running pytest (`costguard cassettes --stale`).

A cassette names the test that recorded it. Beside its module (the default layout,
`<folder>/cassettes/<module>/<test>.json`) the module is found from the cassette's place; elsewhere from the
test's node id, relative to the current directory. The module's source is parsed, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .cassette import Cassette
from .store import SESSION_TEST

__all__ = ["stale_reason"]


def _module_of(path: Path, cassette: Cassette) -> Path:
    if path.parent.parent.name == "cassettes":
        return path.parent.parent.parent / f"{path.parent.name}.py"
    return Path(cassette.test.partition("::")[0])


def _defined(tree: ast.Module, names: list[str]) -> bool:
    """Whether `names` (a class chain ending in a function, or a function) is defined in `tree`."""
    scope: list[ast.stmt] = list(tree.body)
    for depth, name in enumerate(names):
        last = depth == len(names) - 1
        found = None
        for node in scope:
            kinds = (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
            if isinstance(node, kinds) and node.name == name:
                found = node
        if found is None:
            return False
        scope = list(found.body) if isinstance(found, ast.ClassDef) else []
    return True


def stale_reason(path: Path, cassette: Cassette) -> str | None:
    """Why the cassette at `path` can no longer be used by its test, or None when its test still exists."""
    if cassette.test == SESSION_TEST:
        return None  # the session cassette: calls made outside tests, used by whichever run makes them
    if not cassette.test or "::" not in cassette.test:
        return "it names no test"
    module = _module_of(path, cassette)
    try:
        source = module.read_text(encoding="utf-8")
    except OSError:
        return f"its test module {module} is gone"
    try:
        tree = ast.parse(source, filename=str(module))
    except SyntaxError:
        return None  # a module that does not parse is not proof the test is gone
    names = [part.split("[", 1)[0] for part in cassette.test.split("::")[1:]]
    if not _defined(tree, names):
        return f"{cassette.test} is no longer defined in {module}"
    return None
