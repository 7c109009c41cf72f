"""Make every Anthropic client the process builds carry the cost guard's middleware, and undo it.

Kept apart from the middleware (`middleware.py`) and free of the package's heavy modules (it imports only
`providers/_common.py`, which the OpenAI patch shares): the pytest plugin
imports this at start-up, and a suite that never builds a client never loads the middleware, the guard or the
pricing code. The middleware module is imported when the first client is built.

The patch comes in pairs, like pytest-recording's install and uninstall: `prepare` (or the first `install`)
adds a meta-path hook and wraps the SDK's client constructors and `request` methods; `restore` (or the last
`uninstall`) puts the originals back and removes the hook. Clients built while it was on keep the middleware;
once no guard is installed it asks what the last `uninstall` left (`ended`: a finished run refuses, so a call
cannot go out unmetered after the report is written), or passes calls through untouched when nothing was left.
Clients built before it send each call, while a guard is installed, through a copy the SDK makes with the
middleware added (`_metered_copy`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._common import ImportHook, drop_guard, getter

if TYPE_CHECKING:
    from ...metering.guard import CostGuard

__all__ = ["enclosing", "install", "is_installed", "is_patched", "prepare", "restore", "uninstall"]


# -- process-wide installation -------------------------------------------------------------------------------
_guards: list[tuple[CostGuard | Callable[[], CostGuard], Callable[[], CostGuard | None]]] = []
"""Installed guards (or factories), innermost last, each with the getter the middleware calls."""
_shared: dict[tuple[type[Any], bool], Any] = {}
"""The shared middleware instances, by (class, whether it is a client's only middleware: `sole`)."""
_wrapped: list[tuple[type[Any], Any, bool]] = []
"""Each constructor we wrapped: (class, its original `__init__`, whether the class defined it itself)."""
_hidden: list[tuple[type[Any], property]] = []
"""Each `middleware` property we filtered: (class, the SDK's own property)."""


_ended: list[Callable[[], CostGuard | None]] = []
"""What answers the middleware once no guard is left: the last uninstalled run's (it refuses), or nothing."""


def _active_guard() -> CostGuard | None:
    # A factory (the pytest session's) builds its guard on the first call: idle suites never pay for one.
    if _guards:
        return _guards[-1][1]()
    return _ended[0]() if _ended else None


def _shared_middleware(*, sole: bool = False) -> Any:
    """The middleware instance every client of the current `anthropic` import carries: the `sole` one in a
    client that has no other middleware (it makes up for the SDK's middleware path: `middleware.py`)."""
    from .middleware import _middleware_class

    cls = _middleware_class()
    instance = _shared.get((cls, sole))
    if instance is None:
        instance = _shared[cls, sole] = cls(_active_guard, sole=sole)
    return instance


def _patch_base_client_module(module: Any) -> None:
    """Wrap the SDK's base client constructors so every client gets the shared middleware, innermost."""
    for cls in (module.SyncAPIClient, module.AsyncAPIClient):
        original = cls.__init__
        if getattr(original, "_costguard_patched", False):
            continue

        def wrapped(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            # Innermost, so it meters exactly what goes on the wire, after any user middleware: also in a client
            # derived with `with_middleware(extra)`, whose chain the SDK builds as (*ours, extra).
            chain = tuple(entry for entry in kwargs.get("middleware") or () if not _is_ours(entry))
            kwargs["middleware"] = (*chain, _shared_middleware(sole=not chain))
            __original(self, *args, **kwargs)

        wrapped._costguard_patched = True  # type: ignore[attr-defined]
        wrapped.__wrapped__ = original  # type: ignore[attr-defined]
        _wrapped.append((cls, original, "__init__" in vars(cls)))
        cls.__init__ = wrapped
    _patch_request_methods(module)
    _hide_from_middleware_property(module.BaseClient)


# -- clients built before the patch ----------------------------------------------------------------------------
_requests_wrapped: list[tuple[type[Any], Any]] = []
"""Each `request` method we wrapped: (class, its original)."""


def _metered_copy(client: Any) -> Any:
    """The client a call of `client` should go through: a copy carrying the shared middleware when a guard is
    installed and `client` was built without it (before the patch), else None (call `client` itself).

    The copy is the SDK's own `with_options`, made for each call so it reflects the client as it is now (its
    key, retries, timeout, headers); `client` itself, and the `middleware` it shows, are left as they are.
    """
    if not _guards:
        return None
    from .middleware import _middleware_class

    # Runs on every call of every client (most carry the shared middleware already): the shared instance is
    # looked up only when a copy is made.
    ours = _middleware_class()
    for entry in middleware_chain(client):
        if isinstance(entry, ours):
            return None  # metered already: by the shared middleware, or by the app's own `middleware_for(guard)`
    return client.with_options(middleware=[*client.middleware, _shared_middleware()])


def middleware_chain(client: Any) -> tuple[Any, ...]:
    """A client's whole middleware chain, ours included (its public `middleware` leaves ours out)."""
    prop = getattr(type(client), "middleware", None)
    getter = getattr(getattr(prop, "fget", None), "__wrapped__", None)
    return tuple(getter(client) if getter is not None else client.middleware)


def _patch_request_methods(module: Any) -> None:
    """Wrap the base clients' `request` (every API call goes through it) so clients built before the
    constructors were wrapped (at `-p` plugin or `sitecustomize` import, or before a marker asked for metering)
    are metered too, through `_metered_copy`, while a guard is installed."""
    for cls, asynchronous in ((module.SyncAPIClient, False), (module.AsyncAPIClient, True)):
        original = vars(cls)["request"]
        if getattr(original, "_costguard_patched", False):
            continue
        if asynchronous:

            async def wrapped_async(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                metered = _metered_copy(self)
                # The SDK's own `request` of the copy: a subclass's override has already run, on `self`.
                return await __original(self if metered is None else metered, *args, **kwargs)

            wrapped: Any = wrapped_async
        else:

            def wrapped_sync(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                metered = _metered_copy(self)
                return __original(self if metered is None else metered, *args, **kwargs)

            wrapped = wrapped_sync
        wrapped._costguard_patched = True
        wrapped.__wrapped__ = original
        _requests_wrapped.append((cls, original))
        cls.request = wrapped


def _unpatch_request_methods() -> None:
    while _requests_wrapped:
        cls, original = _requests_wrapped.pop()
        if getattr(vars(cls).get("request"), "_costguard_patched", False):
            cls.request = original


def _is_ours(entry: Any) -> bool:
    return any(instance is entry for instance in _shared.values())


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


class _AnthropicImportHook(ImportHook):
    """A meta-path finder that patches `anthropic._base_client` each time it is imported."""

    target = "anthropic._base_client"

    def patch(self, module: Any) -> None:
        _patch_base_client_module(module)


_hook = _AnthropicImportHook()


def prepare() -> None:
    """Make every Anthropic client built from now on carry the shared middleware (idle until `install`)."""
    _hook.install()
    module = sys.modules.get(_hook.target)
    if module is not None:
        _patch_base_client_module(module)


def restore() -> None:
    """Undo `prepare`: put the SDK's own constructors back and remove the meta-path hook."""
    _hook.remove()
    _unpatch_constructors()
    _unpatch_request_methods()


def is_patched() -> bool:
    """Return whether the SDK patch is in place (the hook, or a wrapped constructor, `request` or property)."""
    return _hook.installed or bool(_wrapped) or bool(_requests_wrapped) or bool(_hidden)


def install(guard: CostGuard | Callable[[], CostGuard]) -> None:
    """Meter every Anthropic client in this process through `guard`, including clients built later.

    `guard` may be a factory, called on the first metered call. Installs nest (a pytest run inside a pytest
    run): `uninstall` gives metering back to the outer guard, and the last one restores the SDK.
    """
    _guards.append((guard, getter(guard)))
    _ended.clear()
    prepare()


def enclosing() -> Callable[[], CostGuard | None] | None:
    """The getter of the innermost installed guard (a run inside a run links to it), or None."""
    return _guards[-1][1] if _guards else None


def uninstall(
    guard: CostGuard | Callable[[], CostGuard] | None = None,
    *,
    ended: Callable[[], CostGuard | None] | None = None,
) -> None:
    """Stop metering through `guard` (the innermost one by default); without guards left, `restore` the SDK.

    `ended` answers the clients built meanwhile once no guard is left (a finished run's getter, which refuses).
    """
    drop_guard(_guards, guard)
    if not _guards:
        if ended is not None:
            _ended[:] = [ended]
        restore()


def is_installed() -> bool:
    """Return whether a guard is active."""
    return bool(_guards)
