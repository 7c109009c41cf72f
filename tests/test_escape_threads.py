"""Threads and late calls: background work is charged to the test that started it, and nothing goes unmetered.

Inner runs are in-process (`fake_pytester`): each installs and uninstalls the thread hooks, which the last
test here checks are back as Python ships them.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from fakeapi import billed_cost

HEAD = """
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 100, "output_tokens": 10}, log_path="billed.jsonl")
POOL = ThreadPoolExecutor(4)
GO = threading.Event()
WORK = []


def ask():
    API.client().messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "x"}])


def ask_when_told():
    assert GO.wait(30)
    ask()
"""


def _report(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    return data


def _billed(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    path = pytester.path / "billed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_pool_and_thread_work_is_charged_to_the_test_that_started_it(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(
        test_bg=HEAD
        + """
def test_a_fans_out_and_returns():
    WORK.extend(POOL.submit(ask_when_told) for _ in range(5))
    thread = threading.Thread(target=ask_when_told)
    thread.start()
    WORK.append(thread)


@pytest.mark.llm_budget("0.000001")
def test_b_has_a_tiny_budget_and_spends_nothing():
    GO.set()  # test_a's work spends now, while this test runs
    for work in WORK:
        work.result() if hasattr(work, "result") else work.join()


def test_c_own_call_in_the_pool():
    POOL.submit(ask).result()
"""
    )
    result = fake_pytester.runpytest("--llm-meter", "--llm-report=r.json")
    result.assert_outcomes(passed=3)  # the innocent test is not charged for test_a's background work
    calls = [c["nodeid"] for c in _report(fake_pytester)["calls"]]
    started_by_a, own = "test_bg.py::test_a_fans_out_and_returns", "test_bg.py::test_c_own_call_in_the_pool"
    assert sorted(calls) == [started_by_a] * 6 + [own]
    assert len(_billed(fake_pytester)) == 7


def test_calls_after_the_last_test_count_and_calls_after_the_report_are_refused(
    fake_pytester: pytest.Pytester,
) -> None:
    fake_pytester.makepyfile(holder="CLIENTS = []\nLATE = []\n")
    fake_pytester.makeconftest(
        """
import pytest

import holder


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    # After the last test, before the report: the thread that test left running spends now.
    import test_late
    test_late.GO.set()
    test_late.WORK[0].join()


def pytest_terminal_summary(terminalreporter):
    # After the report is written: a call now could not be counted.
    try:
        holder.CLIENTS[0].messages.create(
            model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "late"}])
    except Exception as exc:
        holder.LATE.append(type(exc).__name__)
"""
    )
    fake_pytester.makepyfile(
        test_late=HEAD
        + """
import holder


def test_leaves_a_thread_running():
    holder.CLIENTS.append(API.client())
    thread = threading.Thread(target=ask_when_told)
    thread.start()
    WORK.append(thread)
"""
    )
    import holder  # type: ignore[import-not-found]  # in sys.modules before the inner run, so it outlives it

    result = fake_pytester.runpytest("--llm-budget=1", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    report = _report(fake_pytester)
    assert [c["nodeid"] for c in report["calls"]] == ["test_late.py::test_leaves_a_thread_running"]
    assert len(_billed(fake_pytester)) == 1
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(_billed(fake_pytester))
    assert holder.LATE == ["RunFinishedError"]
    # And after the run ended, a client it built still refuses rather than sending unmetered.
    from pytest_costguard.metering.guard import RunFinishedError

    with pytest.raises(RunFinishedError, match="after the metered run wrote its report"):
        holder.CLIENTS[0].messages.create(
            model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "later"}]
        )
    assert len(_billed(fake_pytester)) == 1


def test_a_metered_run_puts_the_thread_hooks_back(fake_pytester: pytest.Pytester) -> None:
    start, submit = threading.Thread.start, ThreadPoolExecutor.submit
    fake_pytester.makepyfile(
        test_probe="""
import threading
from concurrent.futures import ThreadPoolExecutor

def test_hooked():
    assert threading.Thread.start.__module__ == "pytest_costguard.metering.threads"
    assert ThreadPoolExecutor.submit.__module__ == "pytest_costguard.metering.threads"
"""
    )
    fake_pytester.runpytest("--llm-meter").assert_outcomes(passed=1)
    assert threading.Thread.start is start
    assert ThreadPoolExecutor.submit is submit
