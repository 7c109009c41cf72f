"""End to end: a help-desk app's own SDK clients, the plugin, and the emulator failing in every way it can.

Each test runs an inner pytest in a subprocess (the plugin patches the SDK process-wide) against an
Emulator started here, and compares three accounts of the same calls: what the inner tests saw, what the
plugin reported (its JSON report) and what the emulator billed (its ledger, priced with the default price
book). Several faults share one inner run: each inner run costs a few seconds of `anthropic` import.

The inner conftest records, per inner test, the ledger entries the emulator added during that test
(`billed_by_test.jsonl`) and drops any fault still queued. Faults are queued through the emulator's control
endpoint, so an inner test can also tell how many attempts reached the emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pytest_costguard.core.pricing import Usage, default_price_book, usage_from_response
from pytest_costguard.emulator import Emulator

HELPDESK_SOURCE = (Path(__file__).parent / "e2e_support.py").read_text(encoding="utf-8")
MAX_TOKENS = 64  # e2e_support.MAX_TOKENS

INNER_INI = """
[pytest]
addopts = -p no:asyncio -p no:cacheprovider
filterwarnings = error
"""

INNER_CONFTEST = """
import json

import pytest

import helpdesk


@pytest.fixture(autouse=True)
def billed_during_test(request):
    before = len(helpdesk.billed())
    yield
    helpdesk.clear_faults()
    entries = helpdesk.billed()[before:]
    with open("billed_by_test.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"nodeid": request.node.nodeid, "billed": entries}) + "\\n")
"""

COMPLETE_SUITE = """
import asyncio

import anthropic
import pytest

from helpdesk import answer, answer_all, answer_streaming, pending_faults, queue_fault


def test_a_plain_answer():
    assert answer("How do I send an invoice?").stop_reason == "end_turn"


def test_a_plain_stream():
    text, stop_reason = answer_streaming("How do I add a client?")
    assert text and stop_reason == "end_turn"


def test_a_fan_out():
    answers = asyncio.run(answer_all([f"Question {i}: how do I export my books?" for i in range(5)]))
    assert len(answers) == 5 and all(answers)


@pytest.mark.parametrize("status", ["429", "500", "529", "504"])
def test_a_transient_status_is_retried(status):
    # retry-after 0 on the 429: the SDK falls back to its own backoff (~0.5 s, then ~1 s).
    queue_fault(status, times=2, retry_after=0 if status == "429" else 0.001)
    assert answer(f"Transient {status}: why was I charged twice?").stop_reason == "end_turn"
    assert pending_faults() == []  # both failures used up: three attempts reached the emulator


def test_an_overload_before_a_stream_starts_is_retried():
    queue_fault("529", times=2, retry_after=0.001)
    text, stop_reason = answer_streaming("Transient 529 stream: where is my payout?")
    assert text and stop_reason == "end_turn"
    assert pending_faults() == []


def test_a_fan_out_through_an_overload():
    queue_fault("529", times=2, retry_after=0.001)
    answers = asyncio.run(answer_all([f"Overloaded fan-out {i}: what is a credit note?" for i in range(3)]))
    assert len(answers) == 3 and all(answers)
    assert pending_faults() == []


def test_a_connection_dropped_before_the_reply_is_retried():
    queue_fault("drop")
    assert answer("Dropped: can I change an invoice number?").stop_reason == "end_turn"
    assert pending_faults() == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_a_permanent_status_is_not_retried(status):
    queue_fault(str(status), times=3)
    with pytest.raises(anthropic.APIStatusError) as info:
        answer(f"Permanent {status}: please delete my account")
    assert info.value.status_code == status
    assert [f["times"] for f in pending_faults()] == [2]  # exactly one attempt reached the emulator
"""

LONG = 20_000  # a stream of ~1 MB: far more than the first read, so closing it early really cuts it
INCOMPLETE_SUITE = (
    f"""
LONG = {LONG}
LONG_REPLY = " [[costguard:output={LONG}]]"
"""
    + """
import asyncio

import anthropic
import pytest

from helpdesk import (
    answer,
    answer_raw_stream,
    answer_streaming,
    billed,
    first_words,
    pending_faults,
    queue_fault,
    stream_all,
    wait_for_billed,
)


def test_a_stream_cut_by_an_error_event():
    queue_fault("stream_error")
    with pytest.raises(anthropic.APIStatusError) as info:
        answer_streaming("Stream error: is the app down?")
    assert info.value.status_code == 200
    assert pending_faults() == []


def test_a_stream_dropped_midway():
    queue_fault("drop")
    text, stop_reason = answer_streaming("Dropped stream: how do refunds work?")
    assert text and stop_reason is None  # the SDK does not notice: the app gets half a reply


def test_async_streams_one_of_which_is_dropped():
    queue_fault("drop")
    results = asyncio.run(stream_all([f"Async stream {i}: how do reminders work?" for i in range(3)]))
    assert sorted(stop_reason is None for _, stop_reason in results) == [False, False, True]


def test_a_malformed_reply():
    queue_fault("malformed")
    with pytest.raises(ValueError):
        answer("Malformed: what are the card fees?")


def test_a_malformed_stream():
    queue_fault("malformed")
    with pytest.raises(ValueError):
        answer_streaming("Malformed stream: what are the card fees?")


def test_a_reply_without_usage():
    queue_fault("no_usage")
    assert answer("No usage: how do I reconnect my bank?").usage is None


def test_a_stream_without_usage():
    queue_fault("no_usage")
    assert answer_raw_stream("No usage stream: how do I reconnect my bank?")[-1] == "message_stop"


def test_a_short_stream_closed_after_its_first_words():
    # The whole reply may already have arrived in the first read: then its usage is known exactly.
    assert first_words("Preview: what does the Team plan include?")


def test_a_long_stream_abandoned_after_its_first_words():
    already = len(billed())
    assert first_words(f"Preview: summarise our terms.{LONG_REPLY}", max_tokens=LONG)
    # The emulator bills what it generated once it notices the client has gone.
    assert len(wait_for_billed(already + 1)) == already + 1
"""
)

SLOW_SUITE = """
from helpdesk import answer, queue_fault, wait_for_billed


def test_a_timed_out_attempt_is_retried():
    queue_fault("slow", seconds=1.0)
    assert answer("Slow: when will my payout arrive?", timeout=0.5).stop_reason == "end_turn"
    # The attempt that timed out is billed too, once its delay is over.
    assert len(wait_for_billed(2)) == 2
"""

BUDGET = Decimal("0.08")
BUDGET_SUITE = """
import asyncio

import pytest

from helpdesk import answer, answer_all, answer_streaming

LONG = " [[costguard:output=1000]]"  # every reply is exactly 1,000 tokens: about $0.015 on Sonnet 4.6


def test_a_burst_of_concurrent_questions():
    asyncio.run(answer_all([f"Question {i}: what changed in my plan?{LONG}" for i in range(12)], max_tokens=1000))


@pytest.mark.parametrize("n", range(8))
def test_one_question(n):
    answer(f"Question {n}: how do I add a logo to invoices?{LONG}", max_tokens=1000)


@pytest.mark.parametrize("n", range(4))
def test_one_streamed_answer(n):
    answer_streaming(f"Question {n}: why is my bank feed late?{LONG}", max_tokens=1000)
"""


# -- helpers -------------------------------------------------------------------------------------------------
PRICES = default_price_book()


def _price(usage: Usage | dict[str, Any], model: str) -> Decimal:
    return PRICES.cost(usage if isinstance(usage, Usage) else usage_from_response(usage), model)


def _json_number(amount: Decimal) -> float:
    """Money as the report writes it (report._num)."""
    return float(round(amount, 10))


class InnerRun:
    """An inner pytest run's outcome, report and what the emulator billed during each of its tests."""

    def __init__(self, result: pytest.RunResult, path: Path) -> None:
        self.result = result
        self.output = result.stdout.str() + result.stderr.str()
        report_path = path / "report.json"
        self.report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.exists() else {}
        self.billed: dict[str, list[dict[str, Any]]] = {}
        ledger = path / "billed_by_test.jsonl"
        for line in ledger.read_text().splitlines() if ledger.exists() else []:
            entry = json.loads(line)
            self.billed[entry["nodeid"]] = entry["billed"]

    def calls(self, nodeid: str) -> list[dict[str, Any]]:
        return [c for c in self.report["calls"] if c["nodeid"] == nodeid]

    def outcomes(self) -> dict[str, str]:
        return {t["nodeid"]: t["outcome"] for t in self.report["tests"]}

    @property
    def billed_total(self) -> Decimal:
        return sum((_price(e["usage"], e["model"]) for entries in self.billed.values() for e in entries), Decimal(0))


RunInner = Callable[..., InnerRun]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def run_inner(pytester: pytest.Pytester, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> RunInner:
    """Run a suite against the help-desk app in a subprocess, the app's clients pointed at the emulator."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "e2e-dummy-key")
    for name in ("ANTHROPIC_AUTH_TOKEN", "GITHUB_STEP_SUMMARY", "COSTGUARD_BACKEND", "PYTEST_XDIST_WORKER"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini(INNER_INI)
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(helpdesk=HELPDESK_SOURCE)

    def run(suite: str, *args: str) -> InnerRun:
        pytester.makepyfile(test_suite=suite)
        result = pytester.runpytest_subprocess("--llm-report=report.json", *args, timeout=60)
        run = InnerRun(result, pytester.path)
        assert "INTERNALERROR" not in run.output, run.output
        assert "Traceback" not in result.stderr.str(), run.output
        return run

    return run


# -- tests ---------------------------------------------------------------------------------------------------
def test_transient_failures_are_retried_permanent_ones_are_not_and_only_delivered_replies_cost(
    run_inner: RunInner,
) -> None:
    run = run_inner(COMPLETE_SUITE)

    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert set(run.outcomes().values()) == {"passed"}, run.outcomes()
    problems = []
    retried = {f"test_a_transient_status_is_retried[{s}]": 2 for s in ("429", "500", "529", "504")}
    retried |= {"test_an_overload_before_a_stream_starts_is_retried": 2}
    retried |= {"test_a_plain_answer": 0, "test_a_plain_stream": 0}
    for name, retries in retried.items():
        nodeid = f"test_suite.py::{name}"
        calls, billed = run.calls(nodeid), run.billed[nodeid]
        if len(calls) != 1 or len(billed) != 1:
            problems.append(f"{name}: {len(calls)} call(s) reported, {len(billed)} billed; expected 1 and 1")
            continue
        (call,), (entry,) = calls, billed
        expected = _json_number(_price(entry["usage"], entry["model"]))
        if (call["retries"], call["estimated"], call["cost_usd"]) != (retries, False, expected):
            problems.append(f"{name}: reported {call}, expected {retries} retries, exact cost {expected}")
        if call["streamed"] != ("stream" in name) or not entry["complete"]:
            problems.append(f"{name}: streamed={call['streamed']}, billed {entry}")
    for status in (400, 401, 403, 404, 413):
        nodeid = f"test_suite.py::test_a_permanent_status_is_not_retried[{status}]"
        if run.calls(nodeid) or run.billed[nodeid]:
            problems.append(f"{status}: a failed attempt was charged: {run.calls(nodeid)} / {run.billed[nodeid]}")
    for name, calls, retries in (("test_a_fan_out", 5, 0), ("test_a_fan_out_through_an_overload", 3, 2)):
        nodeid = f"test_suite.py::{name}"
        reported, billed = run.calls(nodeid), run.billed[nodeid]
        charged = sorted(c["cost_usd"] for c in reported)
        if len(reported) != calls or charged != sorted(_json_number(_price(e["usage"], e["model"])) for e in billed):
            problems.append(f"{name}: reported {reported}, billed {billed}")
        if sum(c["retries"] for c in reported) != retries or any(c["estimated"] for c in reported):
            problems.append(f"{name}: expected {retries} retries in all, none estimated: {reported}")
    # A connection dropped after the request was sent may have been billed by the API (here it was not):
    # that attempt is charged its worst case, estimated, and the retry exactly.
    dropped = "test_suite.py::test_a_connection_dropped_before_the_reply_is_retried"
    charged, (entry,) = run.calls(dropped), run.billed[dropped]
    exact = _json_number(_price(entry["usage"], entry["model"]))
    if [(c["estimated"], c["retries"]) for c in charged] != [(True, 0), (False, 1)] or charged[1]["cost_usd"] != exact:
        problems.append(f"dropped connection: charged {charged}, billed {entry}")
    assert not problems, "\n".join(problems)

    # 4 statuses, an overload before a stream and one during a fan-out, twice each; 5 permanent statuses.
    assert run.report["failed_attempts"] == 4 * 2 + 2 + 2 + 5
    assert run.report["estimated_calls"] == 1
    assert len(run.report["calls"]) == sum(len(entries) for entries in run.billed.values()) + 1 == 8 + 5 + 3 + 1
    estimate = charged[0]["cost_usd"]
    assert run.report["total_cost_usd"] == pytest.approx(float(run.billed_total) + estimate, abs=1e-9)


def test_cut_streams_and_unreadable_replies_are_charged_at_least_what_was_billed(run_inner: RunInner) -> None:
    run = run_inner(INCOMPLETE_SUITE)

    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert set(run.outcomes().values()) == {"passed"}, run.outcomes()
    problems = []
    # Streams whose start arrived are charged their reported input plus max_tokens of output; replies
    # whose usage never arrived are charged their worst case, which is more.
    start_seen = {
        "test_a_stream_cut_by_an_error_event": MAX_TOKENS,
        "test_a_stream_dropped_midway": MAX_TOKENS,
        "test_a_malformed_stream": MAX_TOKENS,
        "test_a_long_stream_abandoned_after_its_first_words": LONG,
    }
    usage_unreadable = {"test_a_malformed_reply", "test_a_reply_without_usage", "test_a_stream_without_usage"}
    for name in sorted({*start_seen, *usage_unreadable}):
        nodeid = f"test_suite.py::{name}"
        calls, billed = run.calls(nodeid), run.billed[nodeid]
        if len(calls) != 1 or len(billed) != 1:  # one attempt: none of these is retried
            problems.append(f"{name}: {len(calls)} call(s) reported, {len(billed)} billed; expected 1 and 1")
            continue
        (call,), (entry,) = calls, billed
        billed_cost = _price(entry["usage"], entry["model"])
        max_tokens = start_seen.get(name, MAX_TOKENS)
        promised = _price({**entry["usage"], "output_tokens": max_tokens}, entry["model"])
        charged = Decimal(str(call["cost_usd"]))
        if not call["estimated"] or call["retries"] != 0:
            problems.append(f"{name}: not marked estimated, or retried: {call}")
        if charged < billed_cost:
            problems.append(f"{name}: charged {charged} < billed {billed_cost} ({entry})")
        if name in start_seen and call["cost_usd"] != _json_number(promised):
            problems.append(f"{name}: charged {charged}, promised input + max_tokens = {promised}")
        if name in usage_unreadable and charged < promised:
            problems.append(f"{name}: charged {charged}, below even input + max_tokens = {promised}")
        if call["streamed"] != ("stream" in name):
            problems.append(f"{name}: streamed={call['streamed']}")
    # Three concurrent streams, one dropped: it alone is estimated, at input + max_tokens.
    name = "test_async_streams_one_of_which_is_dropped"
    reported, billed = run.calls(f"test_suite.py::{name}"), run.billed[f"test_suite.py::{name}"]
    cut = [e for e in billed if not e["complete"]]
    estimated = [c for c in reported if c["estimated"]]
    if len(reported) != 3 or len(billed) != 3 or len(cut) != 1 or len(estimated) != 1:
        problems.append(f"{name}: reported {reported}, billed {billed}")
    else:
        promised = _price({**cut[0]["usage"], "output_tokens": MAX_TOKENS}, cut[0]["model"])
        exact = sorted(_json_number(_price(e["usage"], e["model"])) for e in billed if e["complete"])
        if estimated[0]["cost_usd"] != _json_number(promised):
            problems.append(f"{name}: the dropped stream was charged {estimated[0]}, promised {promised}")
        if sorted(c["cost_usd"] for c in reported if not c["estimated"]) != exact:
            problems.append(f"{name}: complete streams charged {reported}, billed {billed}")

    # Closed early, but after every byte had arrived (complete) or not: charged at least what was billed,
    # exactly when the usage was complete, input + max_tokens when it was not.
    short = "test_suite.py::test_a_short_stream_closed_after_its_first_words"
    (call,), (entry,) = run.calls(short), run.billed[short]
    exact = _price(entry["usage"], entry["model"])
    promised = _price({**entry["usage"], "output_tokens": MAX_TOKENS}, entry["model"])
    if call["cost_usd"] != _json_number(promised if call["estimated"] else exact):
        problems.append(f"short stream closed early: {call} for billed {entry}")
    assert not problems, "\n".join(problems)

    assert run.report["failed_attempts"] == 0
    assert run.report["estimated_calls"] - call["estimated"] == len(start_seen) + len(usage_unreadable) + 1
    assert Decimal(str(run.report["total_cost_usd"])) >= run.billed_total


def test_a_timed_out_attempt_is_retried_and_the_report_covers_what_the_emulator_billed(run_inner: RunInner) -> None:
    run = run_inner(SLOW_SUITE)

    assert run.result.ret == pytest.ExitCode.OK, run.output
    nodeid = "test_suite.py::test_a_timed_out_attempt_is_retried"
    timed_out, answered = run.calls(nodeid)
    assert (timed_out["estimated"], timed_out["retries"]) == (True, 0)
    assert (answered["estimated"], answered["retries"]) == (False, 1)
    assert run.report["failed_attempts"] == 0
    billed = run.billed[nodeid]
    assert len(billed) == 2 and all(e["complete"] for e in billed)  # the API bills a timed-out attempt too
    # The attempt that timed out after sending is charged its worst case (estimated): never less than billed.
    assert Decimal(str(run.report["total_cost_usd"])) >= run.billed_total
    assert run.report["estimated_calls"] == 1


def test_the_session_budget_caps_what_the_emulator_bills_and_fails_the_run(run_inner: RunInner) -> None:
    run = run_inner(BUDGET_SUITE, f"--llm-budget={BUDGET}", "--tb=line")

    assert run.result.ret == pytest.ExitCode.TESTS_FAILED, run.output
    assert "LLM BUDGET EXCEEDED" in run.output
    assert run.report["budget_exceeded"] is True
    assert run.report["refused_calls"] > 0
    billed = run.billed_total
    # The suite wants 24 replies of about $0.015: several times the budget.
    assert billed <= BUDGET
    assert billed >= BUDGET / 2, "the budget should be spent, not refused from the first call"
    assert run.report["total_cost_usd"] == _json_number(billed)
    concurrent = run.billed["test_suite.py::test_a_burst_of_concurrent_questions"]
    assert 0 < len(concurrent) < 12  # the burst was admitted only as far as the budget allows


def test_a_report_path_given_on_the_command_line_is_relative_to_where_pytest_runs(
    pytester: pytest.Pytester,
) -> None:
    # As in the README's main job: `pytest examples/support_triage --llm-report=...` from the repo root, with
    # the example's own pytest.ini making it the rootdir. No LLM call: the report is written all the same.
    pytester.mkdir("example")
    (pytester.path / "example" / "pytest.ini").write_text("[pytest]\n")
    (pytester.path / "example" / "test_plain.py").write_text("def test_plain():\n    pass\n")

    result = pytester.runpytest("example", "-p", "no:asyncio", "--llm-report=costguard-report.json")

    result.assert_outcomes(passed=1)
    assert (pytester.path / "costguard-report.json").exists()
