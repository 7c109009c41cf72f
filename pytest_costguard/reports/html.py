"""The HTML cost report: one self-contained page (inline CSS, JS and SVG) built from the JSON report.

The summary (budget gauge, savings by lever, the most expensive tests, cost by model, the trend over a
history) is rendered here, as static HTML and SVG: it reads without JavaScript, e.g. in a CI artifact viewer
whose content policy blocks scripts. The table of every test and every call is rendered in the browser by a
small inline script from a compact copy of the report embedded as JSON (`<script type="application/json">`),
one page of rows at a time, so 50,000 calls stay responsive. The page loads nothing from the network.

Money is formatted by `domain.money.format_usd` here and by `formatUsd` in the script, which applies the same
rule to the number's shortest decimal form (see docs/reports.md); a test checks the two agree.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from html import escape
from itertools import compress
from operator import itemgetter, ne
from typing import Any, cast

from ..domain.money import format_usd, usd_from_json
from .model import budget_line, calls_listed_line, calls_total

__all__ = ["render_history_html", "render_html"]

TOP_TESTS = 15
"""Bars in the chart of the most expensive tests."""
TREND_RUNS = 30
"""Runs shown in the trend chart."""
TREND_TESTS = 5
"""Tests drawn in the trend chart besides the total (the most expensive of the latest run)."""
PAGE_ROWS = 100
"""Rows of the table rendered at a time."""

# Call flags in the embedded data (one integer per call).
_ESTIMATED, _STREAMED, _REPLAYED, _REFUSED = 1, 2, 4, 8
_REPORT_PLACES = Decimal("1e-10")
"""The places of the JSON report's amounts (`domain.money.usd_to_json`)."""
_PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _int(value: Any) -> str:
    return f"{int(value or 0):,}"


def _dec(value: Any) -> Decimal:
    return usd_from_json(value)


# -- the embedded data -----------------------------------------------------------------------------------------

# The table's columns: (key in the embedded data and the page's script, field of the JSON report's entry).
_CALL_COLUMNS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_write", "cache_creation_input_tokens"),
    ("cache_read", "cache_read_input_tokens"),
    ("retries", "retries"),
    ("cost", "cost_usd"),
)
_TEST_COLUMNS = (
    ("calls", "calls"),
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_write", "cache_creation_input_tokens"),
    ("cache_read", "cache_read_input_tokens"),
    ("estimated", "estimated_calls"),
    ("cost", "cost_usd"),
)


def table_data(report: Mapping[str, Any]) -> dict[str, Any]:
    """Return the compact copy of the report's tests and calls the page's script renders the table from.

    Columnar: `tests` and `calls` each map a field to one flat list, row i of the table being entry i of every
    list. Strings (node ids, models, outcomes) are listed once and referred to by index (-1: none); tokens are
    integers; money is the JSON report's own numbers, copied, never recomputed. Test i is `names[i]`. Calls
    from `first_refusal` on are the refused calls (flagged refused, no model, no cost), their worst cases in
    `worst`.
    """
    return _digest(report)[0]


_Pairs = dict[tuple[int, int], tuple[int, int, int, int, int, Decimal]]
"""(requested model, billed model) -> (calls, input, cache write, cache read, output, cost)."""

# The calls' fields the table shows or reads, by name (the schema's; only `replayed`, newer, may be missing).
_CALL_FIELDS = ("nodeid", "model", "requested_model", "estimated", "streamed", *(f for _, f in _CALL_COLUMNS))


def _digest(report: Mapping[str, Any]) -> tuple[dict[str, Any], _Pairs, list[str]]:
    """The table's data, column by column, and the totals per (requested, billed) model pair."""
    tests: Sequence[Mapping[str, Any]] = report["tests"]
    calls: Sequence[Mapping[str, Any]] = report["calls"]
    names: list[str] = [test["nodeid"] for test in tests]
    name_index: dict[str | None, int] = {nodeid: i for i, nodeid in enumerate(names)}
    name_index[None] = -1  # a call outside any test

    def name_of(nodeid: str | None) -> int:
        found = name_index.get(nodeid)
        if found is None:  # a call of a test the report does not list (a hand-edited or partial report)
            found = name_index[nodeid] = len(names)
            names.append(nodeid)  # type: ignore[arg-type]  # None is always in name_index
        return found

    nodeids, billed_names, requested_names, estimated, streamed, *values = _columns(calls, _CALL_FIELDS)
    columns = dict(zip((key for key, _ in _CALL_COLUMNS), values, strict=True))
    found = list(map(name_index.get, nodeids))
    test_of: list[int] = list(map(name_of, nodeids)) if None in found else cast("list[int]", found)
    requested_names = [r or b for r, b in zip(requested_names, billed_names, strict=True)]
    models = sorted({*billed_names, *requested_names, *report.get("by_model", ())})
    model_index = {model: i for i, model in enumerate(models)}
    billed = list(map(model_index.__getitem__, billed_names))
    requested = list(map(model_index.__getitem__, requested_names))
    flags = [_ESTIMATED * e + _STREAMED * s for e, s in zip(estimated, streamed, strict=True)]  # bools: 0 or 1
    replayed_rows = [i for i, call in enumerate(calls) if call.get("replayed")]
    for i in replayed_rows:
        flags[i] |= _REPLAYED
    pairs = _model_pairs(report, requested, billed, columns, model_index)

    # A refused call is a row too, after the billed ones: flagged refused, no model, nothing spent.
    refusals: Sequence[Mapping[str, Any]] = report.get("refusals", ())
    first_refusal = len(calls)
    refused_of = [name_of(r.get("nodeid")) for r in refusals]
    test_of += refused_of
    requested += [-1] * len(refusals)
    billed += [-1] * len(refusals)
    for column in columns.values():
        column += [0] * len(refusals)
    flags += [_REFUSED] * len(refusals)

    # Per test: what only the calls say.
    retries_of = [0] * len(names)
    for i in compress(range(len(calls)), columns["retries"]):
        if test_of[i] >= 0:
            retries_of[test_of[i]] += columns["retries"][i]
    replayed_of = [0] * len(names)
    for i in replayed_rows:
        if test_of[i] >= 0:
            replayed_of[test_of[i]] += 1
    refusals_of = [0] * len(names)
    for name in refused_of:
        if name >= 0:
            refusals_of[name] += 1
    outcome_names = [test.get("outcome", "unknown") for test in tests]
    outcomes = sorted(set(outcome_names))
    outcome_index = {outcome: i for i, outcome in enumerate(outcomes)}
    count = len(tests)
    data = {
        "names": names,
        "models": models,
        "outcomes": outcomes,
        "tests": {
            "outcome": list(map(outcome_index.__getitem__, outcome_names)),
            **_test_columns(tests),
            "retries": retries_of[:count],
            "refused": refusals_of[:count],
            "replayed": replayed_of[:count],
        },
        "calls": {"test": test_of, "requested": requested, "model": billed, **columns, "flags": flags},
        "first_refusal": first_refusal,
        "worst": [r.get("worst_case_usd", 0) for r in refusals],
        "replay": bool(replayed_rows),
        "page_rows": PAGE_ROWS,
    }
    return data, pairs, models


def _columns(entries: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[list[Any]]:
    """One list per field: each entry's fields read in one visit (50,000 dicts read field by field is slower)."""
    rows = list(map(itemgetter(*fields), entries))
    return [list(map(itemgetter(i), rows)) for i in range(len(fields))]


def _test_columns(tests: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    fields = [field for _, field in _TEST_COLUMNS]
    try:
        columns = _columns(tests, fields)
    except KeyError:  # a report before 0.2, without the cache and estimated counts of a test
        columns = [[test.get(field, 0) for test in tests] for field in fields]
    return dict(zip((key for key, _ in _TEST_COLUMNS), columns, strict=True))


_TOTALS_FIELDS = {
    "calls",
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "cost_usd",
}
"""The fields of a `by_model` entry the cost by model reads."""


def _model_pairs(
    report: Mapping[str, Any],
    requested: Sequence[int],
    billed: Sequence[int],
    columns: Mapping[str, Sequence[Any]],
    model_index: Mapping[str, int],
) -> _Pairs:
    """The cost by (requested, billed) model: the report's own totals by billed model, routed calls split out.

    Only the calls answered by another model than the one asked for are summed here; what is left of each
    model's total is its unrouted pair. A report without a full `by_model` (hand-made, or before 0.2, whose
    totals lack the cache tokens) has every call summed.
    """
    by_model: Mapping[str, Mapping[str, Any]] | None = report.get("by_model")
    if by_model is not None and not all(totals.keys() >= _TOTALS_FIELDS for totals in by_model.values()):
        by_model = None
    summed = range(len(billed)) if by_model is None else compress(range(len(billed)), map(ne, requested, billed))
    sums: dict[tuple[int, int], list[Any]] = {}
    fields = [columns[key] for key in ("input", "cache_write", "cache_read", "output")]
    for i in summed:
        entry = sums.get((requested[i], billed[i]))
        if entry is None:
            entry = sums[requested[i], billed[i]] = [0, 0, 0, 0, 0, []]
        entry[0] += 1
        for k, field in enumerate(fields, 1):
            entry[k] += field[i]
        entry[5].append(columns["cost"][i])
    pairs: _Pairs = {key: (e[0], e[1], e[2], e[3], e[4], _exact_sum(e[5])) for key, e in sums.items()}
    for model, totals in (by_model or {}).items():
        b = model_index[model]
        routed = [pair for key, pair in pairs.items() if key[1] == b]
        rest = (
            totals["calls"] - sum(p[0] for p in routed),
            totals["input_tokens"] - sum(p[1] for p in routed),
            totals["cache_creation_input_tokens"] - sum(p[2] for p in routed),
            totals["cache_read_input_tokens"] - sum(p[3] for p in routed),
            totals["output_tokens"] - sum(p[4] for p in routed),
            usd_from_json(totals["cost_usd"]) - sum((p[5] for p in routed), Decimal(0)),
        )
        if rest[0]:
            pairs[b, b] = rest
    return pairs


def _exact_sum(amounts: Sequence[float]) -> Decimal:
    """The exact sum of amounts a JSON report carries: each is the double nearest a decimal of 10 places.

    `math.fsum` gives the sum of the doubles correctly rounded; it is within far less than half of 1e-10 of the
    decimals' sum for any total below $100,000 (each double is within 2**-53 of its decimal, relatively), so
    rounding it to 10 places gives the decimals' sum exactly: the figure a sum of Decimals would give.
    """
    return Decimal(math.fsum(amounts)).quantize(_REPORT_PLACES)


def _embedded(data: Mapping[str, Any]) -> str:
    # JSON has "<" only inside strings, where \u003c means the same: no "</script" can end the element early.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


# -- the summary: SVG and HTML ---------------------------------------------------------------------------------


def _gauge(report: Mapping[str, Any]) -> str:
    total = _dec(report["total_cost_usd"])
    budget = report.get("budget_usd")
    over = bool(report.get("budget_exceeded"))
    overspent = _dec(report.get("overspent_usd"))
    if budget:
        share = float(total / _dec(budget))
        over = over or share > 1 or overspent > 0
        colour = "#dc2626" if over else "#d97706" if share >= 0.75 else "#16a34a"
        centre = f"{share * 100:.1f}%"
    else:
        share, colour, centre = 0.0, "#94a3b8", "no budget"
    arc = ""
    filled = min(max(share, 0.0), 1.0)
    if filled > 0:
        angle = math.pi * (1 - filled)
        x, y = 100 + 80 * math.cos(angle), 100 - 80 * math.sin(angle)
        arc = (
            f'<path class="gauge-fill" d="M20 100 A80 80 0 0 1 {x:.2f} {y:.2f}" stroke="{colour}" '
            'stroke-width="18" fill="none"/>'
        )
    svg = (
        f'<svg class="gauge" viewBox="0 0 200 115" role="img" aria-label="budget used: {_e(budget_line(report))}">'
        '<path d="M20 100 A80 80 0 0 1 180 100" stroke="#e2e8f0" stroke-width="18" fill="none"/>'
        f'{arc}<text x="100" y="88" text-anchor="middle" class="gauge-pct" fill="{colour}">{_e(centre)}</text>'
        f'<text x="100" y="108" text-anchor="middle" class="gauge-sub">{_e(format_usd(total))}'
        f"{' of ' + _e(format_usd(budget)) if budget else ' spent'}</text></svg>"
    )
    alerts = []
    if report.get("budget_exceeded"):
        refused = sum(1 for r in report.get("refusals", ()) if r.get("scope") == "session")
        why = f"{refused} call(s) refused by the session budget" if refused else "spent beyond a budget"
        alerts.append(f"Budget exceeded: {why}; the run fails.")
    if overspent > 0:
        worst = report.get("overspend") or {}
        detail = f" ({worst['message']})" if isinstance(worst, dict) and worst.get("message") else ""
        alerts.append(f"Overspent: {format_usd(overspent)} beyond the budget{detail}.")
    elif budget and total > _dec(budget):
        alerts.append(f"Over budget by {format_usd(total - _dec(budget))}.")
    if report.get("refused_calls"):
        alerts.append(f"{_int(report['refused_calls'])} call(s) refused by a budget (session or per test).")
    if report.get("worst_case_overruns"):
        alerts.append(
            f"{_int(report['worst_case_overruns'])} call(s) cost more than their pre-send worst case "
            "(see docs/budgets.md)."
        )
    facts = [
        ("Total", budget_line(report)),
        ("Calls", _int(calls_total(report))),
        ("Refused", _int(report.get("refused_calls", 0))),
        ("Failed attempts (not billed)", _int(report.get("failed_attempts", 0))),
        ("Estimated (charged conservatively)", _int(report.get("estimated_calls", 0))),
    ]
    listed = calls_listed_line(report)
    if listed:
        facts.insert(2, ("Listed", listed))
    if report.get("budget_per_test_usd") is not None:
        facts.insert(1, ("Per-test budget", format_usd(report["budget_per_test_usd"])))
    if "overspent_usd" in report:
        facts.append(("Overspent", format_usd(report["overspent_usd"])))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    alert_html = "".join(f'<p class="alert">{_e(a)}</p>' for a in alerts)
    return (
        f'<section class="card" id="budget"><h2>Budget used</h2><div class="row">{svg}'
        f'<table class="facts">{rows}</table></div>{alert_html}</section>'
    )


def _hbars(items: Sequence[tuple[str, Decimal, str]], *, css_id: str, label_width: int = 110, width: int = 640) -> str:
    """Horizontal bars: (label, amount, tooltip) each, scaled to the largest."""
    if not items:
        return ""
    top = max((amount for _, amount, _ in items), default=Decimal(0)) or Decimal(1)
    row_h = 24
    bar_w = width - label_width - 90
    parts = []
    for i, (label, amount, tip) in enumerate(items):
        y = i * row_h
        w = max(float(amount / top) * bar_w, 1.0 if amount > 0 else 0.0)
        limit = label_width // 7
        shown = label if len(label) <= limit else "..." + label[-(limit - 3) :]
        parts.append(
            f'<g class="bar-row"><title>{_e(tip)}</title>'
            f'<text x="{label_width - 6}" y="{y + 17}" text-anchor="end" class="bar-label">{_e(shown)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{_PALETTE[0]}"/>'
            f'<text x="{label_width + w + 6:.1f}" y="{y + 17}" class="bar-value">{_e(format_usd(amount))}</text></g>'
        )
    height = row_h * len(items)
    return (
        f'<svg id="{css_id}" class="bars" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'data-bars="{len(items)}" role="img" preserveAspectRatio="xMinYMin meet">{"".join(parts)}</svg>'
    )


def _savings(report: Mapping[str, Any]) -> str:
    savings = report.get("savings", {})
    levers = [("Routing", "routing_usd"), ("Caching", "caching_usd")]
    if savings.get("replay_usd"):  # a lever only in runs that replayed something
        levers.append(("Replay", "replay_usd"))
    items = [
        (label, _dec(savings.get(key)), f"{label}: saved {format_usd(savings.get(key) or 0)}") for label, key in levers
    ]
    saved = sum((amount for _, amount, _ in items), Decimal(0))
    total = _dec(report["total_cost_usd"])
    note = (
        f"Saved {format_usd(saved)}: without these levers the run would have cost about "
        f"{format_usd(total + saved)} instead of {format_usd(total)}."
        if saved
        else "No lever saved anything in this run (routing and caching off, or nothing to save)."
    )
    return (
        f'<section class="card" id="savings"><h2>Savings by lever</h2><p>{_e(note)}</p>'
        f"{_hbars(items, css_id='savings-chart', label_width=70, width=460)}</section>"
    )


def _top_tests(report: Mapping[str, Any]) -> str:
    billed = [t for t in report["tests"] if t.get("calls")]
    # Only the tests costing at least the TOP_TESTS-th largest cost are sorted (ties by node id).
    cut = min(heapq.nlargest(TOP_TESTS, [t["cost_usd"] for t in billed]), default=0)
    top = sorted((t for t in billed if t["cost_usd"] >= cut), key=lambda t: (-t["cost_usd"], t["nodeid"]))
    top = top[:TOP_TESTS]
    if not top:
        return '<section class="card" id="top"><h2>Most expensive tests</h2><p>No test made an LLM call.</p></section>'
    total = _dec(report["total_cost_usd"]) or Decimal(1)
    items = [
        (
            t["nodeid"],
            _dec(t["cost_usd"]),
            f"{t['nodeid']}: {format_usd(t['cost_usd'])} ({_dec(t['cost_usd']) * 100 / total:.1f}% of the total), "
            f"{t['calls']} call(s)",
        )
        for t in top
    ]
    covered = sum((amount for _, amount, _ in items), Decimal(0))
    return (
        f'<section class="card wide" id="top"><h2>Most expensive tests</h2>'
        f"<p>The {len(top)} most expensive of {_int(len(billed))} tests that made calls: "
        f"{_e(format_usd(covered))} of {_e(format_usd(report['total_cost_usd']))}.</p>"
        f"{_hbars(items, css_id='top-tests', label_width=560, width=1000)}</section>"
    )


def _by_model(pairs: _Pairs, models: Sequence[str]) -> str:
    if not pairs:
        return '<section class="card" id="models"><h2>Cost by model</h2><p>No billed call.</p></section>'
    costs = {key: entry[5] for key, entry in pairs.items()}
    total = sum(costs.values(), Decimal(0)) or Decimal(1)
    rows = []
    for key, (calls, inp, cw, cr, out, _) in sorted(pairs.items(), key=lambda kv: (-costs[kv[0]], kv[0])):
        requested, billed = models[key[0]], models[key[1]]
        route = _e(billed) if requested == billed else f"{_e(requested)} &rarr; <b>{_e(billed)}</b>"
        share = float(costs[key] / total) * 100
        rows.append(
            f"<tr><td>{route}</td><td class=num>{_int(calls)}</td><td class=num>{_int(inp)}</td>"
            f"<td class=num>{_int(cw)}</td><td class=num>{_int(cr)}</td><td class=num>{_int(out)}</td>"
            f'<td class=num>{_e(format_usd(costs[key]))}</td><td><span class="share" style="width:{share:.1f}%">'
            f"</span> {share:.1f}%</td></tr>"
        )
    return (
        '<section class="card wide" id="models"><h2>Cost by model (requested &rarr; billed)</h2>'
        '<table class="grid"><thead><tr><th>Model</th><th class=num>Calls</th><th class=num>Input</th>'
        "<th class=num>Cache write</th><th class=num>Cache read</th><th class=num>Output</th>"
        f"<th class=num>Cost</th><th>Share</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _trend(history: Sequence[Mapping[str, Any]]) -> str:
    runs = list(history)[-TREND_RUNS:]
    if not runs:
        return ""
    latest = runs[-1].get("tests", {})
    tests = sorted(latest, key=lambda n: (-float(latest[n]), n))[:TREND_TESTS]
    series = [("total", "Total", [float(r.get("total_usd", 0)) for r in runs])]
    series += [(n, n.rpartition("::")[2] or n, [float(r.get("tests", {}).get(n, 0)) for r in runs]) for n in tests]
    width, height, left, bottom, top_pad = 900, 260, 70, 30, 10
    plot_w, plot_h = width - left - 250, height - bottom - top_pad
    peak = max((v for _, _, values in series for v in values), default=0.0) or 1.0
    step = plot_w / max(len(runs) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + i * step, top_pad + plot_h * (1 - v / peak)

    parts = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" class="axis"/>',
        f'<text x="{left - 6}" y="{top_pad + 8}" text-anchor="end" class="tick">{_e(format_usd(peak))}</text>',
        f'<text x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end" class="tick">$0.00</text>',
    ]
    for i, run in enumerate(runs):
        if i in (0, len(runs) - 1) or len(runs) <= 8:
            x, _ = xy(i, 0)
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" class="tick">'
                f"{_e(str(run.get('time', ''))[5:16].replace('T', ' '))}</text>"
            )
    for k, (key, label, values) in enumerate(series):
        colour = "#0f172a" if key == "total" else _PALETTE[(k - 1) % len(_PALETTE)]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(values)))
        css = "trend-line total" if key == "total" else "trend-line"
        parts.append(
            f'<polyline class="{css}" points="{points}" stroke="{colour}" fill="none" '
            f'stroke-width="{3 if key == "total" else 1.5}"><title>{_e(key)}</title></polyline>'
        )
        for i, v in enumerate(values):
            x, y = xy(i, v)
            run = runs[i]
            tip = f"{label}: {format_usd(v)} at {run.get('time', '?')}"
            if run.get("commit"):
                tip += f" ({str(run['commit'])[:10]}{' on ' + str(run['branch']) if run.get('branch') else ''})"
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{_e(tip)}</title></circle>"
            )
        ly = top_pad + 12 + k * 18
        shown = label if len(label) <= 34 else label[:31] + "..."
        parts.append(
            f'<rect x="{left + plot_w + 14}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + plot_w + 30}" y="{ly + 1}" class="legend"><title>{_e(key)}</title>'
            f"{_e(shown)}</text>"
        )
    first, last = series[0][2][0], series[0][2][-1]
    change = ""
    if len(runs) > 1:
        delta = Decimal(str(last)) - Decimal(str(first))
        pct = f", {delta * 100 / Decimal(str(first)):+.1f}%" if first else ""
        change = (
            f" The total went from {format_usd(first)} to {format_usd(last)} ({'+' if delta >= 0 else ''}"
            f"{format_usd(delta)}{pct})."
        )
    return (
        f'<section class="card wide" id="trend"><h2>Trend over the last {len(runs)} run(s)</h2>'
        f"<p>Total and the {len(tests)} most expensive tests of the latest run.{_e(change)}</p>"
        f'<svg id="trend-chart" class="trend" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'data-runs="{len(runs)}" data-series="{len(series)}" role="img">{"".join(parts)}</svg></section>'
    )


def _refusals(report: Mapping[str, Any], limit: int = 50) -> str:
    refusals = report.get("refusals", ())
    if not refusals:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r.get('nodeid') or '(outside tests)')}</td><td>{_e(r.get('scope', ''))}</td>"
        f"<td class=num>{_e(format_usd(r.get('worst_case_usd') or 0))}</td><td>{_e(r.get('message', ''))}</td></tr>"
        for r in refusals[:limit]
    )
    more = (
        f"<p>... and {_int(len(refusals) - limit)} more (all are in the table below).</p>"
        if len(refusals) > limit
        else ""
    )
    return (
        '<section class="card wide refused" id="refusals"><h2>Refused calls</h2><table class="grid"><thead><tr>'
        "<th>Test</th><th>Budget</th><th class=num>Worst case</th><th>Message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}</section>"
    )


def _page(title: str, subtitle: str, body: str, *, simulated: bool) -> str:
    badge = '<span class="badge">emulator: simulated costs</span>' if simulated else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Nothing may come from the network, even by accident: the policy blocks any fetch the page could make.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)} {badge}</h1><p class=sub>{_e(subtitle)}</p></header><main>{body}</main>"
        "</body></html>\n"
    )


def render_html(report: Mapping[str, Any], *, history: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Render a report as one self-contained HTML page (with the trend of `history`, when given)."""
    simulated = report.get("backend") == "emulator"
    title = "LLM cost report" + (" (simulated costs)" if simulated else "")
    subtitle = (
        f"pytest-costguard, {report.get('created', '')}, {len(report['tests']):,} tests, "
        f"{calls_total(report):,} calls, total {format_usd(report['total_cost_usd'])}"
    )
    if simulated:
        subtitle += ": costs computed by the emulator, not billed by a provider"
    data, pairs, models = _digest(report)
    body = "".join(
        (
            _gauge(report),
            _savings(report),
            _top_tests(report),
            _by_model(pairs, models),
            _trend(history or ()),
            _refusals(report),
            _TABLE,
            f'<script type="application/json" id="costguard-data">{_embedded(data)}</script>',
            f"<script>{_JS_MONEY}{_JS_TABLE}</script>",
        )
    )
    return _page(title, subtitle, body, simulated=simulated)


def render_history_html(history: Sequence[Mapping[str, Any]], *, source: str = "") -> str:
    """Render a cost history on its own: the trend chart and a table of the runs."""
    runs = list(history)
    rows = "".join(
        f"<tr><td>{_e(r.get('time', ''))}</td><td>{_e(str(r.get('commit') or '')[:10])}</td>"
        f"<td>{_e(r.get('branch') or '')}</td><td class=num>{_int(r.get('calls', 0))}</td>"
        f"<td class=num>{_e(format_usd(r.get('total_usd', 0)))}</td></tr>"
        for r in reversed(runs)
    )
    body = (
        _trend(runs)
        + '<section class="card wide" id="runs"><h2>Runs</h2><table class="grid"><thead><tr><th>Time (UTC)</th>'
        "<th>Commit</th><th>Branch</th><th class=num>Calls</th><th class=num>Total</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )
    simulated = bool(runs) and runs[-1].get("backend") == "emulator"
    return _page("LLM cost history", f"{source}: {len(runs)} run(s)", body, simulated=simulated)


_TABLE = """<section class="card wide" id="table"><h2>Every test and every call</h2>
<div class="controls"><span class="tabs"><button type="button" data-view="tests">Tests</button>
<button type="button" data-view="calls">Calls</button></span>
<input id="filter" type="search" placeholder="filter: words in the test id, model, outcome or flags" size="48">
<span id="count"></span></div>
<noscript><p>The table needs JavaScript; the JSON report has the same data.</p></noscript>
<table class="grid" id="rows"><thead></thead><tbody></tbody></table>
<div class="pager"><button type="button" data-page="first">&laquo;</button>
<button type="button" data-page="prev">&lsaquo; previous</button><span id="page"></span>
<button type="button" data-page="next">next &rsaquo;</button><button type="button" data-page="last">&raquo;</button>
</div></section>"""

_CSS = """
:root{color-scheme:light;--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}header{padding:16px 24px;background:#fff;border-bottom:1px solid var(--line)}
h1{margin:0;font-size:22px}h2{margin:0 0 10px;font-size:16px}.sub{margin:4px 0 0;color:var(--muted)}
.badge{font-size:13px;background:#fef3c7;color:#92400e;border:1px solid #f59e0b;border-radius:4px;
padding:2px 8px;vertical-align:middle}main{display:flex;flex-wrap:wrap;gap:16px;padding:16px 24px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 16px;flex:1 1 380px;
min-width:0}.card.wide{flex-basis:100%}.row{display:flex;gap:16px;align-items:center;flex-wrap:wrap}
.gauge{width:220px;flex:none}.gauge-pct{font-size:26px;font-weight:700}.gauge-sub{font-size:11px;fill:#334155}
.facts th{text-align:left;font-weight:500;color:var(--muted);padding:2px 12px 2px 0}.facts td{font-weight:600}
.alert{margin:10px 0 0;padding:8px 10px;border-radius:6px;background:#fee2e2;color:#991b1b;font-weight:600;
border:1px solid #fca5a5}.refused h2{color:#991b1b}
.bars,.trend{max-width:100%;height:auto;display:block}.bar-label,.bar-value,.tick,.legend{font-size:12px;fill:#334155}
.axis{stroke:#94a3b8}table.grid{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
.grid th,.grid td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;white-space:nowrap}
.grid td:first-child{white-space:normal;word-break:break-all}.num{text-align:right!important}
.grid thead th{background:#f1f5f9;position:sticky;top:0}#rows thead th{cursor:pointer;user-select:none}
#rows thead th[aria-sort=ascending]::after{content:" \\25B2"}
#rows thead th[aria-sort=descending]::after{content:" \\25BC"}
.share{display:inline-block;height:10px;background:#2563eb;border-radius:2px;max-width:120px}
.controls{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin-bottom:8px}
.tabs button[aria-pressed=true]{background:#0f172a;color:#fff}button{font:inherit;padding:3px 10px;
border:1px solid #cbd5e1;background:#fff;border-radius:4px;cursor:pointer}input{font:inherit;padding:3px 8px}
.pager{margin-top:8px;display:flex;gap:8px;align-items:center}#count,#page{color:var(--muted)}
.flag{display:inline-block;font-size:11px;border-radius:3px;padding:0 5px;margin-right:3px;background:#e2e8f0}
.flag.refused,.flag.failed,.flag.error{background:#fee2e2;color:#991b1b}.flag.estimated{background:#fef3c7}
.flag.passed{background:#dcfce7;color:#166534}
"""

# The money rule of domain.money.format_usd, applied to a JSON number's shortest decimal form (the digits
# Python's repr gives, which is what format_usd reads): $0.00 for zero; cents, with thousands separators,
# from a dollar up; below a dollar, at least two decimals and three significant digits; rounded half to
# even, trailing zeros dropped down to two decimals; a minus sign only for a negative amount.
_JS_MONEY = r"""
function formatUsd(x) {
  if (!x || !isFinite(x)) return "$0.00";
  var sign = x < 0 ? "-" : "";
  x = Math.abs(x);
  var parts = x.toExponential().split("e");
  var digits = parts[0].replace(".", ""), exp = parseInt(parts[1], 10);
  var places = x >= 1 ? 2 : Math.max(2, 2 - exp);
  var keep = exp + places + 1, kept, up = false;
  if (keep <= 0) {
    kept = "0";
    if (keep === 0) {
      var rest0 = digits;
      up = rest0[0] > "5" || (rest0[0] === "5" && /[1-9]/.test(rest0.slice(1)));
    }
  } else {
    while (digits.length < keep) digits += "0";
    kept = digits.slice(0, keep);
    var rest = digits.slice(keep);
    if (rest) {
      var tail = /[1-9]/.test(rest.slice(1));
      up = rest[0] > "5" || (rest[0] === "5" && (tail || (+kept[kept.length - 1]) % 2 === 1));
    }
  }
  if (up) {
    var arr = kept.split(""), i = arr.length - 1;
    while (i >= 0 && arr[i] === "9") { arr[i] = "0"; i--; }
    if (i < 0) arr.unshift("1"); else arr[i] = String(+arr[i] + 1);
    kept = arr.join("");
  }
  while (kept.length < places + 1) kept = "0" + kept;
  var whole = kept.slice(0, kept.length - places), fraction = kept.slice(kept.length - places);
  if (x >= 1) return sign + "$" + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + fraction;
  fraction = fraction.replace(/0+$/, "");
  while (fraction.length < 2) fraction += "0";
  return sign + "$" + whole + "." + fraction;
}
"""

_JS_TABLE = r"""
(function () {
  "use strict";
  var started = performance.now();
  var data = JSON.parse(document.getElementById("costguard-data").textContent);
  var names = data.names, models = data.models, outcomes = data.outcomes, PAGE = data.page_rows;
  var T = data.tests, C = data.calls, OUTSIDE = "(outside tests)";
  var table = document.getElementById("rows"), thead = table.tHead, tbody = table.tBodies[0];
  var filterBox = document.getElementById("filter");
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function int(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function range(n) { var a = new Array(n); for (var i = 0; i < n; i++) a[i] = i; return a; }
  // A table of strings, referred to by index (-1: the string `none`): each string's rank in sorted order, so
  // that sorting rows by it compares numbers, and its lower case, for the filter.
  function strings(list, none) {
    var all = list.concat([none]), order = range(all.length), rank = new Array(all.length);
    order.sort(function (a, b) { return all[a] < all[b] ? -1 : all[a] > all[b] ? 1 : 0; });
    order.forEach(function (j, r) { rank[j] = r; });
    return {all: all, rank: rank, low: all.map(function (s) { return s.toLowerCase(); })};
  }
  var FLAGS = range(16).map(function (f) {
    var w = [];
    if (f & 8) w.push("refused");
    if (f & 1) w.push("estimated");
    if (f & 2) w.push("streamed");
    if (f & 4) w.push("replayed");
    return w;
  });
  var NAMES = strings(names, OUTSIDE), MODELS = strings(models, ""), OUTCOMES = strings(outcomes, "unknown");
  var FLAG_TEXT = strings(FLAGS.map(function (w) { return w.join(" "); }), "");
  function flagsHtml(words) {
    return words.map(function (w) { return '<span class="flag ' + w + '">' + w + "</span>"; }).join("");
  }
  // A column: `index` (for a column of strings) holds indexes into the table `strs`.
  function text(key, label, index, strs, fmt) {
    var n = strs.all.length - 1;
    function at(i) { var j = index[i]; return j < 0 ? n : j; }
    return {key: key, label: label, index: index, strs: strs,
            get: function (i) { return strs.all[at(i)]; }, sortKey: function (i) { return strs.rank[at(i)]; },
            fmt: fmt || esc};
  }
  function num(cols, key, label, fmt) {
    var values = cols[key];
    return {key: key, label: label, num: true, values: values, get: function (i) { return values[i]; },
            fmt: fmt || int};
  }
  var testIds = range(T.cost.length);
  var VIEWS = {
    tests: {count: testIds.length, columns: [
      text("test", "Test", testIds, NAMES),
      text("outcome", "Outcome", T.outcome, OUTCOMES, function (v) { return flagsHtml([v]); }),
      num(T, "calls", "Calls"), num(T, "input", "Input"), num(T, "cache_write", "Cache write"),
      num(T, "cache_read", "Cache read"), num(T, "output", "Output"), num(T, "retries", "Retries"),
      num(T, "estimated", "Estimated"), num(T, "refused", "Refused")
    ].concat(data.replay ? [num(T, "replayed", "Replayed")] : []).concat([num(T, "cost", "Cost", formatUsd)])},
    calls: {count: C.cost.length, columns: [
      text("test", "Test", C.test, NAMES),
      text("requested", "Requested", C.requested, MODELS),
      text("model", "Billed", C.model, MODELS),
      num(C, "input", "Input"), num(C, "cache_write", "Cache write"), num(C, "cache_read", "Cache read"),
      num(C, "output", "Output"), num(C, "retries", "Retries"),
      text("flags", "Flags", C.flags, FLAG_TEXT, function (v, i) {
        var html = flagsHtml(FLAGS[C.flags[i]]);
        return C.flags[i] & 8 ? html + " worst case " + formatUsd(data.worst[i - data.first_refusal]) : html;
      }),
      num(C, "cost", "Cost", formatUsd)
    ]}
  };
  var state = {view: "tests", sort: "cost", dir: "desc", filter: "", page: 1};
  var shown = [], shownKey = null;

  function readHash() {
    var h = location.hash.replace(/^#/, ""), next = {view: "tests", sort: "cost", dir: "desc", filter: "", page: 1};
    h.split("&").forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf("="), k = i < 0 ? kv : kv.slice(0, i);
      var v = i < 0 ? "" : decodeURIComponent(kv.slice(i + 1).replace(/\+/g, " "));
      if (k === "view" && VIEWS[v]) next.view = v;
      else if (k === "sort") next.sort = v;
      else if (k === "dir" && (v === "asc" || v === "desc")) next.dir = v;
      else if (k === "filter") next.filter = v;
      else if (k === "page" && +v >= 1) next.page = Math.floor(+v);
    });
    if (!VIEWS[next.view].columns.some(function (c) { return c.key === next.sort; })) next.sort = "cost";
    return next;
  }
  function writeHash() {
    var h = "#view=" + state.view + "&sort=" + state.sort + "&dir=" + state.dir +
      (state.filter ? "&filter=" + encodeURIComponent(state.filter) : "") +
      (state.page > 1 ? "&page=" + state.page : "");
    if (location.hash === h) return;
    try { history.replaceState(null, "", h); } catch (e) { location.replace(h); }
  }
  // The rows whose text (the view's string columns, joined by spaces) has every term. A term has no space,
  // so it is in the joined text exactly when it is in one column's string: each term is looked for once in
  // each table of strings, then each row only looks its strings' answers up.
  function matching(view, terms) {
    var cols = view.columns.filter(function (c) { return c.strs; }), found = [];
    var hits = terms.map(function (t) {
      return cols.map(function (c) { return c.strs.low.map(function (s) { return s.indexOf(t) >= 0; }); });
    });
    for (var i = 0; i < view.count; i++) {
      var every = true;
      for (var k = 0; every && k < terms.length; k++) {
        var some = false;
        for (var j = 0; !some && j < cols.length; j++) {
          var at = cols[j].index[i];
          some = hits[k][j][at < 0 ? cols[j].strs.all.length - 1 : at];
        }
        every = some;
      }
      if (every) found.push(i);
    }
    return found;
  }
  function compute() {
    var view = VIEWS[state.view], key = state.view + "|" + state.sort + "|" + state.dir + "|" + state.filter;
    if (key === shownKey) return;
    var col = view.columns.filter(function (c) { return c.key === state.sort; })[0];
    var terms = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
    var idx = terms.length ? matching(view, terms) : range(view.count);
    var values = col.values || range(view.count).map(col.sortKey), sign = state.dir === "asc" ? 1 : -1;
    idx.sort(function (a, b) {
      var va = values[a], vb = values[b];
      if (va < vb) return -sign;
      if (va > vb) return sign;
      return a - b;
    });
    shown = idx;
    shownKey = key;
  }
  function render() {
    var view = VIEWS[state.view], begun = performance.now();
    compute();
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (state.page > pages) state.page = pages;
    thead.innerHTML = "<tr>" + view.columns.map(function (c) {
      var sort = c.key === state.sort ? (state.dir === "asc" ? "ascending" : "descending") : "none";
      return '<th data-key="' + c.key + '" aria-sort="' + sort + '"' + (c.num ? ' class="num"' : "") + ">" +
        esc(c.label) + "</th>";
    }).join("") + "</tr>";
    var start = (state.page - 1) * PAGE, html = [];
    for (var k = start; k < Math.min(start + PAGE, shown.length); k++) {
      var i = shown[k];
      html.push("<tr>" + view.columns.map(function (c) {
        return "<td" + (c.num ? ' class="num"' : "") + ">" + c.fmt(c.get(i), i) + "</td>";
      }).join("") + "</tr>");
    }
    tbody.innerHTML = html.join("");
    table.setAttribute("data-view", state.view);
    table.setAttribute("data-sort", state.sort + " " + state.dir);
    table.setAttribute("data-matches", String(shown.length));
    document.getElementById("count").textContent =
      int(shown.length) + " of " + int(view.count) + " " + state.view;
    document.getElementById("page").textContent = "page " + state.page + " of " + pages;
    Array.prototype.forEach.call(document.querySelectorAll("[data-view]"), function (b) {
      if (b.tagName === "BUTTON") b.setAttribute("aria-pressed", String(b.getAttribute("data-view") === state.view));
    });
    if (filterBox.value !== state.filter) filterBox.value = state.filter;
    writeHash();
    // How long the last filter, sort and page took (benchmarks/bench_report.py reads it).
    table.setAttribute("data-render-ms", (performance.now() - begun).toFixed(1));
  }
  thead.addEventListener("click", function (ev) {
    var th = ev.target.closest("th");
    if (!th) return;
    var key = th.getAttribute("data-key");
    var col = VIEWS[state.view].columns.filter(function (c) { return c.key === key; })[0];
    if (state.sort === key) state.dir = state.dir === "asc" ? "desc" : "asc";
    else { state.sort = key; state.dir = col.num ? "desc" : "asc"; }
    state.page = 1;
    render();
  });
  document.querySelector(".tabs").addEventListener("click", function (ev) {
    var b = ev.target.closest("button");
    if (!b || b.getAttribute("data-view") === state.view) return;
    state.view = b.getAttribute("data-view");
    state.sort = "cost"; state.dir = "desc"; state.page = 1;
    render();
  });
  document.querySelector(".pager").addEventListener("click", function (ev) {
    var b = ev.target.closest("button");
    if (!b) return;
    var pages = Math.max(1, Math.ceil(shown.length / PAGE)), p = b.getAttribute("data-page");
    state.page = p === "first" ? 1 : p === "last" ? pages :
      p === "prev" ? Math.max(1, state.page - 1) : Math.min(pages, state.page + 1);
    render();
  });
  var timer = null;
  filterBox.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { state.filter = filterBox.value.trim(); state.page = 1; render(); }, 150);
  });
  window.addEventListener("hashchange", function () { state = readHash(); render(); });
  state = readHash();
  render();
  document.body.setAttribute("data-load-ms", (performance.now() - started).toFixed(1));
  document.body.setAttribute("data-ready", "1");
})();
"""
