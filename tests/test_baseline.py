"""Cost baselines: what got dearer than an earlier run, and failing the run when it is too much."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest

from pytest_costguard.core.pricing import Usage, default_price_book
from pytest_costguard.reports.baseline import TOTAL, compare

D = Decimal


def report(total: float, **tests: float) -> dict[str, Any]:
    return {
        "total_cost_usd": total,
        "tests": [{"nodeid": f"t.py::{name}", "cost_usd": cost} for name, cost in tests.items()],
    }


def test_changes_are_sorted_biggest_first_and_tests_in_one_run_only_are_listed_apart() -> None:
    before = report(1.0, a=0.1, b=0.2, c=0.3, gone=0.4)
    now = report(1.3, a=0.5, b=0.25, c=0.1, new=0.45)
    result = compare(now, before, fail_pct=None)
    assert [(c.name, c.delta_usd) for c in result.increases] == [("t.py::a", D("0.4")), ("t.py::b", D("0.05"))]
    assert [(c.name, c.delta_usd) for c in result.decreases] == [("t.py::c", D("-0.2"))]
    assert (result.new_tests, result.removed_tests) == (("t.py::new",), ("t.py::gone",))
    assert result.total.delta_usd == D("0.3")  # exact: Decimal(str(float)), no 0.30000000000000004
    assert not result.failed  # without a threshold, a comparison only informs


def test_a_rise_over_the_percentage_fails_unless_it_is_below_the_floor() -> None:
    before = report(1.00, big=0.50, small=0.001, steady=0.49)
    now = report(1.60, big=1.00, small=0.005, steady=0.59)
    result = compare(now, before, fail_pct=D(25), floor=D("0.01"))
    # big: +100%, failing; small: +400% but only +$0.004, under the floor; steady: +20.4%, under 25%.
    assert [c.name for c in result.failures] == [TOTAL, "t.py::big"]
    assert compare(now, before, fail_pct=D(100), floor=D("0.01")).failures == ()  # +100% is not over 100%
    assert compare(now, before, fail_pct=D(25), floor=D(1)).failures == ()


def test_a_test_that_cost_nothing_before_fails_once_it_costs_more_than_the_floor() -> None:
    result = compare(report(0.5, free=0.5), report(0.0, free=0.0), fail_pct=D(1000))
    assert [c.name for c in result.failures] == [TOTAL, "t.py::free"]
    assert result.failures[1].pct is None
    assert "new cost" in result.failures[1].change_text()


def test_the_comparison_renders_for_terminal_markdown_and_json() -> None:
    result = compare(report(0.3, a=0.2, b=0.1), report(0.2, a=0.05, b=0.15), fail_pct=D(10))
    lines = result.terminal_lines()
    assert lines[0] == "vs baseline: total $0.20 -> $0.30 (+$0.10, +50.0%)"
    assert lines[1:5] == [
        "biggest increases:",
        "     +$0.15, +300.0%  t.py::a",
        "biggest decreases:",
        "      -$0.05, -33.3%  t.py::b",
    ]
    assert lines[-1] == "LLM COST REGRESSION over +10% (ignoring increases under $0.01): the total, t.py::a"
    markdown = result.markdown()
    assert "| `t.py::a` | $0.05 | $0.20 | **+$0.15, +300.0%** |" in markdown
    assert "| `t.py::b` | $0.15 | $0.10 | -$0.05, -33.3% |" in markdown
    data = json.loads(json.dumps(result.to_json()))
    assert data["failed"] and data["total"]["pct"] == 50.0
    assert [c["name"] for c in data["failures"]] == [TOTAL, "t.py::a"]


def test_the_core_imports_no_pytest() -> None:
    modules = (
        "pytest_costguard.reports.baseline, pytest_costguard.reports.merge, pytest_costguard.metering.sqlite_ledger"
    )
    code = f"import sys, {modules}; print('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


# -- the plugin ----------------------------------------------------------------------------------------------
MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 2000, "output_tokens": 100}
PER_CALL = float(default_price_book().cost(Usage(input_tokens=2000, output_tokens=100), MODEL))

SUITE = f"""
import anthropic, httpx2


def handler(request):
    return httpx2.Response(200, json={{
        "id": "m", "type": "message", "role": "assistant", "model": {MODEL!r}, "content": [],
        "stop_reason": "end_turn", "stop_sequence": None, "usage": {USAGE!r},
    }})


def call(times):
    transport = httpx2.MockTransport(handler)
    client = anthropic.Anthropic(api_key="k", http_client=httpx2.Client(transport=transport))
    for _ in range(times):
        client.messages.create(model={MODEL!r}, max_tokens=100, messages=[{{"role": "user", "content": "x" * 2000}}])


def test_got_dearer():
    call(2)


def test_got_cheaper():
    call(1)


def test_new():
    call(1)
"""


@pytest.fixture
def baseline_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_costs=SUITE)
    before = {
        "schema": "pytest-costguard/1",
        "currency": "USD",
        "total_cost_usd": 3 * PER_CALL,
        "tests": [
            {"nodeid": "test_costs.py::test_got_dearer", "cost_usd": PER_CALL},
            {"nodeid": "test_costs.py::test_got_cheaper", "cost_usd": 2 * PER_CALL},
        ],
        "calls": [],
    }
    pytester.path.joinpath("main.json").write_text(json.dumps(before))
    return pytester


PLUGIN = ("-p", "pytest_costguard.plugin", "-p", "no:cacheprovider")


def test_a_run_dearer_than_its_baseline_fails_and_shows_why(baseline_run: pytest.Pytester) -> None:
    result = baseline_run.runpytest_subprocess(
        *PLUGIN, "--llm-baseline=main.json", "--llm-baseline-fail=50", "--llm-baseline-floor=0.001",
        "--llm-report=r.json", "--llm-report=r.md",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*vs baseline: total $0.0075 -> $0.01 (+$0.0025, +33.3%)*",
        "biggest increases:",
        "*+$0.0025, +100.0%  test_costs.py::test_got_dearer",
        "biggest decreases:",
        "*-$0.0025, -50.0%  test_costs.py::test_got_cheaper",
        "tests not in both runs: 1 new, 0 gone",
        "LLM COST REGRESSION over +50% (ignoring increases under $0.001): test_costs.py::test_got_dearer",
    ])
    data = json.loads(baseline_run.path.joinpath("r.json").read_text())
    assert data["baseline"]["path"] == "main.json"
    assert data["baseline"]["failed"] is True
    assert [c["name"] for c in data["baseline"]["failures"]] == ["test_costs.py::test_got_dearer"]
    markdown = baseline_run.path.joinpath("r.md").read_text()
    assert "### Cost vs baseline" in markdown
    assert "| `test_costs.py::test_got_dearer` | $0.0025 | $0.005 | **+$0.0025, +100.0%** |" in markdown


def test_increases_under_the_floor_do_not_fail_the_run(baseline_run: pytest.Pytester) -> None:
    # +100% on one test, but +$0.0025 is under the default $0.01 floor.
    result = baseline_run.runpytest_subprocess(*PLUGIN, "--llm-baseline=main.json", "--llm-baseline-fail=50")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*vs baseline: total*", "biggest increases:"])
    result.stdout.no_fnmatch_line("*COST REGRESSION*")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "nope.json: no such file"),
        ("{broken", "nope.json: not a JSON report"),
        ('{"schema": "pytest-costguard/9"}', "nope.json: schema 'pytest-costguard/9' is not 'pytest-costguard/1'"),
    ],
)
def test_a_missing_or_corrupt_baseline_is_a_usage_error_naming_option_and_path(
    pytester: pytest.Pytester, content: str | None, message: str
) -> None:
    if content is not None:
        pytester.path.joinpath("nope.json").write_text(content)
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:asyncio", "--llm-baseline=nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --llm-baseline: *{message}*"])
    assert "Traceback" not in result.stderr.str()
    pytester.makeini("[pytest]\nllm_baseline = nope.json\n")
    result = pytester.runpytest("-p", "no:asyncio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: llm_baseline in tox.ini: *{message}*"])
