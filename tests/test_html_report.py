"""The HTML report: a self-contained page over the JSON report, written by the plugin and the CLI."""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pytest_costguard import cli
from pytest_costguard.domain.records import CostRecord, Refusal
from pytest_costguard.reports.html import (
    PAGE_ROWS,
    TOP_TESTS,
    _digest,
    _exact_sum,
    render_history_html,
    render_html,
    table_data,
)
from pytest_costguard.reports.model import ReportError, build_report, write_report

D = Decimal
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def call(nodeid: str | None, cost: str, model: str = "claude-haiku-4-5", **fields: Any) -> CostRecord:
    return CostRecord(model=model, input_tokens=100, output_tokens=10, cost_usd=D(cost), tag=nodeid, **fields)


def small_report(**kwargs: Any) -> dict[str, Any]:
    records = [
        call("t.py::test_cheap", "0.001"),
        call(
            "t.py::test_dear",
            "0.25",
            model="claude-haiku-4-5",
            requested_model="claude-opus-4-6",
            cost_at_requested_usd=D("1.25"),
            cache_creation_input_tokens=4000,
            cache_read_input_tokens=9000,
            retries=2,
            estimated=True,
        ),
        call(None, "0.01"),
    ]
    outcomes = {"t.py::test_cheap": "passed", "t.py::test_dear": "failed", "t.py::test_none": "passed"}
    return build_report(records, outcomes, budget=D(1), **kwargs)


def embedded(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="costguard-data">(.*?)</script>', page, re.S)
    assert match, "the page embeds its data"
    return json.loads(match.group(1))


def rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The embedded data's columns as one dict per row (every column has one entry per row)."""
    (count,) = {len(values) for values in columns.values()}
    return [{key: values[i] for key, values in columns.items()} for i in range(count)]


def test_the_page_loads_nothing_from_the_network() -> None:
    page = render_html(small_report())
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "@import" not in page
    # And the policy forbids any fetch the page could make, should one slip in.
    assert "default-src 'none'" in page


def test_a_node_id_cannot_end_the_data_script_early() -> None:
    nasty = "t.py::test_x[</script><script>alert(1)</script>]"
    report = build_report([call(nasty, "0.1")], {nasty: "passed"})
    page = render_html(report)
    assert "<script>alert(1)" not in page
    assert page.count("</script>") == 2  # the data element and the code, nothing else
    assert embedded(page)["names"] == [nasty]


def test_emulator_costs_are_labelled_simulated() -> None:
    assert "simulated costs" not in render_html(small_report())
    page = render_html(small_report(labels={"backend": "emulator"}))
    assert "<title>LLM cost report (simulated costs)</title>" in page
    assert "emulator: simulated costs" in page


def test_refusals_and_an_exceeded_budget_are_marked_plainly() -> None:
    refusal = Refusal(tag="t.py::test_dear", scope="session", worst_case_usd=D("0.5"), message="over budget")
    report = small_report(refusals=[refusal])
    page = render_html(report)
    assert "Budget exceeded: 1 call(s) refused by the session budget" in page
    assert 'id="refusals"' in page and "over budget" in page
    data = embedded(page)
    refused = [i for i, call in enumerate(rows(data["calls"])) if call["flags"] & 8]
    assert refused == [data["first_refusal"]] == [3]  # after the three billed calls
    assert data["worst"] == [0.5]
    call = rows(data["calls"])[3]
    assert data["names"][call["test"]] == "t.py::test_dear" and call["model"] == call["requested"] == -1
    assert call["cost"] == 0
    assert data["tests"]["refused"][data["names"].index("t.py::test_dear")] == 1  # the test's refused count


def test_overspend_and_replay_savings_are_shown_when_the_report_has_them() -> None:
    report = small_report()
    assert "Overspent:" not in render_html(report) and "Replay: saved" not in render_html(report)
    report["overspent_usd"] = 0.05
    report["savings"]["replay_usd"] = 0.75
    report["calls"][0]["replayed"] = True
    page = render_html(report)
    assert "Overspent: $0.05 beyond the budget." in page
    assert "Replay: saved $0.75" in page
    data = embedded(page)
    assert data["replay"] and data["calls"]["flags"][0] & 4
    assert data["tests"]["replayed"][data["names"].index(report["calls"][0]["nodeid"])] == 1


def test_the_summary_shows_budget_savings_top_tests_and_models() -> None:
    page = render_html(small_report())
    assert "$0.261 of $1.00, 26.1%" in page
    assert 'id="top-tests"' in page and 'data-bars="2"' in page  # the two tests that made calls
    assert "claude-opus-4-6 &rarr; <b>claude-haiku-4-5</b>" in page  # requested -> billed
    assert "Routing: saved $1.00" in page


def test_the_bar_chart_shows_at_most_the_top_tests() -> None:
    records = [call(f"t.py::test_{i}", f"0.0{i % 9 + 1}") for i in range(40)]
    page = render_html(build_report(records, {r.tag: "passed" for r in records if r.tag}))
    assert f'data-bars="{TOP_TESTS}"' in page
    assert page.count('<rect class="bar"') == TOP_TESTS + 2  # plus the two savings bars


def test_the_embedded_table_has_every_test_and_call_with_cache_tokens_and_retries() -> None:
    data = table_data(small_report())
    tests, calls = rows(data["tests"]), rows(data["calls"])
    assert len(tests) == 3 and len(calls) == 3
    dear = next(c for c in calls if c["cost"] == 0.25)
    assert data["models"][dear["requested"]] == "claude-opus-4-6"
    assert data["models"][dear["model"]] == "claude-haiku-4-5"
    assert (dear["cache_write"], dear["cache_read"], dear["retries"]) == (4000, 9000, 2)
    assert dear["flags"] & 1  # estimated
    assert next(c for c in calls if c["cost"] == 0.01)["test"] == -1  # outside any test
    dear_test = tests[data["names"].index("t.py::test_dear")]
    assert (dear_test["retries"], dear_test["estimated"], dear_test["cache_read"]) == (2, 1, 9000)
    assert data["outcomes"][dear_test["outcome"]] == "failed"
    assert data["page_rows"] == PAGE_ROWS


def test_the_embedded_figures_are_the_json_reports_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from bench_report import workload

    records, outcomes = workload(1_000, 5_000)
    write_report(build_report(records, outcomes, budget=D(100)), tmp_path / "r.json")
    write_report(json.loads((tmp_path / "r.json").read_text(encoding="utf-8")), tmp_path / "r.html")
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    data = embedded((tmp_path / "r.html").read_text(encoding="utf-8"))
    calls, tests = rows(data["calls"]), rows(data["tests"])
    assert len(calls) == len(report["calls"]) and len(tests) == len(report["tests"])
    fields = {
        "input": "input_tokens",
        "output": "output_tokens",
        "cache_write": "cache_creation_input_tokens",
        "cache_read": "cache_read_input_tokens",
        "retries": "retries",
        "cost": "cost_usd",
    }
    for i in random.Random(17).sample(range(len(calls)), 200):
        want, got = report["calls"][i], calls[i]
        assert {key: got[key] for key in fields} == {key: want[field] for key, field in fields.items()}
        assert (data["names"][got["test"]] if got["test"] >= 0 else None) == want["nodeid"]
        assert (data["models"][got["requested"]], data["models"][got["model"]]) == (
            want["requested_model"],
            want["model"],
        )
        assert bool(got["flags"] & 2) == want["streamed"]
    for i in random.Random(18).sample(range(len(tests)), 100):
        want = report["tests"][i]
        assert data["names"][i] == want["nodeid"]
        assert tests[i]["cost"] == want["cost_usd"] and tests[i]["calls"] == want["calls"]
        assert data["outcomes"][tests[i]["outcome"]] == want["outcome"]


def test_the_cost_by_model_is_the_exact_sum_of_the_calls() -> None:
    rng = random.Random(17)
    amounts = [float(D(rng.randint(1, 10**9)).scaleb(-10)) for _ in range(20_000)] + [0.1] * 3
    assert _exact_sum(amounts) == sum((D(str(a)) for a in amounts), D(0))
    assert _exact_sum([0.1, 0.2]) == D("0.3")  # not 0.30000000000000004
    # The table shows what a sum of Decimals gives: $0.3335, rounded half to even, is $0.334 (the doubles of
    # 0.0001 and 0.3334 add up to 0.33349999999999996, which would show $0.333).
    records = [call("t.py::test_a", "0.0001"), call("t.py::test_a", "0.3334")]
    page = render_html(build_report(records, {"t.py::test_a": "passed"}))
    assert "<td class=num>$0.334</td>" in page


def test_the_cost_by_model_splits_the_routed_calls_out_of_the_reports_totals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from bench_report import workload

    records, outcomes = workload(1_000, 5_000)
    report = build_report(records, outcomes)
    _, pairs, models = _digest(report)
    # Summing every call, as for a report without `by_model`, gives the same figures.
    assert _digest({k: v for k, v in report.items() if k != "by_model"})[1] == pairs
    # And so does a report whose totals lack the cache tokens (before 0.2).
    old = {
        **report,
        "by_model": {m: {"calls": t["calls"], "cost_usd": t["cost_usd"]} for m, t in report["by_model"].items()},
    }
    assert _digest(old)[1] == pairs
    routed = {(models[r], models[b]) for r, b in pairs if r != b}
    assert routed == {("claude-sonnet-4-6", "claude-haiku-4-5"), ("claude-sonnet-4-6", "claude-opus-4-6")}
    for model, totals in report["by_model"].items():
        into = [p for (_, b), p in pairs.items() if models[b] == model]
        assert sum(p[0] for p in into) == totals["calls"]
        assert sum(p[5] for p in into) == D(str(totals["cost_usd"]))


def test_the_report_of_10000_tests_and_50000_calls_is_under_5_mb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from bench_report import workload

    records, outcomes = workload(10_000, 50_000)
    write_report(build_report(records, outcomes, budget=D(100)), tmp_path / "r.html")
    size = (tmp_path / "r.html").stat().st_size
    assert size < 5_000_000, size
    assert len(embedded((tmp_path / "r.html").read_text(encoding="utf-8"))["calls"]["cost"]) == 50_000


def test_write_report_picks_html_by_suffix_and_names_the_formats(tmp_path: Path) -> None:
    write_report(small_report(), tmp_path / "r.HTML")
    assert (tmp_path / "r.HTML").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(ReportError, match=r"must end in \.json, \.md or \.html"):
        write_report(small_report(), tmp_path / "r.txt")


def test_the_history_page_shows_the_trend_of_each_run() -> None:
    runs = [
        {"time": f"2026-11-0{i}T10:00:00+00:00", "total_usd": 0.1 * i, "calls": i, "tests": {"t.py::a": 0.1 * i}}
        for i in range(1, 4)
    ]
    page = render_history_html(runs, source="h.jsonl")
    assert 'data-runs="3"' in page and 'data-series="2"' in page
    assert page.count('class="point"') == 6


# -- the plugin and the CLI ------------------------------------------------------------------------------------

SUITE = """
from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 1000, "output_tokens": 100})

def ask(model="claude-sonnet-4-6"):
    API.client().messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}])

def test_one(): ask()
def test_two(): ask(); ask(model="claude-haiku-4-5")
"""


def test_llm_report_html_writes_the_page_and_three_runs_show_a_trend(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    for _ in range(3):
        result = fake_pytester.runpytest("--llm-report=out/r.html", "--llm-history=h.jsonl")
        result.assert_outcomes(passed=2)
    lines = (fake_pytester.path / "h.jsonl").read_text().splitlines()
    assert len(lines) == 3
    page = (fake_pytester.path / "out" / "r.html").read_text(encoding="utf-8")
    assert 'id="trend-chart"' in page and 'data-runs="3"' in page
    assert len(embedded(page)["calls"]["cost"]) == 3


def test_the_ini_twins_resolve_paths_from_the_ini_file(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    fake_pytester.makeini("[pytest]\nllm_report = reports/r.html\nllm_history = reports/h.jsonl\n")
    sub = fake_pytester.mkdir("sub")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        fake_pytester.runpytest(str(fake_pytester.path)).assert_outcomes(passed=2)
    assert (fake_pytester.path / "reports" / "r.html").is_file()
    assert len((fake_pytester.path / "reports" / "h.jsonl").read_text().splitlines()) == 1


def test_a_report_path_of_another_kind_is_a_usage_error(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    result = fake_pytester.runpytest("--llm-report=r.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-report: 'r.txt' must end in .json, .md or .html*"])


def test_a_corrupt_history_line_is_skipped_with_a_warning_not_a_traceback(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    (fake_pytester.path / "h.jsonl").write_text('{"schema": "pytest-costguard-history/1", "time": "x", "tot\n')
    result = fake_pytester.runpytest("--llm-report=r.html", "--llm-history=h.jsonl")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*pytest-costguard: warning: *h.jsonl line 1: skipped, not JSON*"])
    assert "Traceback" not in result.stdout.str()
    assert 'data-runs="1"' in (fake_pytester.path / "r.html").read_text(encoding="utf-8")


def test_an_unwritable_history_fails_the_run_as_a_missing_report_does(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    (fake_pytester.path / "blocked").write_text("a file, not a folder")
    result = fake_pytester.runpytest("--llm-history=blocked/h.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*pytest-costguard: --llm-history: cannot append to *blocked/h.jsonl*"])


@pytest.mark.slow  # an xdist run of two workers
def test_under_xdist_only_the_controller_appends_to_the_history(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    result = fake_pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "--llm-history=h.jsonl")
    result.assert_outcomes(passed=2)
    (line,) = (fake_pytester.path / "h.jsonl").read_text().splitlines()
    assert json.loads(line)["calls"] == 3


def test_costguard_report_and_merge_write_the_same_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "r.json"
    write_report(small_report(), source)
    assert cli.main(["report", str(source), "--html", str(tmp_path / "report.html")]) == 0
    assert (
        cli.main(
            ["merge", str(source), "--html", str(tmp_path / "merged.html"), "--history", str(tmp_path / "h.jsonl")]
        )
        == 0
    )
    capsys.readouterr()
    for name in ("report.html", "merged.html"):
        page = (tmp_path / name).read_text(encoding="utf-8")
        assert 'id="top-tests"' in page and len(embedded(page)["calls"]["cost"]) == 3
    assert 'id="trend-chart"' in (tmp_path / "merged.html").read_text(encoding="utf-8")
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 1
    assert cli.main(["report", str(source), "--html", str(tmp_path / "report.txt")]) == 2
    assert "--html: " in capsys.readouterr().err
