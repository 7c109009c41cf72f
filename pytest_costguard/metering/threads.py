"""Charge background work to the test that started it: threads, and the work items thread pools run.

A thread does not inherit its creator's context, so without help a call made in a thread would be charged to
whichever test runs when it spends (the guard's fallback). While a session meters, `install` wraps
`threading.Thread.start`, which remembers the scopes in force where the thread was started (`scope.started_in`),
and `ThreadPoolExecutor.submit`, which runs each work item with the submitter's scopes (`scope.carrying`): a pool
thread serves many tests, so the item, not the thread, says who pays. Only the costguard scopes travel; the
thread's other context variables stay as they would be. The patch comes in pairs: `uninstall` puts both back.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .scope import carrying, snapshot, started_in

__all__ = ["install", "is_installed", "uninstall"]

_originals: list[tuple[Any, Any]] = []
"""(Thread.start, ThreadPoolExecutor.submit) as they were before `install`."""
_installs = 0


def _start(self: threading.Thread) -> None:
    started_in(self, snapshot())
    _originals[0][0](self)


def _submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
    scopes = snapshot()
    submit = _originals[0][1]
    if not scopes:
        return submit(self, fn, *args, **kwargs)  # type: ignore[no-any-return]
    return submit(self, carrying(scopes, fn), *args, **kwargs)  # type: ignore[no-any-return]


def install() -> None:
    """Remember where threads start and carry scopes into pool work items (installs nest)."""
    global _installs
    _installs += 1
    if _installs == 1:
        _originals.append((threading.Thread.start, ThreadPoolExecutor.submit))
        threading.Thread.start = _start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign, assignment]


def uninstall() -> None:
    """Undo one `install`; the last one puts `Thread.start` and `ThreadPoolExecutor.submit` back."""
    global _installs
    if _installs == 0:
        return
    _installs -= 1
    if _installs == 0:
        start, submit = _originals.pop()
        if threading.Thread.start is _start:
            threading.Thread.start = start  # type: ignore[method-assign]
        if ThreadPoolExecutor.submit is _submit:
            ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


def is_installed() -> bool:
    """Whether threads are being remembered."""
    return _installs > 0
