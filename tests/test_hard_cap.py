"""The hard cap fails closed (issue 11): overspend fails the run, budget values are strict, unknown prices never
break a run without a budget."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pytest_costguard.core.budget import find_overspend
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.reports.model import budget_line, build_report, render_markdown, terminal_lines, verdict_lines

SUITE = """
import pytest
from fakeapi import FakeAPI

API = FakeAPI({usage!r}, log_path="billed.jsonl")

def ask(model="claude-haiku-4-5", max_tokens=100, **kw):
    return API.client().messages.create(
        model=model, max_tokens=max_tokens, messages=[{{"role": "user", "content": "x" * 4000}}], **kw)
"""
GATEWAY_USAGE = {"input_tokens": 3000, "output_tokens": 100}


def _suite(pytester: pytest.Pytester, body: str, usage: dict | None = None) -> None:
    pytester.makepyfile(test_suite=SUITE.format(usage=usage or GATEWAY_USAGE) + body)


def _report(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "r.json").read_text())


def _record(cost: str, tag: str | None = "t::a", reserved: str | None = None, **kw: object) -> CostRecord:
    return CostRecord(
        kw.pop("model", "claude-haiku-4-5"),  # type: ignore[arg-type]
        10,
        10,
        Decimal(cost),
        tag=tag,
        reserved_usd=None if reserved is None else Decimal(reserved),
        **kw,  # type: ignore[arg-type]
    )


# -- 1. any overspend fails the run ------------------------------------------------------------------------------


def test_a_gateway_answering_with_a_pricier_model_overspends_and_fails_the_run(
    fake_pytester: pytest.Pytester,
) -> None:
    _suite(
        fake_pytester,
        """
API.answer_model = "claude-opus-4-7"

def test_x():
    ask()  # reserved at haiku's worst case, billed at opus prices
""",
    )
    result = fake_pytester.runpytest("--llm-budget=0.01", "--llm-report=r.json")
    # The test itself has no budget of its own: it passes, the run fails.
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # Opus 4.7 at $5/$25: 3000 in + 100 out = $0.0175, $0.0075 over the $0.01 budget.
    result.stdout.fnmatch_lines(
        ["*LLM BUDGET EXCEEDED: overspent $0.0075: LLM session budget overspent: $0.0175 settled of $0.01*"
         "in test_suite.py::test_x was answered by claude-opus-4-7 (asked for claude-haiku-4-5)*"]
    )
    assert "refused by the session budget" not in result.stdout.str()
    report = _report(fake_pytester)
    assert report["budget_exceeded"] is True
    assert report["refused_calls"] == 0
    assert report["overspent_usd"] == 0.0075
    over = report["overspend"]
    assert over["scope"] == "session"
    assert over["nodeid"] == "test_suite.py::test_x"
    assert over["over_usd"] == 0.0075
    assert over["model"] == "claude-opus-4-7"
    assert over["requested_model"] == "claude-haiku-4-5"
    assert report["calls"][over["call_index"]]["cost_usd"] == 0.0175
    assert report["overspends"] == [over]


def test_a_test_whose_settled_spend_exceeds_its_own_budget_fails(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
API.answer_model = "claude-opus-4-7"

@pytest.mark.llm_budget(0.01)
def test_capped():
    ask()

def test_free():
    ask()
""",
    )
    result = fake_pytester.runpytest("--llm-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "pytest-costguard: LLM test test_suite.py::test_capped budget overspent: "
            "$0.0175 settled of $0.01, $0.0075 over*"
        ]
    )
    report = _report(fake_pytester)
    assert report["budget_exceeded"] is True
    assert report["overspent_usd"] == 0.0075
    assert [o["scope"] for o in report["overspends"]] == ["test test_suite.py::test_capped"]
    assert report["overspend"]["nodeid"] == "test_suite.py::test_capped"
    outcomes = {t["nodeid"]: t["outcome"] for t in report["tests"]}
    assert outcomes == {"test_suite.py::test_capped": "failed", "test_suite.py::test_free": "passed"}


def test_a_fixture_that_overspends_in_teardown_errors_the_test(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
API.answer_model = "claude-opus-4-7"

@pytest.fixture
def late_call():
    yield
    ask()

@pytest.mark.llm_budget(0.01)
def test_capped(late_call):
    pass
""",
    )
    result = fake_pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*budget overspent*"])


def test_a_run_within_its_budgets_does_not_overspend(fake_pytester: pytest.Pytester) -> None:
    _suite(fake_pytester, "@pytest.mark.llm_budget(0.01)\ndef test_x(): ask()\n")
    result = fake_pytester.runpytest("--llm-budget=0.01", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    report = _report(fake_pytester)
    assert report["budget_exceeded"] is False
    assert report["overspent_usd"] == 0
    assert report["overspend"] is None
    assert report["overspends"] == []
    assert "LLM BUDGET EXCEEDED" not in result.stdout.str()


def test_find_overspend_names_the_call_that_first_went_over() -> None:
    records = [_record("0.004"), _record("0.004"), _record("0.004", model="claude-opus-4-7"), _record("0.001")]
    over = find_overspend(records, Decimal("0.01"), "session")
    assert over is not None
    assert (over.call_index, over.spent, over.over) == (2, Decimal("0.013"), Decimal("0.003"))
    assert over.call.model == "claude-opus-4-7"
    assert find_overspend(records, Decimal("0.013"), "session") is None
    assert find_overspend(records, None, "session") is None


def test_the_report_lists_session_and_test_overspends_and_says_which_happened() -> None:
    from pytest_costguard.domain.records import Refusal

    records = [_record("0.004", tag="t::a"), _record("0.009", tag="t::b", reserved="0.002")]
    report = build_report(
        records,
        {"t::a": "passed", "t::b": "failed"},
        budget=Decimal("0.01"),
        test_budgets={"t::a": Decimal("0.01"), "t::b": Decimal("0.005")},
        refusals=[Refusal("t::a", "session", Decimal("0.02"), "refused")],
    )
    assert report["budget_exceeded"] is True
    assert [(o["scope"], o["call_index"], o["over_usd"]) for o in report["overspends"]] == [
        ("session", 1, 0.003),
        ("test t::b", 1, 0.004),
    ]
    assert report["overspent_usd"] == 0.004  # the larger of the session's and the tests' (summed) excess
    lines = verdict_lines(report)
    assert lines[0].startswith("LLM BUDGET EXCEEDED: 1 call refused by the session budget")
    assert lines[1].startswith("LLM BUDGET EXCEEDED: overspent $0.003: LLM session budget overspent")
    assert lines[2].startswith("LLM BUDGET EXCEEDED: overspent $0.004: LLM test t::b budget overspent")
    assert "**LLM BUDGET EXCEEDED: overspent $0.004" in render_markdown(report)


def test_costguard_merge_fails_on_a_shard_that_overspent(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pytest_costguard.cli import main
    from pytest_costguard.reports.model import write_report

    over = build_report([_record("0.02")], {"t::a": "passed"}, budget=Decimal("0.01"))
    within = build_report([_record("0.001", tag="t::b")], {"t::b": "passed"}, budget=Decimal("0.01"))
    write_report(over, tmp_path / "a.json")
    write_report(within, tmp_path / "b.json")
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "m.json")]) == 1
    out = capsys.readouterr().out
    assert f"LLM BUDGET EXCEEDED: {tmp_path / 'a.json'}: its budget was exceeded (overspent $0.01)" in out
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["overspent_usd"] == 0.01
    assert merged["overspend"]["source"] == str(tmp_path / "a.json")


def test_test_budgets_travel_with_a_workers_output() -> None:
    from pytest_costguard.metering.guard import CostGuard
    from pytest_costguard.metering.run import CostRun

    worker = CostRun(CostGuard)
    worker.set_test_budget("t::a", Decimal("0.01"))
    worker.set_test_budget("t::b", None)
    controller = CostRun(CostGuard)
    controller.merge(json.loads(json.dumps(worker.output())))
    assert controller.test_budgets == {"t::a": Decimal("0.01")}


# -- 2. a budget of zero is a budget -----------------------------------------------------------------------------


def test_a_zero_budget_shows_as_zero_dollars_not_as_no_budget() -> None:
    report = build_report([], {}, budget=Decimal(0))
    assert budget_line(report) == "$0.00 of $0.00"
    assert "budget used: $0.00 of $0.00" in terminal_lines(report)
    assert budget_line(build_report([], {})) == "$0.00 (no budget)"


# -- 2. budget values fail closed --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--llm-budget="], "", "--llm-budget: the value is empty; give a dollar amount such as 2.00"),
        # An empty CLI value (`--llm-budget=$UNSET`) is not "no value": it never falls back to the ini's budget.
        (["--llm-budget="], "llm_budget = 5", "--llm-budget: the value is empty*"),
        (["--llm-budget=2,00"], "", "--llm-budget: '2,00' has a comma; use a dot: 2.00"),
        (["--llm-budget=1e-99999999"], "", "--llm-budget: '1e-99999999' is not a dollar amount*"),
        (["--llm-budget=\uff12"], "", "--llm-budget: '\uff12' is not a dollar amount*"),
        (["--llm-budget=0.0000000000001"], "", "--llm-budget: '0.0000000000001' is finer than a picodollar*"),
        ([], "llm_budget =", "llm_budget in tox.ini: the value is empty*"),
        (["--llm-budget-per-test="], "", "--llm-budget-per-test: the value is empty*"),
        ([], "llm_budget_per_test =", "llm_budget_per_test in tox.ini: the value is empty*"),
        ([], "llm_budget_per_test = 0,05", "llm_budget_per_test in tox.ini: '0,05' has a comma; use a dot: 0.05"),
        (["--llm-baseline-floor="], "", "--llm-baseline-floor: the value is empty*"),
        ([], "llm_baseline_floor =", "llm_baseline_floor in tox.ini: the value is empty*"),
        (["--llm-baseline-fail="], "", "--llm-baseline-fail: '' is not a percentage*"),
        ([], "llm_baseline_fail =", "llm_baseline_fail in tox.ini: '' is not a percentage*"),
        (["--llm-baseline-fail=1,5"], "", "--llm-baseline-fail: '1,5' is not a percentage*"),
        ([], "llm_prices =\n    claude-x = input= output=3",
         "llm_prices in tox.ini line 1 input: the value is empty*"),
        ([], "llm_prices =\n    claude-x = input=3 output=1,5",
         "llm_prices in tox.ini line 1 output: '1,5' has a comma; use a dot: 1.5"),
    ],
)
def test_an_empty_or_malformed_money_value_is_a_usage_error_naming_the_option(
    fake_pytester: pytest.Pytester, args: list[str], ini: str, message: str
) -> None:
    if ini:
        fake_pytester.makeini(f"[pytest]\n{ini}\n")
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_an_empty_marker_budget_is_a_usage_error(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(test_suite="import pytest\n@pytest.mark.llm_budget('')\ndef test_x(): pass\n")
    result = fake_pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*@pytest.mark.llm_budget on test_suite.py::test_x: the value is empty*"])


def test_a_zero_budget_is_a_budget_in_the_header_and_refuses_every_call(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
from pytest_costguard import BudgetExceededError

def test_x():
    with pytest.raises(BudgetExceededError):
        ask()
    assert API.requests == []
""",
    )
    result = fake_pytester.runpytest("--llm-budget=0", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["costguard: budget $0.00, *", "budget used: $0.00 of $0.00"])
    assert _report(fake_pytester)["budget_usd"] == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "--budget: the value is empty*"),
        ("2,00", "--budget: '2,00' has a comma; use a dot: 2.00"),
        ("1e-99999999", "--budget: '1e-99999999' is not a dollar amount*"),
    ],
)
def test_costguard_merge_refuses_a_malformed_budget(tmp_path, capsys, value: str, message: str) -> None:  # type: ignore[no-untyped-def]
    import fnmatch

    from pytest_costguard.cli import main
    from pytest_costguard.reports.model import write_report

    write_report(build_report([], {}), tmp_path / "a.json")
    assert main(["merge", str(tmp_path / "a.json"), f"--budget={value}"]) == 2
    err = capsys.readouterr().err
    assert fnmatch.fnmatch(err.strip(), f"costguard: error: {message}"), err


# -- 3. without a budget, an unknown price never breaks a test ---------------------------------------------------


def test_without_a_budget_a_call_to_an_unknown_model_is_sent_and_recorded_unpriced(
    fake_pytester: pytest.Pytester,
) -> None:
    _suite(
        fake_pytester,
        """
def test_x():
    ask(model="claude-nonesuch-9")
    ask()
    assert len(API.requests) == 2
""",
    )
    result = fake_pytester.runpytest("--llm-report=r.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["WARNING: 1 call answered by a model with no known price (claude-nonesuch-9) was sent*llm_prices"]
    )
    report = _report(fake_pytester)
    assert report["unpriced_calls"] == 1
    unpriced = [c for c in report["calls"] if c["unpriced"]]
    assert [(c["model"], c["cost_usd"], c["input_tokens"]) for c in unpriced] == [("claude-nonesuch-9", 0, 3000)]
    # Haiku 4.5 at $1/$5: 3000 in + 100 out = $0.0035, priced as usual beside it.
    assert report["total_cost_usd"] == 0.0035


def test_without_a_budget_a_response_naming_an_unknown_model_is_flagged_unpriced(
    fake_pytester: pytest.Pytester,
) -> None:
    _suite(fake_pytester, "API.answer_model = 'claude-nonesuch-9'\ndef test_x(): ask()\n")
    result = fake_pytester.runpytest("--llm-report=r.json")
    result.assert_outcomes(passed=1)
    report = _report(fake_pytester)
    assert report["unpriced_calls"] == 1
    # The admitted model's price stands in for the unknown one's.
    assert [(c["model"], c["unpriced"], c["cost_usd"]) for c in report["calls"]] == [
        ("claude-nonesuch-9", True, 0.0035)
    ]


@pytest.mark.parametrize("budget", [["--llm-budget=1"], ["--llm-budget-per-test=1"]])
def test_with_a_budget_a_call_to_an_unknown_model_is_refused_before_sending(
    fake_pytester: pytest.Pytester, budget: list[str]
) -> None:
    _suite(
        fake_pytester,
        """
def test_x():
    with pytest.raises(Exception, match="no price known for model 'claude-nonesuch-9'.*llm_prices"):
        ask(model="claude-nonesuch-9")
    assert API.requests == []
""",
    )
    fake_pytester.runpytest(*budget).assert_outcomes(passed=1)


def test_unpriced_records_keep_their_flag_in_the_sqlite_ledger_and_over_the_xdist_wire(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pytest_costguard.domain.records import record_from_dict, record_to_dict
    from pytest_costguard.metering.sqlite_ledger import SqliteLedger, read_ledger

    record = _record("0", unpriced=True)
    assert record_from_dict(json.loads(json.dumps(record_to_dict(record)))).unpriced is True
    ledger = SqliteLedger(tmp_path / "l.db", None, create=True)
    ledger.settle(ledger.reserve(Decimal(0)), record)
    ledger.settle(ledger.reserve(Decimal(0)), _record("0.5"))
    ledger.close()
    assert [r.unpriced for r in read_ledger(tmp_path / "l.db").records] == [True, False]


def test_a_ledger_of_an_earlier_release_without_the_unpriced_column_is_read_and_joined(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from pytest_costguard.metering.sqlite_ledger import SqliteLedger, read_ledger

    path = tmp_path / "old.db"
    ledger = SqliteLedger(path, Decimal(1), create=True)
    ledger.settle(ledger.reserve(Decimal("0.1")), _record("0.1"))
    ledger.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE records DROP COLUMN unpriced")  # what the release before this one wrote
    conn.commit()
    conn.close()
    assert [r.unpriced for r in read_ledger(path).records] == [False]
    joined = SqliteLedger(path, Decimal(1), create=False)
    joined.settle(joined.reserve(Decimal("0.1")), _record("0", unpriced=True))
    joined.close()
    assert [(r.cost_usd, r.unpriced) for r in read_ledger(path).records] == [(Decimal("0.1"), False), (0, True)]


# -- 6. Message Batches under the budget -------------------------------------------------------------------------

BATCH_SUITE = """
def batch(n, model="claude-sonnet-4-6", beta=False):
    client = API.client()
    batches = client.beta.messages.batches if beta else client.messages.batches
    return batches.create(requests=[
        {"custom_id": f"r{i}", "params": {"model": model, "max_tokens": 100,
                                          "messages": [{"role": "user", "content": "x" * 400}]}}
        for i in range(n)
    ])
"""


@pytest.mark.parametrize("beta", [False, True])
def test_a_batch_whose_worst_case_does_not_fit_is_refused_whole_before_sending(
    fake_pytester: pytest.Pytester, beta: bool
) -> None:
    _suite(
        fake_pytester,
        BATCH_SUITE
        + f"""
from pytest_costguard import BudgetExceededError

def test_x():
    with pytest.raises(BudgetExceededError, match="a Message Batch of 50 request"):
        batch(50, beta={beta})
    assert API.requests == []
""",
    )
    result = fake_pytester.runpytest("--llm-budget=0.001")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*LLM BUDGET EXCEEDED: 1 call refused by the session budget*"])


def test_a_batch_that_fits_is_charged_its_worst_case_at_batch_prices_marked_estimated(
    fake_pytester: pytest.Pytester,
) -> None:
    _suite(fake_pytester, BATCH_SUITE + "\ndef test_x():\n    assert batch(3).id == 'msgbatch_fake'\n")
    result = fake_pytester.runpytest("--llm-budget=1", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    report = _report(fake_pytester)
    [call] = report["calls"]
    params = {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [{"role": "user", "content": "x" * 400}]}
    from pytest_costguard.core.budget import worst_case_cost

    # Batch prices are half the standard ones: three requests at half their standard worst case each.
    assert Decimal(str(call["cost_usd"])) == 3 * worst_case_cost(params) / 2
    assert (call["model"], call["estimated"], call["unpriced"], call["nodeid"]) == (
        "claude-sonnet-4-6", True, False, "test_suite.py::test_x"
    )
    assert report["estimated_calls"] == 1
