"""The run: one object owns what a session spent (records, refusals, failed attempts, test outcomes), merges
what other processes spent, and builds the report.

The pytest adapter hands it events (a test's outcome, a worker's output); it never imports pytest, so the
same accounting serves `costguard report` and any other runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.budget import Overspend
    from ..core.tally import Tally
    from ..domain.records import CostRecord, Refusal
    from .guard import CostGuard

__all__ = ["CostRun", "classify_outcome"]

_FAILED = ("failed", "error")
_ZERO = Decimal(0)


def classify_outcome(when: str, outcome: str, xfail: bool, previous: str | None) -> str | None:
    """Return a test's outcome after one of its phase reports, or None to keep `previous`.

    `outcome` is the phase's "passed", "failed" or "skipped"; a failed setup or teardown is an "error", and a
    failure is never overwritten by a later phase's pass.
    """
    if outcome == "failed":
        new = "failed" if when == "call" else "error"
    elif outcome == "skipped":
        new = "xfailed" if xfail else "skipped"
    elif when == "call":
        new = "xpassed" if xfail else "passed"
    else:
        new = previous or "passed"
    if previous in _FAILED and new not in _FAILED:
        return None
    return new


class CostRun:
    """What one session spent, in this process and in the processes that reported to it."""

    def __init__(
        self,
        guard_factory: Callable[[], CostGuard],
        *,
        budget: Decimal | None = None,
        budget_per_test: Decimal | None = None,
        max_records: int | None = None,
    ) -> None:
        self._guard_factory = guard_factory
        self._guard: CostGuard | None = None
        self._creating = threading.Lock()
        self.budget = budget
        """The session's cap, USD."""
        self.budget_per_test = budget_per_test
        """The default cap of each test, USD."""
        self.max_records = max_records
        """Keep the records of at most this many calls (None: all); the report's figures still count every call."""
        self.outcomes: dict[str, str] = {}
        """Each test's outcome, by node id."""
        self.labels: dict[str, Any] = {}
        """Top-level report fields other code adds (the `backend`, for instance)."""
        self.test_budgets: dict[str, Decimal] = {}
        """Each budgeted test's own cap (its marker, else `budget_per_test`), by node id."""
        self._by_test: dict[str, list[CostRecord]] = {}
        self._remote_records: list[CostRecord] = []
        self._remote_overflow: Tally | None = None
        self._remote_refusals: list[Refusal] = []
        self._remote_failed_attempts = 0
        self._remote_preflights = (0, 0)
        self._refusals_by_test: dict[str, list[Refusal]] = {}
        self._refusals_indexed = 0

    # -- the guard -------------------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether this process has metered anything (its guard exists)."""
        return self._guard is not None

    @property
    def guard(self) -> CostGuard:
        """The guard metering this process's calls, built on first use (an idle run never builds one)."""
        if self._guard is None:
            with self._creating:  # the first calls may come from several threads at once
                if self._guard is None:
                    guard = self._guard_factory()
                    guard.max_records = self.max_records
                    guard.new_tally = self._new_tally
                    guard.listeners.append(self._index)
                    self._guard = guard
        return self._guard

    def guard_if_started(self) -> CostGuard | None:
        """The guard, or None when nothing was metered yet."""
        return self._guard

    def _new_tally(self) -> Tally:
        from ..core.tally import Tally

        return Tally(self.budget, self.test_budgets)

    def _index(self, record: CostRecord) -> None:
        if record.tag is not None:
            self._by_test.setdefault(record.tag, []).append(record)

    # -- events ----------------------------------------------------------------------------------------------
    def record_outcome(self, nodeid: str, when: str, outcome: str, *, xfail: bool = False) -> None:
        """Take one phase report of a test (setup, call or teardown)."""
        new = classify_outcome(when, outcome, xfail, self.outcomes.get(nodeid))
        if new is not None:
            self.outcomes[nodeid] = new
        if when == "teardown":
            # The test is over: its calls are in the records (or the tally); the index of them is not needed.
            self._by_test.pop(nodeid, None)

    def set_test_budget(self, nodeid: str, budget: Decimal | None) -> None:
        """Take the cap a test runs under (None: only the session's)."""
        if budget is not None:
            self.test_budgets[nodeid] = budget

    def test_overspend(self, nodeid: str) -> Overspend | None:
        """How a test's settled spend in this process went over its own budget, or None when it did not."""
        budget = self.test_budgets.get(nodeid)
        records = self._by_test.get(nodeid)
        if budget is None or not records:
            return None  # most tests: no budget of their own, or no call (asked after every test phase)
        from ..core.budget import find_overspend

        return find_overspend(records, budget, f"test {nodeid}")

    def records_of(self, nodeid: str) -> list[CostRecord]:
        """The calls a test made in this process (an index kept as calls settle)."""
        return self._by_test.get(nodeid, [])

    def test_cost(self, nodeid: str) -> tuple[Decimal, int]:
        """What a test spent in this process, and in how many calls."""
        records = self._by_test.get(nodeid)
        if not records:
            return _ZERO, 0
        return sum((r.cost_usd for r in records), _ZERO), len(records)

    def test_refusals(self, nodeid: str) -> list[Refusal]:
        """Calls of a test refused by its own budget."""
        refusals = self._guard.refusals if self._guard is not None else None
        if not refusals:
            return []
        # Indexed as they come (the guard only appends): asked after each test, a scan would grow with the run.
        index = self._refusals_by_test
        for refusal in refusals[self._refusals_indexed :]:
            if refusal.tag is not None and refusal.scope != "session":
                index.setdefault(refusal.tag, []).append(refusal)
        self._refusals_indexed = len(refusals)
        return list(index.get(nodeid, ()))

    # -- other processes -------------------------------------------------------------------------------------
    def output(self) -> dict[str, Any]:
        """What this process spent, as plain JSON for another process's `merge` (an xdist worker's output)."""
        from ..domain.records import record_to_dict, refusal_to_dict

        guard = self.guard
        guard.settle_open()  # streams never closed are charged before the records leave
        # Its own calls and those it read back (its child processes'), so they reach the controller's report.
        return {
            "records": [record_to_dict(r) for r in self.records],
            "refusals": [refusal_to_dict(r) for r in self.refusals],
            "failed_attempts": self.failed_attempts,
            "preflight_calls": guard.preflight_calls,
            "preflight_failed": guard.preflight_failed,
            "outcomes": dict(self.outcomes),
            "test_budgets": {nodeid: str(budget) for nodeid, budget in self.test_budgets.items()},
        }

    def merge(self, output: Mapping[str, Any]) -> None:
        """Add what another process spent (its `output()`)."""
        from ..domain.records import record_from_dict, refusal_from_dict

        for nodeid, budget in output.get("test_budgets", {}).items():
            self.test_budgets.setdefault(nodeid, Decimal(budget))  # first: the tally checks the calls against them
        self.add_remote(
            [record_from_dict(r) for r in output["records"]],
            [refusal_from_dict(r) for r in output["refusals"]],
            int(output["failed_attempts"]),
        )
        calls, failed = self._remote_preflights
        self._remote_preflights = (
            calls + int(output.get("preflight_calls", 0)),
            failed + int(output.get("preflight_failed", 0)),
        )
        for nodeid, outcome in output["outcomes"].items():
            self.outcomes.setdefault(nodeid, outcome)  # outcomes forwarded with the test reports win

    def add_remote(self, records: Iterable[CostRecord], refusals: Iterable[Refusal], failed_attempts: int = 0) -> None:
        """Add records and refusals another process made (read back from a shared ledger, for instance).

        Under `max_records`, the records kept here and by the guard stay within it; the rest are tallied.
        """
        limit = self.max_records
        if limit is None:
            self._remote_records.extend(records)
        else:
            kept = self._remote_records
            room = limit - len(self._guard.records if self._guard is not None else ()) - len(kept)
            for record in records:
                if self._remote_overflow is not None:
                    self._remote_overflow.add(record)
                elif room > 0:
                    kept.append(record)
                    room -= 1
                else:
                    self._remote_overflow = tally = self._new_tally()
                    for earlier in kept:
                        tally.add(earlier)
                    tally.add(record)
        self._remote_refusals.extend(refusals)
        self._remote_failed_attempts += failed_attempts

    # -- totals ----------------------------------------------------------------------------------------------
    @property
    def records(self) -> list[CostRecord]:
        """Every billed call of the run (the first `max_records` of them, when it was reached)."""
        local = self._guard.records if self._guard is not None else []
        return [*local, *self._remote_records]

    @property
    def refusals(self) -> list[Refusal]:
        """Every refused call of the run."""
        local = self._guard.refusals if self._guard is not None else []
        return [*local, *self._remote_refusals]

    @property
    def failed_attempts(self) -> int:
        """HTTP attempts that failed and were not billed."""
        local = self._guard.failed_attempts if self._guard is not None else 0
        return local + self._remote_failed_attempts

    @property
    def preflights(self) -> tuple[int, int]:
        """Exact input counts asked for before admitting calls, and how many of them failed."""
        calls, failed = self._remote_preflights
        if self._guard is not None:
            calls, failed = calls + self._guard.preflight_calls, failed + self._guard.preflight_failed
        return calls, failed

    def tally(self) -> Tally | None:
        """The sums of every call of the run when some records were not kept (`max_records`), else None."""
        guard = self._guard
        if (guard is None or guard.overflow is None) and self._remote_overflow is None:
            return None
        from ..core.tally import Tally

        local = guard.tally() if guard is not None else self._new_tally()
        remote = self._remote_overflow or Tally.of(self._remote_records, self.budget, self.test_budgets)
        return local.merge(remote)

    @property
    def happened(self) -> bool:
        """Whether any call was billed or refused anywhere in the run."""
        return bool(self.records or self.refusals)

    def finish(self) -> None:
        """Charge the calls still open (streams never closed) at their worst case."""
        if self._guard is not None:
            self._guard.settle_open()

    def build_report(self) -> dict[str, Any]:
        """Build the run's JSON report (schema pytest-costguard/1)."""
        from ..reports.model import build_report

        return build_report(
            self.records,
            self.outcomes,
            budget=self.budget,
            budget_per_test=self.budget_per_test,
            test_budgets=self.test_budgets,
            refusals=self.refusals,
            failed_attempts=self.failed_attempts,
            preflights=self.preflights,
            labels=self.labels,
            tally=self.tally(),
        )
