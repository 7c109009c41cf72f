"""The HTML report in a real browser: headless Chromium runs its script; the DOM it leaves is checked.

Skipped only when no Chromium binary is installed (`.ci/run` installs the Debian package, so CI runs it).
"""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from chromium import find_chromium, load

from pytest_costguard.domain.money import format_usd
from pytest_costguard.domain.records import CostRecord, Refusal
from pytest_costguard.reports.html import _JS_MONEY, PAGE_ROWS, TOP_TESTS
from pytest_costguard.reports.model import build_report, write_report

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium binary found (install the Debian package `chromium`, as .ci/run does, "
    "or name one in COSTGUARD_CHROMIUM)",
)
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


class _Table(HTMLParser):
    """The rows of `table#rows` and a few attributes of the page, from Chromium's serialized DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.header: list[str] = []
        self.attrs: dict[str, dict[str, str]] = {}
        self.bars: dict[str, int] = {}
        self._in_rows = self._in_body = self._in_head = False
        self._cell: list[str] | None = None
        self._svg: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.attrs[a["id"]] = a
        if tag == "svg":
            self._svg = a.get("id")
        elif tag == "rect" and a.get("class") == "bar" and self._svg:
            self.bars[self._svg] = self.bars.get(self._svg, 0) + 1
        elif tag == "table" and a.get("id") == "rows":
            self._in_rows = True
        elif self._in_rows and tag == "tbody":
            self._in_body = True
        elif self._in_rows and tag == "thead":
            self._in_head = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif (self._in_body and tag == "td") or (self._in_head and tag == "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        elif tag == "table" and self._in_rows:
            self._in_rows = self._in_body = self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            (self.rows[-1] if tag == "td" else self.header).append(text)
            self._cell = None
        elif tag == "thead":
            self._in_head = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def open_page(path: Path, fragment: str = "") -> tuple[_Table, list[str]]:
    page = load(path, fragment=fragment)
    assert 'data-ready="1"' in page.dom, "the page's script did not finish"
    parsed = _Table()
    parsed.feed(page.dom)
    return parsed, page.console


def column(table: _Table, label: str) -> list[str]:
    index = table.header.index(label)
    return [row[index] for row in table.rows]


def usd(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of 20 tests (three named foo) with a refused call, written as HTML."""
    records = [
        CostRecord(
            model="claude-haiku-4-5" if i % 2 else "claude-sonnet-4-6",
            input_tokens=100 + i,
            output_tokens=10,
            cost_usd=Decimal(i + 1) / 1000,
            tag=f"tests/test_{'foo' if i % 7 == 0 else 'bar'}.py::test_{i:02d}",
            requested_model="claude-sonnet-4-6",
            cache_read_input_tokens=50 * i,
        )
        for i in range(20)
    ]
    refusal = Refusal(
        tag="tests/test_bar.py::test_03", scope="session", worst_case_usd=Decimal("0.5"), message="refused"
    )
    report = build_report(
        records,
        {r.tag: "passed" for r in records if r.tag},
        budget=Decimal("0.2"),
        refusals=[refusal],
        labels={"backend": "emulator"},
    )
    path = tmp_path_factory.mktemp("browser") / "report.html"
    write_report(report, path)
    return path


def test_the_report_renders_without_console_errors_with_the_expected_bars(report_page: Path) -> None:
    table, console = open_page(report_page)
    assert console == []  # no error, no exception, no blocked network request
    assert table.bars["top-tests"] == TOP_TESTS
    assert table.attrs["top-tests"]["data-bars"] == str(TOP_TESTS)
    assert table.attrs["rows"]["data-view"] == "tests"
    assert len(table.rows) == 20
    costs = [usd(c) for c in column(table, "Cost")]
    assert costs == sorted(costs, reverse=True)  # most expensive first by default
    assert column(table, "Cost")[0] == format_usd(Decimal("0.02"))


def test_the_table_sorts_and_filters_from_the_url(report_page: Path) -> None:
    table, console = open_page(report_page, "sort=cost&dir=asc&filter=foo")
    assert console == []
    tests = column(table, "Test")
    assert tests == ["tests/test_foo.py::test_00", "tests/test_foo.py::test_07", "tests/test_foo.py::test_14"]
    assert table.attrs["rows"]["data-matches"] == "3"

    table, console = open_page(report_page, "view=calls&sort=test&dir=desc&filter=refused")
    assert console == []
    assert column(table, "Test") == ["tests/test_bar.py::test_03"]
    assert column(table, "Flags")[0].startswith("refused")

    table, _ = open_page(report_page, "view=calls&sort=input&dir=asc")
    inputs = [int(v.replace(",", "")) for v in column(table, "Input")]
    assert inputs == sorted(inputs) and len(inputs) == 21  # 20 calls and the refused one


@pytest.mark.slow
def test_50000_calls_render_sort_and_filter_one_page_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from bench_report import workload

    records, outcomes = workload(10_000, 50_000)
    report = build_report(records, outcomes, budget=Decimal(100))
    path = tmp_path / "big.html"
    write_report(report, path)
    calls = report["calls"]

    def shown(indexes: list[int]) -> dict[str, list[str]]:
        """The cells the table should show for these calls, from the JSON report's own figures."""
        picked = [calls[i] for i in indexes]
        return {
            "Test": [c["nodeid"] or "(outside tests)" for c in picked],
            "Billed": [c["model"] for c in picked],
            "Input": [f"{c['input_tokens']:,}" for c in picked],
            "Cache read": [f"{c['cache_read_input_tokens']:,}" for c in picked],
            "Cost": [format_usd(c["cost_usd"]) for c in picked],
        }

    # The first page, the most expensive first (ties in the report's order).
    table, console = open_page(path, "view=calls")
    assert console == []
    assert table.attrs["rows"]["data-matches"] == "50000" and len(table.rows) == PAGE_ROWS
    by_cost = sorted(range(len(calls)), key=lambda i: (-calls[i]["cost_usd"], i))
    assert {label: column(table, label) for label in shown([])} == shown(by_cost[:PAGE_ROWS])

    # Sorted by test id, third page.
    table, console = open_page(path, "view=calls&sort=test&dir=asc&page=3")
    assert console == [] and table.attrs["rows"]["data-sort"] == "test asc"
    by_test = sorted(range(len(calls)), key=lambda i: (calls[i]["nodeid"] or "(outside tests)", i))
    assert {label: column(table, label) for label in shown([])} == shown(by_test[2 * PAGE_ROWS : 3 * PAGE_ROWS])

    # Filtered by two words: each must be in the test id, a model or the flags.
    table, console = open_page(path, "view=calls&filter=test_case_424+OPUS&sort=input&dir=asc")
    assert console == []

    def text(c: dict[str, Any]) -> str:
        return f"{c['nodeid'] or '(outside tests)'} {c['requested_model']} {c['model']}".lower()

    matching = [i for i, c in enumerate(calls) if "test_case_424" in text(c) and "opus" in text(c)]
    assert 0 < len(matching) < PAGE_ROWS
    assert table.attrs["rows"]["data-matches"] == str(len(matching))
    matching.sort(key=lambda i: (calls[i]["input_tokens"], i))
    assert {label: column(table, label) for label in shown([])} == shown(matching)

    # The tests, most expensive first, and one found by its id.
    table, console = open_page(path)
    tests = sorted(report["tests"], key=lambda t: -t["cost_usd"])  # stable: ties in the report's order
    assert console == [] and len(table.rows) == PAGE_ROWS
    assert column(table, "Cost") == [format_usd(t["cost_usd"]) for t in tests[:PAGE_ROWS]]
    assert column(table, "Test") == [t["nodeid"] for t in tests[:PAGE_ROWS]]
    table, console = open_page(path, "filter=test_case_4242")
    assert console == [] and column(table, "Test") == ["tests/test_module_42.py::test_case_4242"]


def test_the_script_formats_money_exactly_as_format_usd(tmp_path: Path) -> None:
    rng = random.Random(17)
    values: list[float] = [
        0,
        1e-7,
        1.234e-7,
        0.00125,
        0.00135,
        0.0319,
        0.023,
        0.9999,
        0.99999,
        0.995,
        1,
        1.005,
        2.345,
        2.355,
        1234.565,
        1e6,
        999999.995,
        -0.5,
        -1234.5,
        0.1 + 0.2,
        5e-5,
        0.000999,
    ]
    values += [round(rng.uniform(0, 10) * 10 ** rng.randint(-9, 4), rng.randint(0, 12)) for _ in range(400)]
    page = tmp_path / "money.html"
    page.write_text(
        "<!DOCTYPE html><html><body><pre id=out></pre><script>"
        + _JS_MONEY
        + f"var v = {json.dumps(values)};"
        + "document.getElementById('out').textContent = JSON.stringify(v.map(formatUsd));"
        + "document.body.setAttribute('data-ready', '1');</script></body></html>",
        encoding="utf-8",
    )
    result = load(page)
    assert result.console == []
    match = re.search(r'<pre id="out">(.*?)</pre>', result.dom, re.S)
    assert match
    formatted = json.loads(match.group(1).replace("&amp;", "&"))
    assert formatted == [format_usd(v) for v in values]


def test_a_screenshot_of_the_report_is_saved(report_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = load(report_page, screenshot=shot, size=(1280, 1600))
    assert result.console == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_a_history_page_has_one_point_per_run(tmp_path: Path) -> None:
    from pytest_costguard.reports.html import render_history_html

    runs: list[dict[str, Any]] = [
        {"time": f"2026-11-0{i}T10:00:00+00:00", "total_usd": 0.1 * i, "calls": i, "tests": {"t.py::a": 0.05 * i}}
        for i in range(1, 4)
    ]
    path = tmp_path / "history.html"
    path.write_text(render_history_html(runs, source="h.jsonl"), encoding="utf-8")
    page = load(path)
    assert page.console == []
    assert page.dom.count('class="point"') == 6 and 'data-runs="3"' in page.dom
