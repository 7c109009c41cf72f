"""Make every OpenAI client in the process send its HTTP attempts through the cost guard, and undo it.

Where: openai >= 3 has no middleware hook, so this wraps the one method every client's requests pass through
once per HTTP attempt, `SyncAPIClient._send_request` / `AsyncAPIClient._send_request` in `openai._base_client`.
Why there and not elsewhere:

* It is the SDK's own per-attempt seam, inside its retry loop: it gets the request the SDK built (headers,
  JSON body, `x-stainless-retry-count`) and gives back the `httpx2.Response` before the SDK checks its status,
  or raises the transport's error, exactly what the Anthropic middleware sees.
* It is under every client class at once (`OpenAI`, `AsyncOpenAI`, `AzureOpenAI`, the ones built before the
  patch too, with any `http_client` the user passed, httpx2 or legacy httpx, respx or `MockTransport`), and
  it touches no object the user owns.
* Wrapping the httpx2 transport instead would mean writing httpx2's private `_transport` and `_mounts` on
  clients users build and share, meter unrelated traffic through them, and miss legacy httpx clients; the
  constructors would have to be wrapped as well, and clients built before the patch would stay unmetered.

The cost of this choice: `_send_request` is private to the SDK. `install` checks it is there and raises
`RuntimeError` (a budget that silently stops holding is worse than a run that stops) if a future openai
renames it. Like `providers.anthropic.patch`, this module imports nothing heavy: the SDK is patched when it
is imported (a meta-path hook) or at once if it already was, and the metering code (`meter.py`) is imported
on the first attempt a guard is installed for. With no guard installed the wrapper passes every call
straight through; `restore` puts the SDK's methods back.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .._common import ImportHook, drop_guard, getter

if TYPE_CHECKING:
    from ...metering.guard import CostGuard

__all__ = ["active_guard", "install", "is_installed", "is_patched", "metered_by", "restore", "uninstall"]

_TARGET = "openai._base_client"
_guards: list[tuple[CostGuard | Callable[[], CostGuard], Callable[[], CostGuard | None]]] = []
_wrapped: list[tuple[type[Any], Any]] = []
"""Each method we wrapped: (class, its original `_send_request`)."""


_context_guard: ContextVar[CostGuard | None] = ContextVar("costguard_openai_guard", default=None)
"""A guard metering this context's calls only (`metered_by`, for the pipeline library), before any other."""
_contexts = 0


def active_guard() -> CostGuard | None:
    """The guard of this context, else the innermost installed one (built by its factory on first use), or None."""
    scoped = _context_guard.get()
    if scoped is not None:
        return scoped
    return _guards[-1][1]() if _guards else None


@contextlib.contextmanager
def metered_by(guard: CostGuard) -> Iterator[None]:
    """Meter the OpenAI calls this context (thread or task) makes inside the block through `guard`, and only
    those: other threads' calls are left to the process-wide guard, if any (an application's own guard)."""
    global _contexts
    _contexts += 1
    token = _context_guard.set(guard)
    try:
        _prepare()
        yield
    finally:
        _context_guard.reset(token)
        _contexts -= 1
        if not _guards and not _contexts:
            restore()


def _sync_send(original: Any) -> Any:
    def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        if not _guards and _context_guard.get() is None:
            return original(self, request, stream=stream, **kwargs)
        from .meter import send

        return send(original, self, request, stream=stream, **kwargs)

    return _send_request


def _async_send(original: Any) -> Any:
    async def _send_request(self: Any, request: Any, *, stream: bool, **kwargs: Any) -> Any:
        if not _guards and _context_guard.get() is None:
            return await original(self, request, stream=stream, **kwargs)
        from .meter import send_async

        return await send_async(original, self, request, stream=stream, **kwargs)

    return _send_request


def _patch_module(module: Any) -> None:
    for name, make in (("SyncAPIClient", _sync_send), ("AsyncAPIClient", _async_send)):
        cls = getattr(module, name, None)
        original = vars(cls).get("_send_request") if isinstance(cls, type) else None
        if cls is None or original is None:
            raise RuntimeError(
                f"pytest-costguard cannot meter this openai release: {_TARGET}.{name}._send_request is gone; "
                "pin openai to a release the plugin supports (docs/budgets.md, OpenAI)"
            )
        if getattr(original, "_costguard_patched", False):
            continue
        wrapper = make(original)
        wrapper._costguard_patched = True
        wrapper.__wrapped__ = original
        wrapper.__qualname__ = f"{name}._send_request"
        _wrapped.append((cls, original))
        cls._send_request = wrapper


def _unpatch() -> None:
    while _wrapped:
        cls, original = _wrapped.pop()
        if getattr(vars(cls).get("_send_request"), "_costguard_patched", False):
            cls._send_request = original


class _OpenAIImportHook(ImportHook):
    """A meta-path finder that patches `openai._base_client` when it is imported."""

    target = _TARGET

    def patch(self, module: Any) -> None:
        _patch_module(module)


_hook = _OpenAIImportHook()


def _prepare() -> None:
    module = sys.modules.get(_TARGET)
    if not _hook.installed:
        import importlib.util

        # Kept even once the SDK is imported: a harness may drop and re-import `openai`.
        if module is not None or importlib.util.find_spec("openai") is not None:  # finds it, imports nothing
            _hook.install()
    if module is not None:
        _patch_module(module)


def restore() -> None:
    """Put the SDK's own `_send_request` methods back and remove the import hook."""
    _hook.remove()
    _unpatch()


def is_patched() -> bool:
    """Return whether the SDK patch is in place (the hook, or a wrapped method)."""
    return _hook.installed or bool(_wrapped)


def install(guard: CostGuard | Callable[[], CostGuard]) -> None:
    """Meter every OpenAI client in this process through `guard` (or the guard a factory builds on first use).

    Installs nest: `uninstall` gives metering back to the outer guard, and the last one restores the SDK.
    """
    _guards.append((guard, getter(guard)))
    try:
        _prepare()
    except RuntimeError:
        _guards.pop()
        raise


def uninstall(guard: CostGuard | Callable[[], CostGuard] | None = None) -> None:
    """Stop metering through `guard` (the innermost one by default); without guards left, `restore` the SDK."""
    drop_guard(_guards, guard)
    if not _guards and not _contexts:
        restore()


def is_installed() -> bool:
    """Return whether a guard is active."""
    return bool(_guards)
