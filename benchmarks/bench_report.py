"""Report: building and writing the JSON, Markdown and HTML reports of 10,000 tests and 50,000 calls.

Times what the plugin does at the end of a run: `build_report` from the records and outcomes, then
`write_report` to a `.json` and to a `.md` path. The baseline, measured in the same run and alternated with
it, is the irreducible part: the finished report serialized by the C JSON encoder (`json.dumps(report)`,
compact) and written to a file, which any JSON report of this data costs. Medians of several rounds.

`report.html`: `build_report` then `write_report` to a `.html` path (`--llm-report=r.html`), its time and
the page's size, against the same floor; `build_report` alone is timed too (alternated with the rest), so the
figure also says what the page itself adds. `report.html_browser` (only when a Chromium binary is
installed; info): the page opened in headless Chromium, with the times its script records for the first
render (JSON.parse, sort, one page of rows), a sort of the 50,000 calls by test id and a filter of them.

Run: python benchmarks/bench_report.py [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from _bench import REPO, figure, fmt_time, make_parser, median, time_alternating

from pytest_costguard.core.tracking import CostRecord
from pytest_costguard.reports.html import PAGE_ROWS
from pytest_costguard.reports.model import build_report, write_report

MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")


def workload(tests: int, calls: int) -> tuple[list[CostRecord], dict[str, str]]:
    """Return `calls` records spread over `tests` tests (some routed, some cached) and their outcomes."""
    nodeids = [f"tests/test_module_{i // 100}.py::test_case_{i}" for i in range(tests)]
    outcomes = {nodeid: ("failed" if i % 97 == 0 else "passed") for i, nodeid in enumerate(nodeids)}
    records = []
    for i in range(calls):
        model = MODELS[i % len(MODELS)]
        cost = Decimal(i % 500 + 1) / Decimal(100_000)
        records.append(
            CostRecord(
                model=model,
                input_tokens=200 + i % 3000,
                output_tokens=20 + i % 400,
                cost_usd=cost,
                requested_model="claude-sonnet-4-6" if i % 5 == 0 else model,
                cache_read_input_tokens=1024 if i % 7 == 0 else 0,
                tag=nodeids[i % tests] if i % 50 else None,  # a few calls outside tests (session-level)
                streamed=i % 3 == 0,
                cost_at_requested_usd=cost * 3,
                cost_uncached_usd=cost * 2 if i % 7 == 0 else cost,
            )
        )
    return records, outcomes


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    quick: bool = args.quick
    tests, calls = (1_000, 5_000) if quick else (10_000, 50_000)
    rounds = 2 if quick else 7
    records, outcomes = workload(tests, calls)
    sizes: dict[str, int] = {}

    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        root = Path(tmp)
        finished = build_report(records, outcomes, budget=Decimal(100))

        def ours() -> float:
            start = time.perf_counter()
            report = build_report(records, outcomes, budget=Decimal(100))
            write_report(report, root / "report.json")
            write_report(report, root / "report.md")
            elapsed = time.perf_counter() - start
            sizes["json"] = (root / "report.json").stat().st_size
            sizes["md"] = (root / "report.md").stat().st_size
            return elapsed

        def floor() -> float:
            start = time.perf_counter()
            (root / "floor.json").write_text(json.dumps(finished) + "\n", encoding="utf-8")
            return time.perf_counter() - start

        def html() -> float:
            start = time.perf_counter()
            report = build_report(records, outcomes, budget=Decimal(100))
            write_report(report, root / "report.html")
            elapsed = time.perf_counter() - start
            sizes["html"] = (root / "report.html").stat().st_size
            return elapsed

        def build() -> float:
            start = time.perf_counter()
            build_report(records, outcomes, budget=Decimal(100))
            return time.perf_counter() - start

        variants: dict[str, Callable[[], float]] = {"ours": ours, "floor": floor, "html": html, "build": build}
        times = time_alternating(variants, rounds)
        check: dict[str, Any] = json.loads((root / "report.json").read_text(encoding="utf-8"))
        browser = None if quick else _browser_times(root / "report.html")

    assert len(check["calls"]) == calls and len(check["tests"]) == tests, "the report lost calls or tests"
    ours_t, floor_t = median(times["ours"]), median(times["floor"])
    figure(
        "report.build_and_write",
        f"{tests:,} tests, {calls:,} calls: build + write JSON ({sizes['json'] / 1e6:.1f} MB) + Markdown "
        f"{fmt_time(ours_t)} vs compact json.dumps+write of the finished report {fmt_time(floor_t)}: "
        f"ratio {ours_t / floor_t:.2f} (medians of {rounds})",
        met=ours_t < 1.0,
        target="< 1 s",
        quick=quick,
    )
    html_t, build_t = median(times["html"]), median(times["build"])
    figure(
        "report.html",
        f"{tests:,} tests, {calls:,} calls: build + write HTML ({sizes['html'] / 1e6:.2f} MB) {fmt_time(html_t)} "
        f"vs compact json.dumps+write of the finished report {fmt_time(floor_t)}: ratio {html_t / floor_t:.2f}; "
        f"of which build_report {fmt_time(build_t)} ({build_t / floor_t:.2f}) and the page "
        f"{fmt_time(html_t - build_t)} ({(html_t - build_t) / floor_t:.2f}) (medians of {rounds})",
        met=html_t < 1.0 and sizes["html"] < 5_000_000,
        target="< 1 s and < 5 MB",
        quick=quick,
    )
    if browser is None:
        figure("report.html_browser", "skipped: " + ("quick mode" if quick else "no Chromium binary installed"))
    else:
        figure(
            "report.html_browser",
            f"{calls:,} calls in headless Chromium: first render (JSON.parse + sort + one page of {PAGE_ROWS} rows) "
            f"{browser['load']:.0f} ms; sort by test id {browser['sort']:.0f} ms; filter {browser['filter']:.0f} ms "
            "(times the page's script records; info)",
        )
    return 0


def _browser_times(page: Path) -> dict[str, float] | None:
    """Open the page in headless Chromium (if installed) and read the times its script recorded."""
    import re

    sys.path.insert(0, str(REPO / "tests"))
    from chromium import find_chromium, load

    if find_chromium() is None:
        return None

    def attribute(dom: str, name: str) -> float:
        found = re.search(rf'{name}="([0-9.]+)"', dom)
        if found is None:
            raise RuntimeError(f"the page recorded no {name}")
        return float(found.group(1))

    first = load(page, fragment="view=calls").dom
    by_test = load(page, fragment="view=calls&sort=test&dir=asc").dom
    filtered = load(page, fragment="view=calls&filter=test_case_42").dom
    return {
        "load": attribute(first, "data-load-ms"),
        "sort": attribute(by_test, "data-render-ms"),
        "filter": attribute(filtered, "data-render-ms"),
    }


if __name__ == "__main__":
    sys.exit(main())
