"""The Anthropic SDK adapter: every client the process builds carries the guard's middleware.

The SDK patch (`install` / `uninstall`, `prepare` / `restore`: in pairs) is light and loaded at pytest start-up;
the middleware, which needs pricing and the guard, loads when the first client is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .patch import install, is_installed, is_patched, prepare, restore, uninstall

if TYPE_CHECKING:
    from .middleware import SSEMeter, middleware_for

__all__ = [
    "SSEMeter",
    "install",
    "is_installed",
    "is_patched",
    "middleware_for",
    "prepare",
    "restore",
    "uninstall",
]

_LAZY = {"SSEMeter": "middleware", "middleware_for": "middleware"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
