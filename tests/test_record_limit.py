"""The record limit (`--llm-max-records`): only the first calls' records are kept, every figure stays exact."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fakeapi import billed_cost

from pytest_costguard.domain.records import Usage
from pytest_costguard.metering.guard import CostGuard, GuardConfig
from pytest_costguard.metering.ledger import InMemoryLedger
from pytest_costguard.metering.run import CostRun
from pytest_costguard.metering.scope import Scope, running
from pytest_costguard.reports.merge import merge_reports
from pytest_costguard.reports.model import render_markdown, terminal_lines

pytest_plugins = "pytester"

MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")


def _metered_run(max_records: int | None, *, calls: int = 40, budget: Decimal | None = None) -> CostRun:
    """A run that metered `calls` varied calls over 8 tests (every third outside any test)."""
    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1000)))
    run = CostRun(lambda: guard, budget=budget, max_records=max_records)
    run.set_test_budget("t::b1", Decimal("0.004"))  # small enough that its calls go over it
    for index in range(calls):
        tag = None if index % 3 == 0 else f"t::b{index % 8}"
        model = MODELS[index % 2]
        body = {"model": model, "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}
        with running(run.guard.scope_owner, Scope(tag=tag)):
            ticket, _ = run.guard.begin(body, streamed=index % 5 == 0)
            usage = Usage(input_tokens=100 + 37 * index, output_tokens=1 + 11 * index, cache_read_input_tokens=index)
            if index % 7 == 0:
                run.guard.settle_incomplete(ticket, usage, model)
            else:
                run.guard.settle(ticket, usage, model)
        if tag is not None:
            run.record_outcome(tag, "call", "passed")
    return run


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """Every figure of a report but its list of calls and its creation time."""
    return {k: v for k, v in report.items() if k not in ("calls", "created", "calls_truncated")}


@pytest.mark.parametrize("limit", [0, 1, 5, 39])
def test_a_limited_run_keeps_only_its_first_records_and_reports_the_same_figures(limit: int) -> None:
    full = _metered_run(None, budget=Decimal("0.05")).build_report()
    run = _metered_run(limit, budget=Decimal("0.05"))
    report = run.build_report()
    assert len(run.guard.records) == limit
    assert len(report["calls"]) == limit
    assert report["calls"] == full["calls"][:limit]
    assert report["calls_total"] == full["calls_total"] == 40
    assert report["calls_truncated"] is True and full["calls_truncated"] is False
    assert _figures(report) == _figures(full)
    # The budgets did break, and the calls that broke them are named, though their records are gone.
    assert report["overspends"] and {o["scope"] for o in report["overspends"]} == {"session", "test t::b1"}


def test_a_limit_the_run_stays_under_changes_nothing() -> None:
    full = _metered_run(None).build_report()
    report = _metered_run(40).build_report()
    assert report["calls_truncated"] is False
    assert {k: v for k, v in report.items() if k != "created"} == {k: v for k, v in full.items() if k != "created"}


def test_records_read_back_from_other_processes_count_within_the_same_limit() -> None:
    full = _metered_run(None, budget=Decimal("0.2"))
    full.add_remote(list(_metered_run(None).records), [])
    run = _metered_run(30, budget=Decimal("0.2"))
    run.add_remote(list(_metered_run(None).records), [])
    report, expected = run.build_report(), full.build_report()
    assert len(report["calls"]) == 30 and report["calls_total"] == 80
    assert report["calls"] == expected["calls"][:30]
    assert report["total_cost_usd"] == expected["total_cost_usd"]
    # The session budget is broken only by the two together; the report says so, and by how much.
    assert report["budget_exceeded"] and expected["budget_exceeded"]
    assert report["overspent_usd"] == expected["overspent_usd"]
    assert [o["scope"] for o in report["overspends"]] == [o["scope"] for o in expected["overspends"]]
    assert report["by_model"] == expected["by_model"] and report["tests"] == expected["tests"]
    assert run.guard.total_cost == full.guard.total_cost


def test_the_reports_say_how_many_calls_they_list() -> None:
    report = _metered_run(5).build_report()
    assert "5 of 40 calls listed (--llm-max-records); every total counts all 40" in terminal_lines(report)
    markdown = render_markdown(report)
    assert "40 calls" in markdown and "- 5 of 40 calls listed" in markdown
    merged = merge_reports([report, _metered_run(None).build_report()])
    assert merged["calls_total"] == 80 and len(merged["calls"]) == 45 and merged["calls_truncated"] is True


SUITE = """
from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 1000, "output_tokens": 100}, log_path="billed.jsonl")

def ask():
    return API.client().messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "x"}])

def test_one(): ask(); ask()
def test_two(): ask(); ask(); ask()
"""


def test_the_plugin_lists_the_first_calls_and_counts_every_one(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite=SUITE)
    result = fake_pytester.runpytest("--llm-max-records=2", "--llm-report=r.json", "--llm-report=r.html")
    result.assert_outcomes(passed=2)
    report = json.loads((fake_pytester.path / "r.json").read_text())
    billed = [json.loads(line) for line in (fake_pytester.path / "billed.jsonl").read_text().splitlines()]
    assert len(billed) == 5
    assert len(report["calls"]) == 2 and report["calls_total"] == 5 and report["calls_truncated"]
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(billed)
    assert {t["nodeid"]: t["calls"] for t in report["tests"]} == {
        "test_suite.py::test_one": 2,
        "test_suite.py::test_two": 3,
    }
    result.stdout.fnmatch_lines(["*2 of 5 calls listed (--llm-max-records)*"])
    assert "2 of 5 calls listed" in (fake_pytester.path / "r.html").read_text()


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "١٢"])
def test_a_bad_record_limit_is_a_usage_error_naming_the_option(fake_pytester: pytest.Pytester, value: str) -> None:
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest(f"--llm-max-records={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-max-records: * is not a whole number of calls*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_bad_record_limit_in_the_ini_file_names_the_setting(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeini("[pytest]\nllm_max_records = many\n")
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llm_max_records in tox.ini: 'many' is not a whole number of calls*"])
