"""What a run's calls add up to, kept as they settle: every figure of the report without keeping every call.

`build_report` reads its totals, per-test and per-model figures, savings, counts and overspends from a
`Tally`. Built from the records in one pass it gives the same figures as before; kept by a guard whose record
limit (`--llm-max-records`) is reached, it goes on counting the calls whose records are no longer kept, so
the report stays exact while listing only the first calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from ..domain.records import CostRecord
from .budget import Overspend

__all__ = ["TOKEN_FIELDS", "Tally", "blank_totals"]

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
"""The token counts each total carries."""

_NO_BUDGETS: Mapping[str, Decimal] = {}


def blank_totals() -> dict[str, Any]:
    """The totals of no call: cost, calls, estimated calls and each token count at zero."""
    return {"cost": Decimal(0), "calls": 0, "estimated": 0, **{f: 0 for f in TOKEN_FIELDS}}


def _add(totals: dict[str, Any], record: CostRecord) -> None:
    totals["cost"] += record.cost_usd
    totals["calls"] += 1
    totals["estimated"] += record.estimated
    totals["input_tokens"] += record.input_tokens
    totals["output_tokens"] += record.output_tokens
    totals["cache_read_input_tokens"] += record.cache_read_input_tokens
    totals["cache_creation_input_tokens"] += record.cache_creation_input_tokens


def _merge_totals(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key in ("cost", "calls", "estimated", *TOKEN_FIELDS):
        into[key] += other[key]


class Tally:
    """The sums of a run's calls, in settlement order, against the budgets that apply to them.

    `test_budgets` is read as calls are added (a live mapping: a test's budget is set before its calls), so
    the call that first took a budget over is known without keeping the calls before it.
    """

    __slots__ = (
        "budget",
        "by_model",
        "caching_saved",
        "calls",
        "estimated",
        "last",
        "overruns",
        "per_test",
        "replay_saved",
        "replayed",
        "routing_saved",
        "session",
        "session_over",
        "test_budgets",
        "tests_over",
        "total",
        "unpriced",
    )

    def __init__(self, budget: Decimal | None = None, test_budgets: Mapping[str, Decimal] | None = None) -> None:
        self.budget = budget
        """The session's cap: the first call to take the total over it is kept (`session_over`)."""
        self.test_budgets = test_budgets if test_budgets is not None else _NO_BUDGETS
        """Each budgeted test's cap, by node id."""
        self.calls = 0
        """Calls added."""
        self.total = Decimal(0)
        """What they cost, USD."""
        self.session = blank_totals()
        """The totals of calls made outside any test."""
        self.per_test: dict[str, dict[str, Any]] = {}
        """Each test's totals, by node id, in the order of their first call."""
        self.by_model: dict[str, dict[str, Any]] = {}
        """Each billed model's totals (with its provider), in the order of their first call."""
        self.routing_saved = Decimal(0)
        self.caching_saved = Decimal(0)
        self.replay_saved = Decimal(0)
        self.replayed = 0
        self.overruns = 0
        """Calls that cost more than their pre-send worst case."""
        self.estimated = 0
        self.unpriced = 0
        self.session_over: tuple[int, CostRecord] | None = None
        """The index and record of the call whose settlement first took the total over `budget`."""
        self.tests_over: dict[str, tuple[int, CostRecord]] = {}
        """The same, for each test that went over its own budget."""
        self.last: tuple[int, CostRecord] | None = None
        """The index and record of the last call added."""

    @classmethod
    def of(
        cls,
        records: Iterable[CostRecord],
        budget: Decimal | None = None,
        test_budgets: Mapping[str, Decimal] | None = None,
    ) -> Tally:
        """Tally `records` (in settlement order)."""
        tally = cls(budget, test_budgets)
        add = tally.add
        for record in records:
            add(record)
        return tally

    def add(self, record: CostRecord) -> None:
        """Count one settled call."""
        index = self.calls
        self.calls = index + 1
        self.last = (index, record)
        cost = record.cost_usd
        self.total += cost
        if record.reserved_usd is not None and cost > record.reserved_usd:
            self.overruns += 1
        self.estimated += record.estimated
        self.unpriced += record.unpriced
        tag = record.tag
        # get-then-insert rather than setdefault: setdefault would build a throwaway dict for every record.
        if tag is None:
            target = self.session
        else:
            target = self.per_test.get(tag)  # type: ignore[assignment]
            if target is None:
                target = self.per_test[tag] = blank_totals()
        _add(target, record)
        model_totals = self.by_model.get(record.model)
        if model_totals is None:
            model_totals = self.by_model[record.model] = {**blank_totals(), "provider": record.provider}
        _add(model_totals, record)
        if record.replayed:
            # Not sent: what it would have cost is saved whole; its routing and caching were the recording's.
            self.replay_saved += record.replay_cost_usd or 0
            self.replayed += 1
        else:
            if record.cost_uncached_usd is not None:
                self.caching_saved += record.cost_uncached_usd - cost
            if record.cost_at_requested_usd is not None and record.requested_model not in (None, record.model):
                self.routing_saved += record.cost_at_requested_usd - cost
        if self.budget is not None and self.session_over is None and self.total > self.budget:
            self.session_over = (index, record)
        if tag is not None and self.test_budgets and tag not in self.tests_over:
            limit = self.test_budgets.get(tag)
            if limit is not None and target["cost"] > limit:
                self.tests_over[tag] = (index, record)

    def merge(self, other: Tally) -> Tally:
        """Return a tally of this one's calls followed by `other`'s (`other`'s indexes shift past this one's).

        A budget first exceeded by the two together, and by neither alone, is named by the last call the two
        know of: the report still says the budget broke and by how much, only the call it names is approximate.
        """
        merged = Tally(self.budget, self.test_budgets)
        for tally in (self, other):
            merged.total += tally.total
            _merge_totals(merged.session, tally.session)
            for tag, totals in tally.per_test.items():
                _merge_totals(merged.per_test.setdefault(tag, blank_totals()), totals)
            for model, totals in tally.by_model.items():
                if model not in merged.by_model:
                    merged.by_model[model] = {**blank_totals(), "provider": totals["provider"]}
                _merge_totals(merged.by_model[model], totals)
            merged.routing_saved += tally.routing_saved
            merged.caching_saved += tally.caching_saved
            merged.replay_saved += tally.replay_saved
            merged.replayed += tally.replayed
            merged.overruns += tally.overruns
            merged.estimated += tally.estimated
            merged.unpriced += tally.unpriced
        merged.calls = self.calls + other.calls
        shift = self.calls
        merged.last = _shifted(other.last, shift) or self.last
        merged.session_over = self.session_over or _shifted(other.session_over, shift)
        if merged.session_over is None and self.budget is not None and merged.total > self.budget:
            merged.session_over = merged.last
        merged.tests_over = dict(self.tests_over)
        for tag, (index, record) in other.tests_over.items():
            merged.tests_over.setdefault(tag, (index + shift, record))
        for tag, limit in self.test_budgets.items():
            spent = merged.per_test.get(tag)
            if spent is not None and merged.last is not None and tag not in merged.tests_over and spent["cost"] > limit:
                merged.tests_over[tag] = merged.last
        return merged

    def overspends(self) -> list[Overspend]:
        """Every budget the settled spend went over: the session's, then each budgeted test's."""
        found = []
        if self.session_over is not None and self.budget is not None:
            index, record = self.session_over
            found.append(Overspend("session", self.budget, self.total, index, record))
        # In the order of each test's first call, as the report lists the tests.
        for tag, totals in self.per_test.items():
            over = self.tests_over.get(tag)
            limit = self.test_budgets.get(tag)
            if over is not None and limit is not None:
                found.append(Overspend(f"test {tag}", limit, totals["cost"], over[0], over[1]))
        return found


def _shifted(over: tuple[int, CostRecord] | None, shift: int) -> tuple[int, CostRecord] | None:
    return None if over is None else (over[0] + shift, over[1])
