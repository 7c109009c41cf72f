"""Tracking at scale: 100,000 add-and-check steps on `CostTracker` against the seed's tuple rebuild.

Each step is what a metered loop does per call: `t = t.add(record); t.over_budget`. The seed design rebuilt
the records tuple on every add (`records=(*self.records, record)`) and summed every cost on every check, so
a run of n calls costs O(n^2). Run to 100,000 steps that would take minutes, so the seed pattern is timed at
smaller n (three sizes, to show the growth is quadratic) and extrapolated to 100,000 by fitting
t(n) = a*n^2 + b*n to those points; the extrapolation is labelled as such in the output.

Run: python benchmarks/bench_tracking.py [--quick]
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass
from decimal import Decimal

from _bench import figure, fmt_time, make_parser, median

from pytest_costguard.core.tracking import CostRecord, CostTracker


@dataclass(frozen=True, slots=True)
class SeedTracker:
    """The seed design's tracker, kept here as the baseline: a tuple rebuilt per add, a sum per check."""

    budget_limit: Decimal | None = Decimal("1.00")
    records: tuple[CostRecord, ...] = ()

    def add(self, record: CostRecord) -> SeedTracker:
        return SeedTracker(self.budget_limit, (*self.records, record))

    @property
    def total_cost(self) -> Decimal:
        return sum((r.cost_usd for r in self.records), Decimal(0))

    @property
    def over_budget(self) -> bool:
        return self.budget_limit is not None and self.total_cost > self.budget_limit


def steps(tracker: CostTracker | SeedTracker, record: CostRecord, n: int) -> float:
    """Time n add-and-check steps; return seconds."""
    # GC off while timing: the seed pattern's garbage would otherwise trigger collections charged to
    # whichever variant happened to cross the threshold. Both variants get the same treatment.
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        t = tracker
        for _ in range(n):
            t = t.add(record)
            if t.over_budget:
                raise AssertionError("the benchmark budget is never meant to be exceeded")
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    assert len(t.records) == n
    return elapsed


def fit_quadratic(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares fit of t = a*n^2 + b*n (no constant: zero steps take no time); return (a, b)."""
    s44 = sum(n**4 for n, _ in points)
    s33 = sum(n**3 for n, _ in points)
    s22 = sum(n**2 for n, _ in points)
    t2 = sum(t * n**2 for n, t in points)
    t1 = sum(t * n for n, t in points)
    det = s44 * s22 - s33 * s33
    return (t2 * s22 - t1 * s33) / det, (s44 * t1 - s33 * t2) / det


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    quick: bool = args.quick
    n = 10_000 if quick else 100_000
    seed_sizes = (1_000, 2_000, 4_000) if quick else (5_000, 10_000, 20_000)
    repeats = 1 if quick else 3
    # The seed's runs are long (tens of seconds at 20k), so noise is a small part of them: time each once.
    seed_repeats = 1
    record = CostRecord(model="claude-haiku-4-5", input_tokens=100, output_tokens=20, cost_usd=Decimal("0.0002"))
    # A limit the run never reaches, so every check does the whole comparison and none short-circuits.
    limit = Decimal(10**9)

    new_t = median([steps(CostTracker(budget_limit=limit), record, n) for _ in range(repeats)])
    seed_points = [
        (size, median([steps(SeedTracker(budget_limit=limit), record, size) for _ in range(seed_repeats)]))
        for size in seed_sizes
    ]
    a, b = fit_quadratic(seed_points)
    seed_at_n = a * n * n + b * n
    new_at_sizes = {
        size: median([steps(CostTracker(budget_limit=limit), record, size) for _ in range(repeats)])
        for size in seed_sizes
    }
    growth = seed_points[-1][1] / seed_points[-2][1]

    figure(
        "tracking.costtracker",
        f"{n:,} add+check steps: CostTracker {fmt_time(new_t)} ({fmt_time(new_t / n)}/step) vs seed tuple "
        f"rebuild ~{fmt_time(seed_at_n)} (EXTRAPOLATED from n={'/'.join(f'{s:,}' for s in seed_sizes)} "
        f"by t=a*n^2+b*n): ratio {new_t / seed_at_n:.5f} ({seed_at_n / new_t:,.0f}x faster)",
        met=new_t < 0.5,
        target="< 0.5 s",
        quick=quick,
    )
    figure(
        "tracking.seed_measured",
        "seed tuple rebuild measured: "
        + ", ".join(
            f"n={size:,}: {fmt_time(t)} (CostTracker {fmt_time(new_at_sizes[size])}, "
            f"ratio {new_at_sizes[size] / t:.4f})"
            for size, t in seed_points
        )
        + f"; doubling n multiplied the seed's time by {growth:.2f} (quadratic: 4)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
