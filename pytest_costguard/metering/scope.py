"""Who is spending now: the running test (its node id, own budget and pinned model) or the session.

Held in a `ContextVar`, set and reset by the pytest adapter around each test, so a call is charged to the test
whose context made it (asyncio tasks inherit their creator's context). Threads do not inherit it: while a
session meters, `metering.threads` remembers the scopes in force where each thread was started (`started_in`)
and carries them into each work item a thread pool runs (`carrying`), so background work is charged to the
test that started it, not to whichever test runs when it spends. Light on purpose: the adapter sets a scope
for every test, idle suites included, without loading the guard.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = [
    "SESSION",
    "Scope",
    "carrying",
    "collecting",
    "current_scope",
    "deliver",
    "running",
    "snapshot",
    "started_in",
]


class Scope(NamedTuple):
    """Who is spending: a test, or the session when `tag` is None (a NamedTuple: one is made per test)."""

    tag: str | None = None
    """The node id of the running test; None outside tests."""
    budget: Decimal | None = None
    """The test's own budget, when it has one."""
    pinned_model: str | None = None
    """A model the test pinned: routing never changes it."""


SESSION = Scope()
"""Calls made outside any test."""

_NONE: Mapping[object, Scope] = MappingProxyType({})
_running: ContextVar[Mapping[object, Scope]] = ContextVar("pytest_costguard_scope", default=_NONE)
"""Each metering owner's scope in this context: a pytest run inside a test has its own scope, beside the outer's."""


@contextmanager
def running(owner: object, scope: Scope) -> Iterator[None]:
    """Charge the calls `owner` (a session, a guard) meters in this context, and its asyncio tasks, to `scope`."""
    token = _running.set({**_running.get(), owner: scope})
    try:
        yield
    finally:
        _running.reset(token)


def current_scope(owner: object, fallback: Scope = SESSION) -> Scope:
    """`owner`'s scope in this context, else where this thread was started, else `fallback`."""
    scope = _running.get().get(owner)
    if scope is not None:
        return scope
    if _started:  # only while threads are remembered (a session meters): idle runs never look
        inherited = _started.get(threading.current_thread())
        if inherited is not None:
            return inherited.get(owner, fallback)
    return fallback


_started: weakref.WeakKeyDictionary[threading.Thread, Mapping[object, Scope]] = weakref.WeakKeyDictionary()
"""The scopes in force where each remembered thread was started."""


def snapshot() -> Mapping[object, Scope]:
    """The scopes in force in this context (empty outside tests)."""
    return _running.get()


def started_in(thread: threading.Thread, scopes: Mapping[object, Scope]) -> None:
    """Charge what `thread` meters outside any context of its own to `scopes` (those where it was started)."""
    if scopes:
        _started[thread] = scopes


def carrying(scopes: Mapping[object, Scope], fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, run with `scopes` in force: a work item submitted to a thread pool is charged where it was submitted."""

    def run(*args: Any, **kwargs: Any) -> Any:
        token = _running.set(scopes)
        try:
            return fn(*args, **kwargs)
        finally:
            _running.reset(token)

    return run


_sink: ContextVar[tuple[object, list[Any]] | None] = ContextVar("pytest_costguard_sink", default=None)


@contextmanager
def collecting(source: object) -> Iterator[list[Any]]:
    """Collect the records `source` (a guard) settles in this context: the pipeline reads its own call's record."""
    records: list[Any] = []
    token = _sink.set((source, records))
    try:
        yield records
    finally:
        _sink.reset(token)


def deliver(record: Any, source: object) -> None:
    """Hand a record `source` settled to this context's collector, if it listens to `source`."""
    sink = _sink.get()
    if sink is not None and sink[0] is source:
        sink[1].append(record)
