"""Nested runs: `pytest.main` inside a metered session stays under the outer budget; it may only add limits."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from fakeapi import billed_cost

INNER_SUITE = """
from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 1000, "output_tokens": 100}, log_path="billed.jsonl")


def test_spends():
    client = API.client()
    for _ in range(CALLS):
        client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "x"}])
"""

OUTER_SUITE = """
import pytest


def test_runs_a_pytest_session_inside():
    code = pytest.main(["-p", "no:cacheprovider", "-q", "inner/test_inner.py", *INNER_ARGS])
    assert code in (0, 1)
"""


def _setup(pytester: pytest.Pytester, calls: int, inner_args: list[str]) -> None:
    inner = pytester.mkdir("inner")
    (inner / "test_inner.py").write_text(f"CALLS = {calls}\n" + INNER_SUITE)
    (inner / "__init__.py").write_text("")
    pytester.makepyfile(test_outer=f"INNER_ARGS = {inner_args!r}\n" + OUTER_SUITE)
    # The inner session is collected from its own directory: the outer run must not collect it too.
    pytester.makeini("[pytest]\ntestpaths = test_outer.py\n")


def _billed(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    path = pytester.path / "billed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _report(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    return data


def test_an_inner_session_without_a_budget_cannot_escape_the_outer_one(fake_pytester: pytest.Pytester) -> None:
    _setup(fake_pytester, 30, [])
    budget = Decimal("0.01")
    result = fake_pytester.runpytest_subprocess(f"--llm-budget={budget}", "--llm-report=r.json")
    billed = _billed(fake_pytester)
    assert 0 < len(billed) < 30
    assert billed_cost(billed) <= budget
    report = _report(fake_pytester)
    assert len(report["calls"]) == len(billed)  # the outer report has the inner session's calls
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(billed)
    assert {c["nodeid"] for c in report["calls"]} == {"test_outer.py::test_runs_a_pytest_session_inside"}
    assert report["refused_calls"] >= 1
    assert result.ret != 0


def test_an_inner_session_may_add_a_tighter_budget(fake_pytester: pytest.Pytester) -> None:
    _setup(fake_pytester, 30, ["--llm-budget=0.005"])
    result = fake_pytester.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json")
    billed = _billed(fake_pytester)
    assert 0 < len(billed) < 30
    assert billed_cost(billed) <= Decimal("0.005")
    assert len(_report(fake_pytester)["calls"]) == len(billed)
    assert result.ret == 0  # the outer budget held: the inner run's own refusal failed only the inner run


def test_an_in_process_inner_run_gives_metering_back_to_the_outer_session(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(
        test_outer="""
import os

from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 1000, "output_tokens": 100}, log_path=os.path.abspath("billed.jsonl"))

def ask(client):
    client.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "x"}])

def test_before_and_after_an_inner_run(pytester):
    pytester.makepyfile(test_inner="def test_nothing():\\n    pass\\n")
    pytester.runpytest("--llm-budget=5").assert_outcomes(passed=1)
    ask(API.client())  # metered by the outer session again
""",
    )
    fake_pytester.makeini("[pytest]\ntestpaths = test_outer.py\n")
    result = fake_pytester.runpytest_subprocess("-p", "pytester", "--llm-meter", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    report = _report(fake_pytester)
    assert [c["nodeid"] for c in report["calls"]] == ["test_outer.py::test_before_and_after_an_inner_run"]
    assert len(_billed(fake_pytester)) == 1
