"""One budget for a whole pytest-xdist run, and ledgers that survive a killed run.

The inner suites call the real anthropic SDK against an `httpx2.MockTransport` "API" that appends a line to a
file for every response it bills, so these tests compare what the plugin reports with what was really billed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard import cli
from pytest_costguard.core.pricing import Usage, default_price_book
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.plugin.xdist import record_from_json, record_to_json

pytest.importorskip("xdist")

MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 2000, "output_tokens": 100}
# The request below holds 2,000+ bytes, so its worst case (bytes as tokens, max_tokens out) covers USAGE.
PER_CALL = default_price_book().cost(Usage(input_tokens=2000, output_tokens=100), MODEL)

API = f"""
import json, os, random, signal, time

import anthropic
import httpx2

USAGE = {USAGE!r}


def handler(request):
    if request.url.path.endswith("/count_tokens"):
        # A preflight (--llm-preflight): free, like the API's count; never billed.
        return httpx2.Response(200, json={{"input_tokens": USAGE["input_tokens"]}})
    time.sleep(random.uniform(0, 0.003))  # lets calls of different workers overlap
    # One short append per billed response: atomic with O_APPEND, whichever process writes it.
    line = {{"usage": USAGE, "worker": os.environ.get("PYTEST_XDIST_WORKER")}}
    with open(os.environ["BILLED_FILE"], "a") as fh:
        fh.write(json.dumps(line) + "\\n")
    return httpx2.Response(200, json={{
        "id": "msg_1", "type": "message", "role": "assistant", "model": {MODEL!r},
        "content": [{{"type": "text", "text": "ok"}}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": USAGE,
    }})


def call(times):
    transport = httpx2.MockTransport(handler)
    client = anthropic.Anthropic(api_key="k", max_retries=0, http_client=httpx2.Client(transport=transport))
    for _ in range(times):
        client.messages.create(
            model={MODEL!r}, max_tokens=100, messages=[{{"role": "user", "content": "x" * 2000}}]
        )


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def billed_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = pytester.path / "billed.jsonl"
    monkeypatch.setenv("BILLED_FILE", str(path))
    # Only the plugins under test (each worker would otherwise import hypothesis, respx, asyncio...).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(api=API)
    return path


PLUGINS = ("-p", "pytest_costguard.plugin", "-p", "no:cacheprovider")


def billed(path: Path) -> list[str | None]:
    """Return the worker that received each response the fake API billed."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    assert all(line["usage"] == USAGE for line in lines)
    return [line["worker"] for line in lines]


BUDGET = Decimal("0.05")
KILLER = """
def test_one_call_then_the_worker_dies():
    with open("died.txt", "w") as fh:
        fh.write(os.environ["PYTEST_XDIST_WORKER"])
    call(1)
    open("called.txt", "w").close()
    kill_myself()


def wait_for_the_killer():
    # Workers start in any order: hold the spenders until the killer's call is billed, so that its call always
    # finds budget left (otherwise it is refused and no worker crashes with a billed call).
    deadline = time.monotonic() + 60
    while not os.path.exists("called.txt") and time.monotonic() < deadline:
        time.sleep(0.01)
"""
SPEND = """
import os
import time
import pytest
from api import call, kill_myself
{killer}

@pytest.mark.parametrize("i", range(40))
def test_three_calls(i):
    {wait}
    call(3)
"""


@pytest.mark.slow
@pytest.mark.parametrize("worker_crash", [False, False, True], ids=["run-1", "run-2", "a-worker-crashes"])
def test_workers_share_one_budget_and_never_bill_more_than_it(
    pytester: pytest.Pytester, billed_file: Path, worker_crash: bool
) -> None:
    # With a crash, the killer's call is billed before any other (the spenders wait for it); its worker dies.
    pytester.makepyfile(
        test_spend=SPEND.format(
            killer=KILLER if worker_crash else "", wait="wait_for_the_killer()" if worker_crash else "pass"
        )
    )
    assert 120 * PER_CALL > 5 * BUDGET  # the suite wants several times the budget
    result = pytester.runpytest_subprocess(
        "-n", "4", "-p", "xdist", *PLUGINS, f"--llm-budget={BUDGET}", "--llm-report=r.json",
        "--junitxml=junit.xml", "--tb=no",
    )
    workers = billed(billed_file)
    cost = PER_CALL * len(workers)
    assert cost <= BUDGET
    # Refusals come only once the budget is (nearly) used: not a per-worker slice of it.
    assert cost > BUDGET - 2 * PER_CALL
    report = json.loads((pytester.path / "r.json").read_text())
    assert Decimal(str(report["total_cost_usd"])) == cost
    assert len(report["calls"]) == sum(t["calls"] for t in report["tests"]) == len(workers)
    assert report["budget_exceeded"] and report["refused_calls"] > 0
    assert {t["outcome"] for t in report["tests"] if "dies" not in t["nodeid"]} == {"passed", "failed"}
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*LLM BUDGET EXCEEDED*refused by the session budget (--llm-budget)*"])
    result.stdout.fnmatch_lines(["*budget used: * of $0.05*"])
    # Each worker's test reports carry their own test's cost (JUnit XML is written by the controller).
    per_test = {
        case.get("name"): {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        for case in ET.parse(pytester.path / "junit.xml").iter("testcase")
    }
    reported = sum((Decimal(props.get("llm_cost_usd", "0")) for props in per_test.values()), Decimal(0))
    assert {props.get("llm_calls", "0") for props in per_test.values()} >= {"3", "0"}
    if not worker_crash:
        assert len(per_test) == 40
        assert reported == cost
        return
    # The crashed worker sent nothing back: its call reached the report through the shared ledger.
    result.stdout.fnmatch_lines(["*crashed*"])
    dead = (pytester.path / "died.txt").read_text()
    assert workers.count(dead) == 1
    assert reported == cost - PER_CALL  # no test report carries the dead worker's cost
    died = next(t for t in report["tests"] if t["nodeid"].endswith("test_one_call_then_the_worker_dies"))
    assert (died["calls"], died["outcome"]) == (1, "error")  # xdist reports a crash as an error


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_a_ledger_that_reports_its_finished_calls(
    pytester: pytest.Pytester, billed_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(
        test_crash="""
        from api import call, kill_myself

        def test_two_calls():
            call(2)

        def test_one_call_then_killed():
            call(1)
            kill_myself()

        def test_never_runs():
            call(5)
        """
    )
    result = pytester.runpytest_subprocess(*PLUGINS, "--llm-ledger=ledger.sqlite3", "--llm-budget=1")
    assert result.ret == -9
    assert len(billed(billed_file)) == 3
    cost = 3 * PER_CALL
    capsys.readouterr()
    ledger, out = pytester.path / "ledger.sqlite3", pytester.path / "out.json"
    assert cli.main(["report", str(ledger), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert Decimal(str(report["total_cost_usd"])) == cost
    by_test = {t["nodeid"]: (t["calls"], t["input_tokens"], t["output_tokens"]) for t in report["tests"]}
    assert by_test == {
        "test_crash.py::test_two_calls": (2, 4000, 200),
        "test_crash.py::test_one_call_then_killed": (1, 2000, 100),
    }
    assert "test_crash.py::test_two_calls" in printed and "$0.005" in printed
    assert "test_crash.py::test_one_call_then_killed" in printed and "$0.0025" in printed
    assert "budget used: $0.0075 of $1.00" in printed


def test_a_foreign_file_as_ledger_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("notes.txt").write_text("my notes\n")
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest("--llm-ledger=notes.txt", "-p", "no:cacheprovider", "-p", "no:asyncio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--llm-ledger: *notes.txt: not a pytest-costguard ledger (not an SQLite database*"]
    )
    assert pytester.path.joinpath("notes.txt").read_text() == "my notes\n"


def test_records_cross_from_worker_to_controller_as_json_without_losing_a_digit() -> None:
    record = CostRecord(
        model=MODEL, input_tokens=1, output_tokens=2, cost_usd=Decimal("0.1234567890123456789012"),
        requested_model="claude-opus-4-1", tag="t.py::x", streamed=True, retries=2, estimated=True,
        cost_at_requested_usd=Decimal("1.5"), cost_uncached_usd=None,
    )
    assert record_from_json(json.loads(json.dumps(record_to_json(record)))) == record
