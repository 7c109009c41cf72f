"""Make every Anthropic client the process builds carry the cost guard's middleware, and undo it.

Kept apart from the middleware (`middleware.py`) and free of the package's other modules: the pytest plugin
imports this at start-up, and a suite that never builds a client never loads the middleware, the guard or the
pricing code. The middleware module is imported when the first client is built.

The patch comes in pairs, like pytest-recording's install and uninstall: `prepare` (or the first `install`)
adds a meta-path hook and wraps the SDK's client constructors; `restore` (or the last `uninstall`) puts the
original constructors back and removes the hook. Clients built while it was on keep the middleware, which
passes every call through untouched once no guard is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...metering.guard import CostGuard

__all__ = ["install", "is_installed", "is_patched", "prepare", "restore", "uninstall"]


def _getter(guard: CostGuard | Callable[[], CostGuard | None]) -> Callable[[], CostGuard | None]:
    # A guard is not callable: a callable is a factory (or a getter) of one.
    return guard if callable(guard) else (lambda: guard)


# -- process-wide installation -------------------------------------------------------------------------------
_guards: list[tuple[CostGuard | Callable[[], CostGuard], Callable[[], CostGuard | None]]] = []
"""Installed guards (or factories), innermost last, each with the getter the middleware calls."""
_shared: dict[type[Any], Any] = {}
_wrapped: list[tuple[type[Any], Any, bool]] = []
"""Each constructor we wrapped: (class, its original `__init__`, whether the class defined it itself)."""
_hidden: list[tuple[type[Any], property]] = []
"""Each `middleware` property we filtered: (class, the SDK's own property)."""


def _active_guard() -> CostGuard | None:
    # A factory (the pytest session's) builds its guard on the first call: idle suites never pay for one.
    return _guards[-1][1]() if _guards else None


def _shared_middleware() -> Any:
    """The one middleware instance every client of the current `anthropic` import carries."""
    from .middleware import _middleware_class

    cls = _middleware_class()
    instance = _shared.get(cls)
    if instance is None:
        instance = _shared[cls] = cls(_active_guard)
    return instance


def _patch_base_client_module(module: Any) -> None:
    """Wrap the SDK's base client constructors so every client gets the shared middleware, innermost."""
    for cls in (module.SyncAPIClient, module.AsyncAPIClient):
        original = cls.__init__
        if getattr(original, "_costguard_patched", False):
            continue

        def wrapped(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            shared = _shared_middleware()
            # Innermost, so it meters exactly what goes on the wire, after any user middleware: also in a client
            # derived with `with_middleware(extra)`, whose chain the SDK builds as (*ours, extra).
            chain = tuple(entry for entry in kwargs.get("middleware") or () if entry is not shared)
            kwargs["middleware"] = (*chain, shared)
            __original(self, *args, **kwargs)

        wrapped._costguard_patched = True  # type: ignore[attr-defined]
        wrapped.__wrapped__ = original  # type: ignore[attr-defined]
        _wrapped.append((cls, original, "__init__" in vars(cls)))
        cls.__init__ = wrapped
    _hide_from_middleware_property(module.BaseClient)


def _is_ours(entry: Any) -> bool:
    return _shared.get(type(entry)) is entry


def _hide_from_middleware_property(cls: type[Any]) -> None:
    """Leave the shared middleware out of the public `client.middleware`, which user code reads and extends."""
    original = vars(cls).get("middleware")
    if not isinstance(original, property) or original.fget is None:
        return  # not the SDK this was written for: leave it alone
    if getattr(original.fget, "_costguard_patched", False):
        return
    getter = original.fget

    def middleware(self: Any) -> tuple[Any, ...]:
        return tuple(entry for entry in getter(self) if not _is_ours(entry))

    middleware._costguard_patched = True  # type: ignore[attr-defined]
    middleware.__wrapped__ = getter  # type: ignore[attr-defined]
    middleware.__doc__ = getter.__doc__
    _hidden.append((cls, original))
    cls.middleware = property(middleware)


def _unpatch_constructors() -> None:
    while _hidden:
        cls, original = _hidden.pop()
        current = vars(cls).get("middleware")
        if isinstance(current, property) and getattr(current.fget, "_costguard_patched", False):
            cls.middleware = original
    while _wrapped:
        cls, original, own = _wrapped.pop()
        if not getattr(cls.__init__, "_costguard_patched", False):
            continue  # someone wrapped it again after us: leave their wrapper (and ours under it) alone
        if own:
            cls.__init__ = original
        else:
            del cls.__init__


class _AnthropicImportHook:
    """A meta-path finder that patches `anthropic._base_client` each time it is imported."""

    target = "anthropic._base_client"

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.target:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            if _hook in sys.meta_path:  # not restored in the meantime
                _patch_base_client_module(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_hook = _AnthropicImportHook()


def prepare() -> None:
    """Make every Anthropic client built from now on carry the shared middleware (idle until `install`)."""
    if _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
    module = sys.modules.get("anthropic._base_client")
    if module is not None:
        _patch_base_client_module(module)


def restore() -> None:
    """Undo `prepare`: put the SDK's own constructors back and remove the meta-path hook."""
    while _hook in sys.meta_path:
        sys.meta_path.remove(_hook)
    _unpatch_constructors()


def is_patched() -> bool:
    """Return whether the SDK patch is in place (the hook, or a wrapped constructor)."""
    return _hook in sys.meta_path or bool(_wrapped) or bool(_hidden)


def install(guard: CostGuard | Callable[[], CostGuard]) -> None:
    """Meter every Anthropic client in this process through `guard`, including clients built later.

    `guard` may be a factory, called on the first metered call. Installs nest (a pytest run inside a pytest
    run): `uninstall` gives metering back to the outer guard, and the last one restores the SDK.
    """
    _guards.append((guard, _getter(guard)))
    prepare()


def uninstall(guard: CostGuard | Callable[[], CostGuard] | None = None) -> None:
    """Stop metering through `guard` (the innermost one by default); without guards left, `restore` the SDK."""
    if guard is None:
        if _guards:
            _guards.pop()
    else:
        for index in range(len(_guards) - 1, -1, -1):
            if _guards[index][0] == guard:  # ==: a bound method is a new object on every access
                del _guards[index]
                break
    if not _guards:
        restore()


def is_installed() -> bool:
    """Return whether a guard is active."""
    return bool(_guards)
