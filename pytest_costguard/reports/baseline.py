"""Cost baselines: compare a run's report with an earlier one and find what got dearer.

Pure functions of two JSON reports (schema "pytest-costguard/1"); no pytest import. A test is compared only
when both reports have it; money is read back as `Decimal(str(float))`, so the JSON edge adds no drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..domain.money import format_usd, usd_from_json

__all__ = ["BaselineComparison", "CostChange", "compare"]

TOTAL = "<total>"
"""The name of the whole run's change among per-test ones."""


@dataclass(frozen=True, slots=True)
class CostChange:
    """What one test (or the whole run) cost in the baseline and now."""

    name: str
    """The test's node id, or `TOTAL`."""
    baseline_usd: Decimal
    """Its cost in the baseline."""
    current_usd: Decimal
    """Its cost in this run."""

    @property
    def delta_usd(self) -> Decimal:
        """How much dearer it got (negative when cheaper)."""
        return self.current_usd - self.baseline_usd

    @property
    def pct(self) -> Decimal | None:
        """The change in percent of the baseline; None when the baseline cost nothing."""
        if self.baseline_usd == 0:
            return None
        return self.delta_usd / self.baseline_usd * 100

    def describe(self) -> str:
        """Return "$0.10 -> $0.12 (+$0.02, +20.0%)"."""
        return f"{format_usd(self.baseline_usd)} -> {format_usd(self.current_usd)} ({self.change_text()})"

    def change_text(self) -> str:
        """Return "+$0.02, +20.0%" (or "+$0.02, new cost" from zero)."""
        delta = self.delta_usd
        sign = "+" if delta >= 0 else "-"
        pct = self.pct
        pct_text = "new cost" if pct is None else f"{pct:+.1f}%"
        return f"{sign}{format_usd(abs(delta))}, {pct_text}"

    def to_json(self) -> dict[str, Any]:
        """Return the change as JSON values."""
        pct = self.pct
        return {
            "name": self.name,
            "baseline_usd": float(self.baseline_usd),
            "current_usd": float(self.current_usd),
            "delta_usd": float(self.delta_usd),
            "pct": None if pct is None else float(round(pct, 2)),
        }


def exceeds(change: CostChange, *, fail_pct: Decimal, floor: Decimal) -> bool:
    """Return whether a change is a regression: above the floor in dollars and above `fail_pct` percent."""
    delta = change.delta_usd
    if delta <= 0 or delta < floor:
        return False
    pct = change.pct
    # From nothing to something above the floor is an unbounded increase.
    return pct is None or pct > fail_pct


@dataclass(frozen=True, slots=True)
class BaselineComparison:
    """A run's costs against a baseline's: what rose, what fell, and what broke the threshold."""

    total: CostChange
    """The whole run."""
    increases: tuple[CostChange, ...]
    """Tests in both runs that got dearer, biggest increase first."""
    decreases: tuple[CostChange, ...]
    """Tests in both runs that got cheaper, biggest decrease first."""
    failures: tuple[CostChange, ...]
    """The total and tests over the threshold (empty without one)."""
    new_tests: tuple[str, ...]
    """Tests only this run has."""
    removed_tests: tuple[str, ...]
    """Tests only the baseline has."""
    fail_pct: Decimal | None
    """The threshold in percent; None when the comparison only informs."""
    floor: Decimal
    """Increases below this many dollars never fail."""

    @property
    def failed(self) -> bool:
        """Whether the run should fail."""
        return bool(self.failures)

    def to_json(self) -> dict[str, Any]:
        """Return the comparison as the report's `baseline` object."""
        return {
            "total": self.total.to_json(),
            "increases": [c.to_json() for c in self.increases],
            "decreases": [c.to_json() for c in self.decreases],
            "failures": [c.to_json() for c in self.failures],
            "failed": self.failed,
            "fail_pct": None if self.fail_pct is None else float(self.fail_pct),
            "floor_usd": float(self.floor),
            "new_tests": list(self.new_tests),
            "removed_tests": list(self.removed_tests),
        }

    def _threshold(self) -> str:
        return f"+{self.fail_pct}% (ignoring increases under {format_usd(self.floor)})"

    def terminal_lines(self, *, top: int = 5) -> list[str]:
        """Return the comparison as plain lines for the terminal summary."""
        lines = [f"vs baseline: total {self.total.describe()}"]
        if self.increases:
            lines.append("biggest increases:")
            lines += [f"  {c.change_text():>18}  {c.name}" for c in self.increases[:top]]
        if self.decreases:
            lines.append("biggest decreases:")
            lines += [f"  {c.change_text():>18}  {c.name}" for c in self.decreases[:top]]
        if self.new_tests or self.removed_tests:
            lines.append(f"tests not in both runs: {len(self.new_tests)} new, {len(self.removed_tests)} gone")
        if self.failures:
            names = ", ".join("the total" if c.name == TOTAL else c.name for c in self.failures[:top])
            more = f" and {len(self.failures) - top} more" if len(self.failures) > top else ""
            lines.append(f"LLM COST REGRESSION over {self._threshold()}: {names}{more}")
        return lines

    def markdown(self, *, top: int = 10) -> str:
        """Return the comparison as a Markdown section (for the report's `markdown_sections`)."""
        lines = ["### Cost vs baseline", ""]
        if self.failures:
            lines += [f"**Cost regression: {len(self.failures)} over {self._threshold()}.**", ""]
        lines += [f"- Total: {self.total.describe()}"]
        if self.new_tests or self.removed_tests:
            lines += [f"- Tests not in both runs: {len(self.new_tests)} new, {len(self.removed_tests)} gone"]
        changed = [*self.increases[:top], *self.decreases[:top]]
        if changed:
            failing = {c.name for c in self.failures}
            lines += ["", "| Test | Baseline | Now | Change |", "|---|---|---|---|"]
            lines += [
                f"| `{c.name}` | {format_usd(c.baseline_usd)} | {format_usd(c.current_usd)} | "
                f"{'**' if c.name in failing else ''}{c.change_text()}{'**' if c.name in failing else ''} |"
                for c in changed
            ]
        return "\n".join(lines)


def _test_costs(report: Mapping[str, Any]) -> dict[str, Decimal]:
    # A merged report may hold a test once per shard that ran it: its cost is their sum.
    costs: dict[str, Decimal] = {}
    for test in report.get("tests", ()):
        nodeid = str(test["nodeid"])
        costs[nodeid] = costs.get(nodeid, Decimal(0)) + usd_from_json(test.get("cost_usd"))
    return costs


def compare(
    current: Mapping[str, Any],
    baseline: Mapping[str, Any],
    *,
    fail_pct: Decimal | None,
    floor: Decimal = Decimal("0.01"),
) -> BaselineComparison:
    """Compare a run's report with a baseline report.

    With `fail_pct`, the total and every test present in both count as failures when they cost more than
    `fail_pct` percent above the baseline, unless the increase is below `floor` dollars.
    """
    now, before = _test_costs(current), _test_costs(baseline)
    common = [CostChange(nodeid, before[nodeid], cost) for nodeid, cost in now.items() if nodeid in before]
    total = CostChange(
        TOTAL, usd_from_json(baseline.get("total_cost_usd")), usd_from_json(current.get("total_cost_usd"))
    )
    increases = sorted((c for c in common if c.delta_usd > 0), key=lambda c: (-c.delta_usd, c.name))
    decreases = sorted((c for c in common if c.delta_usd < 0), key=lambda c: (c.delta_usd, c.name))
    failures: list[CostChange] = []
    if fail_pct is not None:
        failures = [c for c in (total, *increases) if exceeds(c, fail_pct=fail_pct, floor=floor)]
    return BaselineComparison(
        total=total,
        increases=tuple(increases),
        decreases=tuple(decreases),
        failures=tuple(failures),
        new_tests=tuple(sorted(set(now) - set(before))),
        removed_tests=tuple(sorted(set(before) - set(now))),
        fail_pct=fail_pct,
        floor=floor,
    )
