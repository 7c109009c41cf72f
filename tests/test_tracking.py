from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pytest_costguard import CostRecord, CostTracker

records = st.builds(
    CostRecord,
    model=st.sampled_from(["claude-haiku-4-5", "claude-sonnet-4-6"]),
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**5),
    cost_usd=st.decimals(min_value=0, max_value=10, places=8, allow_nan=False, allow_infinity=False),
)


@given(st.lists(records, max_size=50), st.randoms())
def test_the_total_is_the_sum_of_the_records_whatever_the_order(items, rnd) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a = b = CostTracker(budget_limit=None)
    for r in items:
        a = a.add(r)
    for r in shuffled:
        b = b.add(r)
    assert a.total_cost == b.total_cost == sum((r.cost_usd for r in items), Decimal(0))
    assert a.records == tuple(items)
    assert len(a) == len(items)


@given(st.lists(records, max_size=20), records)
def test_add_never_changes_the_original(items, extra) -> None:
    tracker = CostTracker()
    for r in items:
        tracker = tracker.add(r)
    before = (tracker.total_cost, tracker.records, tracker.count)
    tracker.add(extra)
    assert (tracker.total_cost, tracker.records, tracker.count) == before


def test_over_budget_and_remaining() -> None:
    tracker = CostTracker(budget_limit=Decimal("1.00"))
    tracker = tracker.add(CostRecord("m", 1, 1, Decimal("0.75")))
    assert not tracker.over_budget and tracker.remaining == Decimal("0.25")
    tracker = tracker.add(CostRecord("m", 1, 1, Decimal("0.50")))
    assert tracker.over_budget and tracker.remaining == Decimal(0)


def test_the_seed_positional_form_and_float_costs_still_work() -> None:
    record = CostRecord("claude-haiku-4-5", 10, 20, 0.1)  # type: ignore[arg-type]
    assert record.cost_usd == Decimal("0.1")
    assert CostTracker(budget_limit=2.5).budget_limit == Decimal("2.5")  # type: ignore[arg-type]


def test_a_hundred_thousand_adds_keep_an_exact_total() -> None:
    # Not a timing test (benchmarks/ measures speed): the chain of links must stay exact at scale.
    tracker = CostTracker(budget_limit=None)
    record = CostRecord("m", 1, 1, Decimal("0.001"))
    for _ in range(100_000):
        tracker = tracker.add(record)
        assert not tracker.over_budget
    assert tracker.total_cost == Decimal("100.000")


