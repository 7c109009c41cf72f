"""A Message Batch created on one xdist worker and read on another fails closed (issue 11, docs/budgets.md).

The worker that reads the results does not hold the batch, so it settles nothing; the creating worker charges
the batch to the test that created it at its worst case, marked estimated, when its session ends. The run's
report never shows less than what the API billed, and nothing is counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from pytest_costguard import PriceBook
from pytest_costguard.core.budget import bound_request
from pytest_costguard.core.pricing import usage_from_response
from pytest_costguard.emulator import Emulator

pytest_plugins = "pytester"

MODEL = "claude-haiku-4-5"
PARAMS = {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": "a question " * 30}]}

SUITE = """
import json, os, time
from pathlib import Path

import anthropic

HANDOFF = Path(os.environ["BATCH_HANDOFF"])
PARAMS = json.loads(os.environ["BATCH_PARAMS"])


def client():
    return anthropic.Anthropic(base_url=os.environ["EMULATOR_URL"], api_key="k", max_retries=0)


def test_creates():
    with client() as sdk:
        batch = sdk.messages.batches.create(requests=[{"custom_id": "a", "params": PARAMS}])
    HANDOFF.write_text(json.dumps({"id": batch.id, "worker": os.environ.get("PYTEST_XDIST_WORKER")}))


def test_reads():
    deadline = time.monotonic() + 60
    while not HANDOFF.exists() or not HANDOFF.read_text():
        assert time.monotonic() < deadline, "the creating test never ran"
        time.sleep(0.05)
    handoff = json.loads(HANDOFF.read_text())
    assert handoff["worker"] != os.environ.get("PYTEST_XDIST_WORKER")  # created on the other worker
    with client() as sdk:
        assert [r.result.type for r in sdk.messages.batches.results(handoff["id"])] == ["succeeded"]
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.mark.slow
def test_a_batch_read_on_another_worker_stays_charged_to_its_creator_at_its_worst_case_marked_estimated(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio")
    monkeypatch.setenv("EMULATOR_URL", emulator.base_url)
    monkeypatch.setenv("BATCH_HANDOFF", str(pytester.path / "handoff.json"))
    monkeypatch.setenv("BATCH_PARAMS", json.dumps(PARAMS))
    pytester.makepyfile(test_suite=SUITE)

    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--llm-budget=1", "--llm-report=r.json")

    result.assert_outcomes(passed=2)
    assert len(emulator.billed) == 1
    book = PriceBook()
    billed = book.cost(usage_from_response(emulator.billed[0]["usage"]), MODEL)
    worst = bound_request(PARAMS, book.rates(MODEL, batch=True)).cost
    report = json.loads((pytester.path / "r.json").read_text())
    [call] = report["calls"]  # the reading worker settled nothing: no second record
    assert call["nodeid"] == "test_suite.py::test_creates"
    assert call["estimated"] is True
    assert Decimal(str(call["cost_usd"])) == worst
    assert Decimal(str(report["total_cost_usd"])) == worst > billed > 0  # fails closed: never below the bill
    result.stdout.fnmatch_lines(["*1 call estimated*"])
