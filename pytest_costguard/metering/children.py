"""Meter the Python processes a session starts, under the session's budget, like coverage.py measures them.

A metered session names itself in the environment variable `PYTEST_COSTGUARD_SESSION` (JSON: the shared SQLite
ledger's path, the budget, the label its children write under, the running test). Every Python process that
inherits the variable meters its Anthropic calls through a guard joined to that ledger:

* a new interpreter (`subprocess` with `sys.executable`, `multiprocessing` spawn and forkserver) through the
  start-up hook `pytest_costguard.pth` that the package installs in site-packages: one line that does nothing
  but look the variable up when it is absent, and calls `start_in_child` when it is there;
* a forked copy of the session (`os.fork`, `multiprocessing` fork, `ProcessPoolExecutor` on Linux) through an
  `os.register_at_fork` handler, which swaps the copied session guard for a child guard.

Children write their records and refusals into the shared ledger under the session's child label; the session
reads them back (`child_label`) into its report, so they count in its verdict and exit status. What is outside
this (a non-Python program, an environment that drops the variable) is listed in docs/budgets.md.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .guard import CostGuard, GuardConfig

__all__ = ["ENV", "ChildSession", "child_label", "detach", "enter_test", "export", "start_in_child", "withdraw"]

ENV = "PYTEST_COSTGUARD_SESSION"
"""Names the metered session a process belongs to: set by the session, read by its children."""
_ENCODER = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ChildSession:
    """What a child process needs to meter its calls under its session's budget."""

    ledger: str
    """The session's shared SQLite ledger (absolute path)."""
    budget: str | None
    """The session's cap, as Decimal text; None when it has none."""
    label: str
    """The `worker` name children write their rows under; the session reads them back by it."""
    host: str
    """The session's host: a child elsewhere cannot share its file."""
    test: str | None = None
    """The test running when the child started (its calls are charged to it)."""
    test_budget: str | None = None
    """That test's own cap, as Decimal text."""
    config: str | None = None
    """A pickle of the session's `GuardConfig` (its prices, routing, free endpoints, preflight, output bounds),
    written by the session into a directory of its own; None: the session treats calls as a guard's defaults."""

    def to_env(self) -> str:
        return _ENCODER.encode(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> ChildSession:
        data = json.loads(text)
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})


def child_label(worker: str | None) -> str:
    """The label the children of a process (`worker`: its own ledger label) write under."""
    return f"{worker or 'main'}+children"


# -- the session's side ---------------------------------------------------------------------------------------
_PER_TEST = frozenset({"test", "test_budget"})
"""The fields of a `ChildSession` that change from test to test."""


class _Export:
    """A session that exported the variable: the value it replaced, and its fixed fields encoded once."""

    def __init__(self, session: ChildSession, previous: str | None) -> None:
        self.session = session
        """The session as exported (the running test's fields aside)."""
        self.previous = previous
        """The variable's value before the export (None: unset)."""
        self.test: tuple[str | None, str | None] = (session.test, session.test_budget)
        """The test its children are charged to now, and that test's cap as Decimal text."""
        self._fixed = {key: value for key, value in asdict(session).items() if key not in _PER_TEST}

    def enter_test(self, tag: str | None, budget: str | None) -> None:
        # Once per test: only the test's two fields change, so the dataclass is not rebuilt (a fork does that).
        self.test = (tag, budget)
        os.environ[ENV] = _ENCODER.encode({**self._fixed, "test": tag, "test_budget": budget})

    @property
    def current(self) -> ChildSession:
        """The session as its children see it now, the running test included."""
        tag, budget = self.test
        return replace(self.session, test=tag, test_budget=budget)


_exported: list[_Export] = []
"""Sessions that exported the variable in this process, innermost last."""


def export(session: ChildSession) -> None:
    """Name `session` to the processes started from now on (nests: `withdraw` restores the outer one)."""
    _exported.append(_Export(session, os.environ.get(ENV)))
    os.environ[ENV] = session.to_env()
    _watch_forks()


def enter_test(tag: str | None, budget: Decimal | None) -> None:
    """Charge the children started from now on to test `tag` (None: the session)."""
    if _exported:
        _exported[-1].enter_test(tag, None if budget is None else str(budget))


def withdraw() -> None:
    """Undo the innermost `export`: the variable goes back to what it was."""
    if not _exported:
        return
    previous = _exported.pop().previous
    if previous is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = previous


# -- the child's side ----------------------------------------------------------------------------------------
_child: list[Callable[[], CostGuard]] = []
"""The child guard's factory this process installed (at most one)."""
_forks_watched = False


def _watch_forks() -> None:
    global _forks_watched
    if not _forks_watched and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork)
        _forks_watched = True  # handlers cannot be removed: this one does nothing unless a session exported


def _after_fork() -> None:
    # A forked copy of a metered session must not spend through the copied session guard: its records would
    # stay in this process. It meters through a child guard instead, as a started interpreter does.
    if _exported:
        _install(_exported[-1].current)


def start_in_child() -> None:
    """Meter this process's calls under the session `PYTEST_COSTGUARD_SESSION` names (the .pth hook calls this)."""
    text = os.environ.get(ENV)
    if not text or _child:
        return
    try:
        session = ChildSession.from_env(text)
    except (ValueError, TypeError):
        return  # not ours to judge at start-up: without a session the process is not metered
    _install(session)


def _install(session: ChildSession) -> None:
    from ..providers import openai as openai_patch
    from ..providers.anthropic import patch

    detach()
    built: list[CostGuard] = []

    def factory() -> CostGuard:
        if not built:
            built.append(_build_child_guard(session))
        return built[0]

    _child.append(factory)
    patch.install(factory)
    openai_patch.install(factory)  # imports no openai: hooks it where (and when) it is imported
    import atexit

    atexit.register(_settle_open, built)


def _settle_open(built: list[CostGuard]) -> None:
    # Streams the child never closed were billed: charge them at their worst case before it exits.
    for guard in built:
        guard.settle_open()


def detach() -> None:
    """Stop metering through this process's child guard (an xdist worker joins the session's ledger itself)."""
    from ..providers import openai as openai_patch
    from ..providers.anthropic import patch

    while _child:
        factory = _child.pop()
        patch.uninstall(factory)
        openai_patch.uninstall(factory)


def is_child() -> bool:
    """Whether this process meters through a child guard."""
    return bool(_child)


def _build_child_guard(session: ChildSession) -> CostGuard:
    from .guard import CostGuard
    from .ledger import InMemoryLedger
    from .scope import Scope
    from .sqlite_ledger import LedgerError, SqliteLedger

    if session.host != socket.gethostname():
        raise LedgerError(
            f"pytest-costguard: this process was started by a metered session on {session.host}; its ledger "
            "is a local file, so a call here could not be counted: run the process on that host"
        )
    budget = Decimal(session.budget) if session.budget is not None else None
    tag = session.test
    ledger = SqliteLedger(session.ledger, budget, "session", create=True, worker=session.label, tag_source=lambda: tag)
    guard = CostGuard(_session_config(session), ledger)
    test_budget = Decimal(session.test_budget) if session.test_budget is not None else None
    guard.fallback_scope = Scope(tag=tag, budget=test_budget)
    if test_budget is not None and tag is not None:
        # This child's share of its test's budget: the whole of it (the session reads the test's total back).
        guard.test_ledgers[tag] = InMemoryLedger(limit=test_budget, scope=f"test {tag}")
    return guard


def _session_config(session: ChildSession) -> GuardConfig | None:
    """The session's `GuardConfig`, as it pickled it for its children (None: the defaults)."""
    if session.config is None:
        return None
    import pickle

    from .guard import GuardConfig
    from .sqlite_ledger import LedgerError

    try:
        with open(session.config, "rb") as source:
            config = pickle.load(source)  # written by the session that started this process, in its own directory
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise LedgerError(
            f"pytest-costguard: this process could not read its session's settings ({session.config}: {exc}), "
            "so a call here could not be priced as the session prices it: it was not sent"
        ) from None
    if not isinstance(config, GuardConfig):
        raise LedgerError(f"pytest-costguard: {session.config} does not hold a session's settings")
    return config


def describe_child(env: dict[str, Any] | None = None) -> ChildSession | None:
    """The session an environment names (for tests and diagnostics), or None."""
    text = (env if env is not None else os.environ).get(ENV)
    return ChildSession.from_env(text) if text else None
