"""Immutable cost tracking: records of what each call cost and a tracker that sums them.

`CostTracker.add` returns a new tracker and never mutates the old one, as in the seed design, but unlike the
seed's tuple rebuild (quadratic over a run) each add costs O(1): trackers share an immutable chain of records
and carry their running total.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..domain.money import to_decimal
from ..domain.records import MONEY_FIELDS, RECORD_FIELDS, CostRecord

# MONEY_FIELDS, RECORD_FIELDS and CostRecord are re-exported from domain.records (their home before 0.2 was here).
__all__ = ["MONEY_FIELDS", "RECORD_FIELDS", "CostRecord", "CostTracker", "to_decimal"]


@dataclass(frozen=True, slots=True)
class _Link:
    record: CostRecord
    previous: _Link | None


@dataclass(frozen=True, slots=True)
class CostTracker:
    """An immutable running account of LLM spend against an optional budget."""

    budget_limit: Decimal | None = Decimal("1.00")
    """The budget in USD; None for no limit."""
    total_cost: Decimal = Decimal(0)
    """Sum of every record's cost."""
    count: int = 0
    """Number of records."""
    _last: _Link | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.budget_limit is not None and not isinstance(self.budget_limit, Decimal):
            object.__setattr__(self, "budget_limit", to_decimal(self.budget_limit, name="budget_limit"))

    def add(self, record: CostRecord) -> CostTracker:
        """Return a new tracker with `record` added (never mutates self)."""
        return CostTracker(
            budget_limit=self.budget_limit,
            total_cost=self.total_cost + record.cost_usd,
            count=self.count + 1,
            _last=_Link(record, self._last),
        )

    @property
    def records(self) -> tuple[CostRecord, ...]:
        """Every record, oldest first (built on demand: O(n))."""
        out: list[CostRecord] = []
        link = self._last
        while link is not None:
            out.append(link.record)
            link = link.previous
        out.reverse()
        return tuple(out)

    def __iter__(self) -> Iterator[CostRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return self.count

    @property
    def over_budget(self) -> bool:
        """Whether spend is above the budget."""
        return self.budget_limit is not None and self.total_cost > self.budget_limit

    @property
    def remaining(self) -> Decimal | None:
        """Budget left (never negative), or None without a budget."""
        if self.budget_limit is None:
            return None
        return max(self.budget_limit - self.total_cost, Decimal(0))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, CostTracker):
            return NotImplemented
        return (self.budget_limit, self.total_cost, self.records) == (
            other.budget_limit,
            other.total_cost,
            other.records,
        )

    def __hash__(self) -> int:
        return hash((self.budget_limit, self.total_cost, self.count))
