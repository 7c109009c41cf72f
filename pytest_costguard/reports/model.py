"""Cost reports: one JSON document (schema "pytest-costguard/1"), Markdown and terminal tables built from it.

Pure functions of records and outcomes: no pytest import, so `costguard merge` and `costguard report` use
the same code as the plugin.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from ..core.budget import Overspend, find_overspend
from ..domain.money import format_usd, usd_to_json
from ..domain.records import CostRecord, Refusal, record_to_dict, refusal_to_dict

__all__ = [
    "REPORT_SUFFIXES",
    "SCHEMA",
    "ReportError",
    "build_report",
    "format_usd",
    "load_report",
    "render_markdown",
    "terminal_lines",
    "verdict_lines",
    "write_report",
]

SCHEMA = "pytest-costguard/1"
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class ReportError(ValueError):
    """A report file that cannot be read or is not a pytest-costguard report."""


RefusalInfo = Refusal
"""The name of `Refusal` before 0.2."""


def _blank_totals() -> dict[str, Any]:
    return {"cost": Decimal(0), "calls": 0, "estimated": 0, **{f: 0 for f in _TOKEN_FIELDS}}


def _add(totals: dict[str, Any], record: CostRecord) -> None:
    totals["cost"] += record.cost_usd
    totals["calls"] += 1
    totals["estimated"] += record.estimated
    totals["input_tokens"] += record.input_tokens
    totals["output_tokens"] += record.output_tokens
    totals["cache_read_input_tokens"] += record.cache_read_input_tokens
    totals["cache_creation_input_tokens"] += record.cache_creation_input_tokens


def _totals_json(totals: Mapping[str, Any]) -> dict[str, Any]:
    provider = {"provider": totals["provider"]} if "provider" in totals else {}
    return {
        **provider,
        "cost_usd": usd_to_json(totals["cost"]),
        "calls": totals["calls"],
        **{f: totals[f] for f in _TOKEN_FIELDS},
        "estimated_calls": totals["estimated"],
    }


def record_json(record: CostRecord) -> dict[str, Any]:
    """Return one call as its JSON report entry: the record's own fields, money as numbers."""
    entry = record_to_dict(record, money=usd_to_json)
    return {"nodeid": entry.pop("tag"), **entry, "requested_model": record.requested_model or record.model}


def build_report(
    records: Iterable[CostRecord],
    outcomes: Mapping[str, str],
    *,
    budget: Decimal | None = None,
    budget_per_test: Decimal | None = None,
    test_budgets: Mapping[str, Decimal] | None = None,
    refusals: Sequence[Refusal] = (),
    failed_attempts: int = 0,
    labels: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON report of a run from its billed calls and its tests' outcomes.

    The budget is exceeded when the session budget refused a call, or when what was settled went over the
    session budget or a test's own budget (`test_budgets`, by node id): the second means the worst-case bound's
    assumptions failed for some call, and is reported under `overspend`.
    """
    records = list(records)
    per_test: dict[str, dict[str, Any]] = {nodeid: _blank_totals() for nodeid in outcomes}
    session = _blank_totals()
    by_model: dict[str, dict[str, Any]] = {}
    total = Decimal(0)
    routing_saved = Decimal(0)
    caching_saved = Decimal(0)
    calls = []
    overruns = 0
    for record in records:
        total += record.cost_usd
        if record.reserved_usd is not None and record.cost_usd > record.reserved_usd:
            overruns += 1
        # get-then-insert rather than setdefault: setdefault would build a throwaway dict for every record.
        target = session if record.tag is None else per_test.get(record.tag)
        if target is None:
            target = per_test[record.tag] = _blank_totals()  # type: ignore[index]
        _add(target, record)
        model_totals = by_model.get(record.model)
        if model_totals is None:
            model_totals = by_model[record.model] = {**_blank_totals(), "provider": record.provider}
        _add(model_totals, record)
        if record.cost_uncached_usd is not None:
            caching_saved += record.cost_uncached_usd - record.cost_usd
        if record.cost_at_requested_usd is not None and record.requested_model not in (None, record.model):
            routing_saved += record.cost_at_requested_usd - record.cost_usd
        calls.append(record_json(record))
    tests = [
        {"nodeid": nodeid, "outcome": outcomes.get(nodeid, "unknown"), **_totals_json(totals)}
        for nodeid, totals in per_test.items()
    ]
    session_refusals = [r for r in refusals if r.scope == "session"]
    overspends = _overspends(records, budget, test_budgets or {})
    session_over = sum((o.over for o in overspends if o.scope == "session"), Decimal(0))
    tests_over = sum((o.over for o in overspends if o.scope != "session"), Decimal(0))
    overspend_json = [_overspend_json(o) for o in overspends]
    return {
        "schema": SCHEMA,
        "currency": "USD",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(dict(labels) if labels else {}),
        "budget_usd": None if budget is None else usd_to_json(budget),
        "budget_per_test_usd": None if budget_per_test is None else usd_to_json(budget_per_test),
        "total_cost_usd": usd_to_json(total),
        "budget_exceeded": bool(session_refusals or overspends),
        "overspent_usd": usd_to_json(max(session_over, tests_over)),
        "overspend": max(overspend_json, key=lambda o: o["over_usd"], default=None),
        "overspends": overspend_json,
        "refused_calls": len(refusals),
        "refusals": [refusal_to_dict(r, money=usd_to_json) for r in refusals],
        "failed_attempts": failed_attempts,
        "estimated_calls": sum(1 for c in calls if c["estimated"]),
        "unpriced_calls": sum(1 for c in calls if c["unpriced"]),
        "worst_case_overruns": overruns,
        "tests": tests,
        "session": _totals_json(session),
        "calls": calls,
        "by_model": {model: _totals_json(t) for model, t in sorted(by_model.items())},
        "savings": {
            "routing_usd": usd_to_json(routing_saved),
            "caching_usd": usd_to_json(caching_saved),
            "total_usd": usd_to_json(routing_saved + caching_saved),
        },
    }


def _overspends(
    records: Sequence[CostRecord], budget: Decimal | None, test_budgets: Mapping[str, Decimal]
) -> list[Overspend]:
    """Every budget the settled spend went over: the session's, then each budgeted test's."""
    found = []
    session = find_overspend(records, budget, "session")
    if session is not None:
        found.append(session)
    if test_budgets:
        by_test: dict[str, list[tuple[int, CostRecord]]] = {}
        for index, record in enumerate(records):
            if record.tag is not None and record.tag in test_budgets:
                by_test.setdefault(record.tag, []).append((index, record))
        for nodeid, indexed in by_test.items():
            over = find_overspend((r for _, r in indexed), test_budgets[nodeid], f"test {nodeid}")
            if over is not None:
                # Name the call by its place among all the run's calls, as the report lists them.
                found.append(Overspend(over.scope, over.limit, over.spent, indexed[over.call_index][0], over.call))
    return found


def _overspend_json(overspend: Overspend) -> dict[str, Any]:
    call = overspend.call
    return {
        "scope": overspend.scope,
        "nodeid": call.tag,
        "budget_usd": usd_to_json(overspend.limit),
        "spent_usd": usd_to_json(overspend.spent),
        "over_usd": usd_to_json(overspend.over),
        "call_index": overspend.call_index,
        "model": call.model,
        "requested_model": call.requested_model or call.model,
        "cost_usd": usd_to_json(call.cost_usd),
        "reserved_usd": None if call.reserved_usd is None else usd_to_json(call.reserved_usd),
        "message": overspend.describe(),
    }


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """Say why a run broke its budget ("LLM BUDGET EXCEEDED: ..."), one line per reason; empty when it did not."""
    if not report.get("budget_exceeded"):
        return []
    lines = []
    refused = sum(1 for r in report.get("refusals", ()) if r["scope"] == "session")
    if refused:
        lines.append(
            f"LLM BUDGET EXCEEDED: {refused} call(s) refused by the session budget (--llm-budget); the run fails."
        )
    for over in report.get("overspends", ()):
        lines.append(f"LLM BUDGET EXCEEDED: overspent {format_usd(over['over_usd'])}: {over['message']}")
    if not lines:
        # A merged report, or one from an older version: it says the budget broke, not how.
        lines.append("LLM BUDGET EXCEEDED: the run broke its budget; the run fails.")
    return lines


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def budget_line(report: Mapping[str, Any]) -> str:
    """Return "$1.23 of $2.00, 61.5%" (or just the total without a budget)."""
    total = report["total_cost_usd"]
    budget = report.get("budget_usd")
    if budget is None:
        return f"{format_usd(total)} (no budget)"
    if not budget:
        return f"{format_usd(total)} of {format_usd(0)}"
    share = (Decimal(str(total)) * 100 / Decimal(str(budget))).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return f"{format_usd(total)} of {format_usd(budget)}, {share}%"


def _expensive(report: Mapping[str, Any], top: int) -> list[Mapping[str, Any]]:
    billed = [t for t in report["tests"] if t["calls"]]
    return sorted(billed, key=lambda t: (-t["cost_usd"], t["nodeid"]))[:top]


def render_markdown(report: Mapping[str, Any], *, top: int = 20) -> str:
    """Render a report as Markdown (for CI step summaries and pull-request comments)."""
    title = "LLM cost report"
    if report.get("backend") == "emulator":
        title += " (emulator: simulated costs)"
    lines = [f"## {title}", ""]
    verdict = verdict_lines(report)
    if verdict:
        lines += [f"**{line}**" for line in verdict] + [""]
    lines += [
        f"- Total: **{budget_line(report)}**",
        f"- Calls: {len(report['calls'])}, refused: {report['refused_calls']}, "
        f"failed attempts (not billed): {report['failed_attempts']}, estimated: {report['estimated_calls']}",
        f"- Saved: {format_usd(report['savings']['total_usd'])} "
        f"(routing {format_usd(report['savings']['routing_usd'])}, "
        f"caching {format_usd(report['savings']['caching_usd'])})",
        "",
        "### Most expensive tests",
        "",
    ]
    lines += _table(
        ("Test", "Calls", "Input", "Output", "Cache read", "Cost"),
        (
            (
                f"`{t['nodeid']}`",
                str(t["calls"]),
                str(t["input_tokens"]),
                str(t["output_tokens"]),
                str(t["cache_read_input_tokens"]),
                format_usd(t["cost_usd"]),
            )
            for t in _expensive(report, top)
        ),
    )
    lines += ["", "### By model", ""]
    lines += _table(
        ("Model", "Provider", "Calls", "Input", "Output", "Cost"),
        (
            (
                f"`{m}`",
                t.get("provider", "anthropic"),
                str(t["calls"]),
                str(t["input_tokens"]),
                str(t["output_tokens"]),
                format_usd(t["cost_usd"]),
            )
            for m, t in report["by_model"].items()
        ),
    )
    for extra in report.get("markdown_sections", ()):
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def terminal_lines(report: Mapping[str, Any], *, top: int = 10) -> list[str]:
    """Render a report as plain lines for the terminal summary."""
    out: list[str] = []
    expensive = _expensive(report, top)
    if expensive:
        width = min(max(len(t["nodeid"]) for t in expensive), 70)
        out.append(f"{'test':<{width}}  {'calls':>5}  {'in tok':>8}  {'out tok':>8}  {'cost':>10}")
        for t in expensive:
            nodeid = t["nodeid"] if len(t["nodeid"]) <= width else "..." + t["nodeid"][-(width - 3) :]
            out.append(
                f"{nodeid:<{width}}  {t['calls']:>5}  {t['input_tokens']:>8}  {t['output_tokens']:>8}  "
                f"{format_usd(t['cost_usd']):>10}"
            )
    session = report["session"]
    if session["calls"]:
        out.append(f"outside tests: {session['calls']} calls, {format_usd(session['cost_usd'])}")
    out.append(
        "by model: "
        + ", ".join(
            f"{m} ({t.get('provider', 'anthropic')}) {t['calls']} calls {format_usd(t['cost_usd'])}"
            for m, t in report["by_model"].items()
        )
    )
    out.append(f"budget used: {budget_line(report)}")
    savings = report["savings"]
    out.append(
        f"saved: {format_usd(savings['total_usd'])} (routing {format_usd(savings['routing_usd'])}, "
        f"caching {format_usd(savings['caching_usd'])})"
    )
    if report["failed_attempts"] or report["estimated_calls"]:
        out.append(
            f"failed attempts (not billed): {report['failed_attempts']}; "
            f"estimated (incomplete usage, charged conservatively): {report['estimated_calls']}"
        )
    if report["refused_calls"]:
        out.append(f"refused calls: {report['refused_calls']}")
    if report.get("unpriced_calls"):
        models = sorted({c["model"] for c in report["calls"] if c.get("unpriced")})
        out.append(
            f"WARNING: {report['unpriced_calls']} call(s) answered by a model with no known price "
            f"({', '.join(models)}) were sent, as no budget applied, and recorded unpriced (at $0, or at the "
            "requested model's price when only the answering model was unknown); add prices to llm_prices"
        )
    if report.get("worst_case_overruns"):
        out.append(
            f"WARNING: {report['worst_case_overruns']} call(s) cost more than their pre-send worst case: "
            "the budget bound's assumptions did not hold for them (see docs/budgets.md)"
        )
    return out


REPORT_SUFFIXES = (".json", ".md", ".markdown", ".html", ".htm")
"""What a report path may end in: its suffix picks the format."""


def write_report(
    report: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Write a report as JSON (`.json`), Markdown (`.md`) or HTML (`.html`, with the trend of `history`), atomically."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".json":
        text = json.dumps(report, separators=(",", ":")) + "\n"
    elif suffix in (".md", ".markdown"):
        text = render_markdown(report)
    elif suffix in (".html", ".htm"):
        from .html import render_html

        text = render_html(report, history=history)
    else:
        raise ReportError(f"{target}: a report path must end in .json, .md or .html")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON report, refusing anything that is not a pytest-costguard/1 report."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path}: not a JSON report ({exc})") from None
    if not isinstance(data, dict) or "schema" not in data:
        raise ReportError(f"{path}: not a pytest-costguard report (no schema field)")
    if data["schema"] != SCHEMA:
        raise ReportError(f"{path}: schema {data['schema']!r} is not {SCHEMA!r}")
    if data.get("currency", "USD") != "USD":
        raise ReportError(f"{path}: currency {data['currency']!r} is not USD")
    for key in ("total_cost_usd", "tests", "calls"):
        if key not in data:
            raise ReportError(f"{path}: the report has no {key!r}")
    return data
