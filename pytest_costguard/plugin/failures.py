"""How a test that a budget refused reads in pytest's output: one line, like an assertion's, not a traceback.

A refused call raises `BudgetExceededError` from deep inside the SDK's request machinery (about 15 frames
between the test and the ledger), and the traceback through them explains nothing the message does not. The
failure of a refused test is the line of the test that made the call and what was refused: the worst case and
what was left. pytest prints it under the test's header in FAILURES and after the test's id in the short test
summary (where the terminal is wide enough, and in full on CI or with -vv). `--tb=long`, `--tb=native` and
`--full-trace` still show pytest's own traceback, in which the plugin's frames are hidden (`__tracebackhide__`).
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..core.budget import BudgetExceededError

__all__ = ["refusal_in", "refusal_summary", "refused_longrepr"]

_SHORT_STYLES = ("auto", "short")
"""The --tb styles a refused test's failure is one line in; the others are asked for by name and get pytest's."""


def refusal_in(exc: BaseException) -> BudgetExceededError | None:
    """The budget refusal `exc` is or was raised from (an app may wrap it in its own error), or None."""
    from ..core.budget import BudgetExceededError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # a chain can be a cycle
        if isinstance(current, BudgetExceededError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def refusal_summary(refusal: BudgetExceededError) -> str:
    """Say in one line what was refused: "LLM call not sent: worst case $0.0816, but only $0.001 of the session
    budget ($0.001) is left"."""
    from ..core.budget import BudgetExceededError
    from ..domain.money import format_usd

    if type(refusal) is not BudgetExceededError or refusal.requested is None:
        return str(refusal).splitlines()[0]  # a ledger that cannot be reached, a spent budget: its own words
    left = max(refusal.limit - refusal.spent - refusal.reserved, Decimal(0))
    budget = "the session budget" if refusal.scope == "session" else "this test's budget"
    held = f", {format_usd(refusal.reserved)} held by calls in flight" if refusal.reserved else ""
    line = (
        f"LLM call not sent: worst case {format_usd(refusal.requested)}, but only {format_usd(left)} of "
        f"{budget} ({format_usd(refusal.limit)}) is left{held}"
    )
    if refusal.why:
        line += f"; its worst case is large because of {'; '.join(refusal.why)}"
    return line


def refused_longrepr(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    """The one-line failure of a test whose call a budget refused ("LLM call not sent: ... (path:line)"), or None
    when the failure is not a refusal or the --tb style asked for pytest's own traceback."""
    option = item.config.option
    if getattr(option, "tbstyle", "auto") not in _SHORT_STYLES or getattr(option, "fulltrace", False):
        return None
    refusal = refusal_in(excinfo.value)
    if refusal is None:
        return None
    summary = refusal_summary(refusal)
    if refusal is not excinfo.value:
        summary += f"; it reached the test as {excinfo.type.__name__}"
    # The message first: pytest's short test summary shows the start of it after the test's id.
    return f"{summary} ({_location(item, excinfo)})"


def _location(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """Where the test made the refused call: its own deepest line in the traceback, else the test itself."""
    path, lineno = item.reportinfo()[0], None
    for entry in excinfo.traceback:
        if entry.path == item.path:
            path, lineno = entry.path, entry.lineno + 1
    if lineno is None:
        lineno = (item.reportinfo()[1] or 0) + 1
    shown = os.path.relpath(path, item.config.invocation_params.dir) if os.path.isabs(path) else str(path)
    return f"{shown}:{lineno}"
