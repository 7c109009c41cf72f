"""Merge the JSON reports of CI shards into one report of the same schema.

Pure functions of reports (no pytest import), used by `costguard merge`. Money is summed as
`Decimal(str(float))`: the JSON numbers are short decimals, and summing them as floats would drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from ..domain.money import format_usd, usd_from_json, usd_to_json
from .model import SCHEMA, ReportError, calls_total

__all__ = ["merge_reports", "merged_over_budget"]

# Keys `report.build_report` writes; any other top-level key is a label (e.g. "backend"), kept when all agree.
_KNOWN = frozenset(
    (
        "schema", "currency", "created", "budget_usd", "budget_per_test_usd", "total_cost_usd",
        "budget_exceeded", "overspent_usd", "overspend", "overspends", "refused_calls", "refusals",
        "failed_attempts", "estimated_calls", "unpriced_calls", "tests", "preflight_calls", "preflight_failed",
        "session", "calls", "by_model", "savings", "shards", "replayed_calls", "calls_total", "calls_truncated",
    )
)
# Per-run views that do not add up across shards: a merged report has none.
_DROPPED = frozenset({"baseline", "markdown_sections"})
_TOTAL_INTS = ("calls", "input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation_input_tokens", "estimated_calls")


def _sum_totals(totals: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    cost = Decimal(0)
    counts = dict.fromkeys(_TOTAL_INTS, 0)
    for entry in totals:
        cost += usd_from_json(entry.get("cost_usd"))
        for key in _TOTAL_INTS:
            counts[key] += int(entry.get(key, 0))
    return {"cost_usd": usd_to_json(cost), **counts}


def _agreed(reports: Sequence[Mapping[str, Any]], key: str) -> Any:
    values = [r.get(key) for r in reports]
    return values[0] if all(v == values[0] for v in values) else None


def merge_reports(
    reports: Sequence[Mapping[str, Any]],
    *,
    sources: Sequence[str] | None = None,
    budget: Decimal | None = None,
) -> dict[str, Any]:
    """Merge shard reports (already validated by `report.load_report`) into one.

    Tests, calls and refusals are concatenated; totals, per-model figures and savings are summed. The merged
    budget is `budget` when given, else the sum of the shards' budgets when every shard had one.
    `budget_exceeded` is true when any shard's was, or when the merged total is over `budget`.
    Raise `ReportError` when the reports cannot be merged (mixed currencies or schemas, malformed figures).
    """
    if not reports:
        raise ReportError("no reports to merge")
    names = list(sources) if sources is not None else [f"report {i + 1}" for i in range(len(reports))]
    if len(names) != len(reports):
        raise ValueError("sources must name every report")
    for field, label in (("schema", "schemas"), ("currency", "currencies")):
        default = "USD" if field == "currency" else None
        seen = {str(r.get(field, default)): n for r, n in zip(reports, names, strict=True)}
        if len(seen) > 1:
            listed = ", ".join(f"{value!r} ({name})" for value, name in seen.items())
            raise ReportError(f"cannot merge reports with different {label}: {listed}")
    seen_reports: dict[str, str] = {}
    for report, name in zip(reports, names, strict=True):
        fingerprint = json.dumps(report, sort_keys=True, default=str)
        if fingerprint in seen_reports:
            raise ReportError(
                f"{name} and {seen_reports[fingerprint]} are the same report: merging it twice would count its "
                "spend twice"
            )
        seen_reports[fingerprint] = name
        try:
            _check_figures(report)
        except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
            raise ReportError(f"{name}: malformed report ({type(exc).__name__}: {exc})") from None
    return _merge(reports, names, budget)


def _check_figures(report: Mapping[str, Any]) -> None:
    usd_from_json(report["total_cost_usd"])
    for entry in (*report["tests"], *report["calls"], *report.get("by_model", {}).values()):
        usd_from_json(entry["cost_usd"])
    _sum_totals(report["tests"])
    for key in ("budget_usd", "budget_per_test_usd"):
        usd_from_json(report.get(key))
    for key in ("routing_usd", "caching_usd", "total_usd"):
        usd_from_json(report.get("savings", {}).get(key))
    usd_from_json(report.get("overspent_usd"))
    int(report.get("refused_calls", 0))
    int(report.get("failed_attempts", 0))


def _merge(
    reports: Sequence[Mapping[str, Any]], names: Sequence[str], budget: Decimal | None
) -> dict[str, Any]:
    total = sum((usd_from_json(r["total_cost_usd"]) for r in reports), Decimal(0))
    budgets = [r.get("budget_usd") for r in reports]
    if budget is None and all(b is not None for b in budgets):
        budget = sum((usd_from_json(b) for b in budgets), Decimal(0))
    per_test = _agreed(reports, "budget_per_test_usd")
    models: dict[str, list[Mapping[str, Any]]] = {}
    for report in reports:
        for model, totals in report.get("by_model", {}).items():
            models.setdefault(model, []).append(totals)
    labels = {
        key: value
        for key in dict.fromkeys(k for r in reports for k in r)
        if key not in _KNOWN and key not in _DROPPED and (value := _agreed(reports, key)) is not None
    }
    exceeded = any(bool(r.get("budget_exceeded")) for r in reports) or (budget is not None and total > budget)
    # Shards are disjoint: what each overspent adds up. A call index points into its own shard's calls.
    overspent = sum((usd_from_json(r.get("overspent_usd")) for r in reports), Decimal(0))
    overspends = [
        {**over, "source": name} for r, name in zip(reports, names, strict=True) for over in r.get("overspends", ())
    ]
    savings = {
        key: usd_to_json(sum((usd_from_json(r.get("savings", {}).get(key)) for r in reports), Decimal(0)))
        for key in ("routing_usd", "caching_usd", "replay_usd", "total_usd")
    }
    return {
        "schema": SCHEMA,
        "currency": reports[0].get("currency", "USD"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **labels,
        "budget_usd": None if budget is None else usd_to_json(budget),
        "budget_per_test_usd": per_test,
        "total_cost_usd": usd_to_json(total),
        "budget_exceeded": exceeded,
        "overspent_usd": usd_to_json(overspent),
        "overspend": max(overspends, key=lambda o: o["over_usd"], default=None),
        "overspends": overspends,
        "refused_calls": sum(int(r.get("refused_calls", 0)) for r in reports),
        "refusals": [refusal for r in reports for refusal in r.get("refusals", ())],
        "failed_attempts": sum(int(r.get("failed_attempts", 0)) for r in reports),
        "preflight_calls": sum(int(r.get("preflight_calls", 0)) for r in reports),
        "preflight_failed": sum(int(r.get("preflight_failed", 0)) for r in reports),
        "estimated_calls": sum(int(r.get("estimated_calls", 0)) for r in reports),
        "unpriced_calls": sum(int(r.get("unpriced_calls", 0)) for r in reports),
        "replayed_calls": sum(int(r.get("replayed_calls", 0)) for r in reports),
        "tests": [test for r in reports for test in r["tests"]],
        "session": _sum_totals(r.get("session", {}) for r in reports),
        "calls_total": sum(calls_total(r) for r in reports),
        "calls_truncated": any(calls_total(r) > len(r["calls"]) for r in reports),
        "calls": [call for r in reports for call in r["calls"]],
        "by_model": {model: _sum_totals(entries) for model, entries in sorted(models.items())},
        "savings": savings,
        "shards": [
            {
                "source": name,
                "total_cost_usd": r["total_cost_usd"],
                "calls": calls_total(r),
                "budget_usd": r.get("budget_usd"),
                "budget_exceeded": bool(r.get("budget_exceeded")),
                "overspent_usd": r.get("overspent_usd") or 0,
            }
            for r, name in zip(reports, names, strict=True)
        ],
    }


def merged_over_budget(merged: Mapping[str, Any]) -> list[str]:
    """Return why a merged report fails the run (empty when it passes)."""
    reasons = [
        f"{shard['source']}: its budget was exceeded ({_how(shard)})"
        for shard in merged.get("shards", ())
        if shard["budget_exceeded"]
    ]
    budget = merged.get("budget_usd")
    if budget is not None and usd_from_json(merged["total_cost_usd"]) > usd_from_json(budget):
        reasons.append(
            f"the merged total {format_usd(merged['total_cost_usd'])} is over the budget {format_usd(budget)}"
        )
    return reasons


def _how(shard: Mapping[str, Any]) -> str:
    over = shard.get("overspent_usd")
    return f"overspent {format_usd(over)}" if over else "calls were refused"
