"""Immutable cost tracking: records of what each call cost and a tracker that sums them.

`CostTracker.add` returns a new tracker and never mutates the old one, as in the seed design, but unlike the
seed's tuple rebuild (quadratic over a run) each add costs O(1): trackers share an immutable chain of records
and carry their running total.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from .._fast import positional_constructor
from ..domain.money import to_decimal

__all__ = ["CostRecord", "CostTracker", "to_decimal"]


@dataclass(frozen=True, slots=True)
class CostRecord:
    """What one billed LLM call cost."""

    model: str
    """The model that billed the call (the response's `model`)."""
    input_tokens: int
    """Uncached input tokens."""
    output_tokens: int
    """Output tokens."""
    cost_usd: Decimal
    """Exact cost in USD."""
    requested_model: str | None = None
    """The model the caller asked for, before routing (None when it was not routed)."""
    cache_creation_input_tokens: int = 0
    """Input tokens written to the prompt cache."""
    cache_read_input_tokens: int = 0
    """Input tokens read from the prompt cache."""
    web_search_requests: int = 0
    """Server-side web searches."""
    tag: str | None = None
    """What the caller attached: for the pytest plugin, the test's node id."""
    streamed: bool = False
    """The response was streamed (SSE)."""
    retries: int = 0
    """HTTP attempts that failed before this one."""
    estimated: bool = False
    """The usage was incomplete (a stream cut short, a body without usage): cost is a conservative bound."""
    cost_at_requested_usd: Decimal | None = None
    """What the same usage would have cost at the requested model (for routing savings)."""
    cost_uncached_usd: Decimal | None = None
    """What the same tokens would have cost with no prompt caching (for caching savings)."""
    reserved_usd: Decimal | None = None
    """The worst case reserved before sending: a real cost above it means the bound's assumptions failed."""

    def __post_init__(self) -> None:
        if not isinstance(self.cost_usd, Decimal):
            object.__setattr__(self, "cost_usd", to_decimal(self.cost_usd, name="cost_usd"))

    @property
    def total_input_tokens(self) -> int:
        """All input tokens: uncached, written and read."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


make_record = positional_constructor(CostRecord)
"""Build a `CostRecord` from trusted values (all fields, no conversion): the guard makes one per call."""


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


RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CostRecord))
"""Every field of a `CostRecord`, in order: what serializers must carry."""
MONEY_FIELDS: frozenset[str] = frozenset(f.name for f in fields(CostRecord) if "Decimal" in str(f.type))
"""The `CostRecord` fields holding USD amounts (Decimal): serialized as text, never as floats."""
