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

from ..core.budget import Overspend
from ..core.tally import TOKEN_FIELDS as _TOKEN_FIELDS
from ..core.tally import Tally, blank_totals
from ..domain.money import format_usd, usd_to_json
from ..domain.records import CostRecord, Refusal, is_endpoint_label, record_to_dict, refusal_to_dict

__all__ = [
    "REPORT_SUFFIXES",
    "SCHEMA",
    "ReportError",
    "build_report",
    "calls_listed_line",
    "calls_total",
    "cost_rows",
    "format_usd",
    "load_report",
    "plural",
    "render_markdown",
    "savings_line",
    "terminal_lines",
    "verdict_lines",
    "write_report",
]

SCHEMA = "pytest-costguard/1"


class ReportError(ValueError):
    """A report file that cannot be read or is not a pytest-costguard report."""


RefusalInfo = Refusal
"""The name of `Refusal` before 0.2."""


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
    # Renamed and filled in place: copying 17 keys into a new dict was a third of a large report's build time.
    entry["nodeid"] = entry.pop("tag")
    entry["requested_model"] = record.requested_model or record.model
    return entry


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
    preflights: tuple[int, int] = (0, 0),
    tally: Tally | None = None,
) -> dict[str, Any]:
    """Build the JSON report of a run from its billed calls and its tests' outcomes.

    The budget is exceeded when the session budget refused a call, or when what was settled went over the
    session budget or a test's own budget (`test_budgets`, by node id): the second means the worst-case bound's
    assumptions failed for some call, and is reported under `overspend`. With a `tally` of every call (a run
    that kept only its first records, `--llm-max-records`), `records` are the calls listed and every figure
    is the tally's; `calls_total` counts them all and `calls_truncated` says whether some are not listed.
    """
    records = list(records)
    if tally is None:
        tally = Tally.of(records, budget, test_budgets)
    per_test: dict[str, dict[str, Any]] = {nodeid: tally.per_test.get(nodeid) or blank_totals() for nodeid in outcomes}
    for nodeid, totals in tally.per_test.items():
        if nodeid not in per_test:
            per_test[nodeid] = totals
    calls = [record_json(record) for record in records]
    tests = [
        {"nodeid": nodeid, "outcome": outcomes.get(nodeid, "unknown"), **_totals_json(totals)}
        for nodeid, totals in per_test.items()
    ]
    session_refusals = [r for r in refusals if r.scope == "session"]
    overspends = tally.overspends()
    session_over = sum((o.over for o in overspends if o.scope == "session"), Decimal(0))
    tests_over = sum((o.over for o in overspends if o.scope != "session"), Decimal(0))
    overspend_json = [_overspend_json(o) for o in overspends]
    routing_saved, caching_saved, replay_saved = tally.routing_saved, tally.caching_saved, tally.replay_saved
    return {
        "schema": SCHEMA,
        "currency": "USD",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(dict(labels) if labels else {}),
        "budget_usd": None if budget is None else usd_to_json(budget),
        "budget_per_test_usd": None if budget_per_test is None else usd_to_json(budget_per_test),
        "total_cost_usd": usd_to_json(tally.total),
        "budget_exceeded": bool(session_refusals or overspends),
        "overspent_usd": usd_to_json(max(session_over, tests_over)),
        "overspend": max(overspend_json, key=lambda o: o["over_usd"], default=None),
        "overspends": overspend_json,
        "refused_calls": len(refusals),
        "refusals": [refusal_to_dict(r, money=usd_to_json) for r in refusals],
        "failed_attempts": failed_attempts,
        "preflight_calls": preflights[0],
        "preflight_failed": preflights[1],
        "estimated_calls": tally.estimated,
        "unpriced_calls": tally.unpriced,
        "worst_case_overruns": tally.overruns,
        "replayed_calls": tally.replayed,
        "calls_total": tally.calls,
        "calls_truncated": tally.calls > len(calls),
        "tests": tests,
        "session": _totals_json(tally.session),
        "calls": calls,
        "by_model": {model: _totals_json(t) for model, t in sorted(tally.by_model.items())},
        "savings": {
            "routing_usd": usd_to_json(routing_saved),
            "caching_usd": usd_to_json(caching_saved),
            "replay_usd": usd_to_json(replay_saved),
            "total_usd": usd_to_json(routing_saved + caching_saved + replay_saved),
        },
    }


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


def calls_total(report: Mapping[str, Any]) -> int:
    """How many calls a report counts: all of them, also those a record limit left out of its `calls` list."""
    return int(report.get("calls_total", len(report["calls"])))


def calls_listed_line(report: Mapping[str, Any]) -> str | None:
    """Say "1,000 of 25,000 calls listed" when a record limit left calls out of the list; None when none were."""
    total = calls_total(report)
    listed = len(report["calls"])
    if listed >= total:
        return None
    return f"{listed:,} of {plural(total, 'call')} listed (--llm-max-records); every total counts all {total:,}"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """Return "1 call", "2 calls": a count with its noun in agreement."""
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """Say why a run broke its budget ("LLM BUDGET EXCEEDED: ..."), one line per reason; empty when it did not."""
    if not report.get("budget_exceeded"):
        return []
    lines = []
    refused = sum(1 for r in report.get("refusals", ()) if r["scope"] == "session")
    if refused:
        lines.append(
            f"LLM BUDGET EXCEEDED: {plural(refused, 'call')} refused by the session budget (--llm-budget); "
            "the run fails."
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


def _model_rows(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The by-model rows, each model named with its provider when the run called more than one provider."""
    by_model = report["by_model"]
    providers = {t.get("provider", "anthropic") for t in by_model.values()}
    if len(providers) <= 1:
        return list(by_model.items())
    return [(f"{m} ({t.get('provider', 'anthropic')})", t) for m, t in by_model.items()]


def savings_line(report: Mapping[str, Any]) -> str | None:
    """Say what routing and caching saved ("saved $0.313 by caching"); None when neither changed the cost.

    A lever that cost more than it saved is said in words, never as a negative saving: routing when calls were
    answered by a pricier model than the one asked for (a gateway substituted one, or a route map sends there),
    caching when prompts were written to the cache (at 1.25x the input price) and not read back enough.
    """
    savings = report.get("savings") or {}
    levers = [
        ("routing", Decimal(str(savings.get("routing_usd", 0))), "the models asked for would have cost less"),
        ("caching", Decimal(str(savings.get("caching_usd", 0))), "cache writes not read back enough"),
        ("replay", Decimal(str(savings.get("replay_usd", 0))), "never: a replayed call costs nothing"),
    ]
    saved = [(name, amount) for name, amount, _ in levers if amount > 0]
    cost = [(name, -amount, why) for name, amount, why in levers if amount < 0]
    parts = []
    if len(saved) == 1:
        parts.append(f"saved {format_usd(saved[0][1])} by {saved[0][0]}")
    elif saved:
        each = ", ".join(f"{name} {format_usd(amount)}" for name, amount in saved)
        parts.append(f"saved {format_usd(sum(a for _, a in saved))} ({each})")
    parts += [f"{name} cost {format_usd(amount)} more ({why})" for name, amount, why in cost]
    return "; ".join(parts) or None


def _expensive(report: Mapping[str, Any], top: int) -> list[Mapping[str, Any]]:
    billed = [t for t in report["tests"] if t["calls"]]
    return sorted(billed, key=lambda t: (-t["cost_usd"], t["nodeid"]))[:top]


_COLUMNS = ("cost", "calls", "input", "cache write", "cache read", "output")
"""The figures of a cost table's row, in order: the four token kinds are what its cost is made of."""


def _figures(totals: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        format_usd(totals.get("cost_usd", 0)),
        f"{totals.get('calls', 0):,}",
        f"{totals.get('input_tokens', 0):,}",
        f"{totals.get('cache_creation_input_tokens', 0):,}",
        f"{totals.get('cache_read_input_tokens', 0):,}",
        f"{totals.get('output_tokens', 0):,}",
    )


def _sum(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"cost_usd": Decimal(0), "calls": 0, **{f: 0 for f in _TOKEN_FIELDS}}
    for entry in entries:
        total["cost_usd"] += Decimal(str(entry.get("cost_usd", 0)))
        for name in ("calls", *_TOKEN_FIELDS):
            total[name] += entry.get(name, 0)
    return total


def cost_rows(report: Mapping[str, Any], *, top: int) -> list[tuple[str, Mapping[str, Any]]]:
    """The rows of the tests' cost table: the `top` most expensive tests, the rest summed in one row, and the
    calls made outside tests; together they add up to the run's total."""
    billed = _expensive(report, len(report["tests"]))
    rows: list[tuple[str, Mapping[str, Any]]] = [(t["nodeid"], t) for t in billed[:top]]
    rest = billed[top:]
    if rest:
        rows.append((f"({plural(len(rest), 'more test')})", _sum(rest)))
    session = report.get("session") or {}
    if session.get("calls"):
        rows.append(("(outside tests)", session))
    return rows


def _counts_line(report: Mapping[str, Any]) -> str | None:
    """Say what was not billed normally: failed attempts, estimated calls, refusals by tests' own budgets."""
    parts = []
    if report.get("failed_attempts"):
        parts.append(f"{plural(report['failed_attempts'], 'failed attempt')} (not billed)")
    if report.get("estimated_calls"):
        parts.append(
            f"{plural(report['estimated_calls'], 'call')} estimated (incomplete usage, charged conservatively)"
        )
    session_refused = sum(1 for r in report.get("refusals", ()) if r.get("scope") == "session")
    refused = report.get("refused_calls", 0)
    if refused > session_refused:
        by_tests = refused - session_refused
        parts.append(f"{plural(by_tests, 'call')} refused by tests' own budgets (not sent)")
    return "; ".join(parts) or None


def render_markdown(report: Mapping[str, Any], *, top: int = 20) -> str:
    """Render a report as Markdown (for CI step summaries and pull-request comments)."""
    title = "LLM cost report"
    if report.get("backend") == "emulator":
        title += " (emulator: simulated costs)"
    lines = [f"## {title}", ""]
    verdict = verdict_lines(report)
    if verdict:
        lines += [f"**{line}**" for line in verdict] + [""]
    lines.append(f"- Total: **{budget_line(report)}**, {plural(calls_total(report), 'call')}")
    listed = calls_listed_line(report)
    if listed:
        lines.append(f"- {listed[0].upper()}{listed[1:]}")
    counts = _counts_line(report)
    if counts:
        lines.append(f"- {counts[0].upper()}{counts[1:]}")
    saved = savings_line(report)
    if saved:
        lines.append(f"- {saved[0].upper()}{saved[1:]}")
    rows = cost_rows(report, top=top)
    header = tuple(c.capitalize() for c in _COLUMNS)
    if rows:
        lines += ["", "### Most expensive tests", ""]
        lines += _table(
            ("Test", *header),
            ((f"`{name}`" if not name.startswith("(") else name, *_figures(t)) for name, t in rows),
        )
    if report["by_model"]:
        lines += ["", "### By model", ""]
        lines += _table(("Model", *header), ((f"`{name}`", *_figures(t)) for name, t in _model_rows(report)))
    for extra in report.get("markdown_sections", ()):
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def _aligned(rows: Sequence[tuple[str, Sequence[str]]], widths: Sequence[int]) -> list[str]:
    """Lay out figures right-aligned, each row's name last (as pytest's --durations does), so a long node id
    never pushes or truncates a figure."""
    return ["  ".join(f.rjust(w) for f, w in zip(figures, widths, strict=True)) + "  " + name for name, figures in rows]


def terminal_lines(report: Mapping[str, Any], *, top: int = 10) -> list[str]:
    """Render a report as plain lines for the terminal summary."""
    out: list[str] = []
    tests = [(name, _figures(t)) for name, t in cost_rows(report, top=top)]
    models = [(name, _figures(t)) for name, t in _model_rows(report)]
    # One set of widths for both tables, so their columns line up.
    widths = [max([len(h), *(len(f[i]) for _, f in (*tests, *models))]) for i, h in enumerate(_COLUMNS)]
    if tests:
        out += _aligned([("test", _COLUMNS), *tests], widths)
    if models:
        out += _aligned([("model", _COLUMNS), *models], widths)
    out.append(f"budget used: {budget_line(report)}")
    listed = calls_listed_line(report)
    if listed:
        out.append(listed)
    saved = savings_line(report)
    if saved:
        out.append(saved)
    savings = report["savings"]
    if report.get("replayed_calls"):
        replayed = report["replayed_calls"]
        out.append(
            f"replay: {plural(replayed, 'call')} answered from cassettes, nothing sent or billed; saved "
            f"{format_usd(savings.get('replay_usd', 0))} (their recorded usage at today's prices)"
        )
    counts = _counts_line(report)
    if counts:
        out.append(counts)
    if report.get("preflight_calls"):
        failed = report.get("preflight_failed", 0)
        fell_back = f", {failed} failed (those calls kept their local bound)" if failed else ""
        out.append(f"preflight counts (count_tokens: free, rate-limited): {report['preflight_calls']}{fell_back}")
    unpriced = [c["model"] for c in report["calls"] if c.get("unpriced")]
    by_model = [m for m in unpriced if not is_endpoint_label(m)]
    by_endpoint = [m for m in unpriced if is_endpoint_label(m)]
    if by_model:
        out.append(
            f"WARNING: {plural(len(by_model), 'call')} answered by a model with no known price "
            f"({', '.join(sorted(set(by_model)))}) {'was' if len(by_model) == 1 else 'were'} sent, as no budget "
            "applied, and recorded unpriced (at $0, or at the requested model's price when only the answering "
            "model was unknown); add prices to llm_prices"
        )
    if by_endpoint:
        out.append(
            f"WARNING: {plural(len(by_endpoint), 'call')} the meter cannot price "
            f"({', '.join(sorted(set(by_endpoint)))}: an endpoint not known to be free, or a body it cannot read) "
            f"{'was' if len(by_endpoint) == 1 else 'were'} sent, as no budget applied, and recorded unpriced at $0; "
            "declare endpoints that never bill in llm_free_endpoints (docs/budgets.md)"
        )
    if report.get("worst_case_overruns"):
        overruns = report["worst_case_overruns"]
        out.append(
            f"WARNING: {plural(overruns, 'call')} cost more than {'its' if overruns == 1 else 'their'} pre-send "
            "worst case: the budget bound's assumptions did not hold (see docs/budgets.md)"
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
