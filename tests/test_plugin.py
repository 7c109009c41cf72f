"""The pytest plugin, driven as a user would: inner pytest runs (pytester) on suites using the real SDK."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from fakeapi import billed_cost

SUITE = """
import threading
import pytest
from fakeapi import FakeAPI

API = FakeAPI({usage!r}, log_path="billed.jsonl")

def ask(model="claude-sonnet-4-6", max_tokens=100, **kw):
    return API.client().messages.create(
        model=model, max_tokens=max_tokens, messages=[{{"role": "user", "content": "x" * 4000}}], **kw)
"""


def _report(pytester: pytest.Pytester, name: str = "r.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def _billed(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / "billed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _suite(pytester: pytest.Pytester, body: str, usage: dict | None = None) -> None:
    usage = usage or {"input_tokens": 1000, "output_tokens": 100}
    pytester.makepyfile(test_suite=SUITE.format(usage=usage) + body)


def test_a_suite_without_llm_calls_prints_no_cost_summary(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile("def test_plain(): assert 1")
    result = fake_pytester.runpytest("--llm-budget=1")
    result.assert_outcomes(passed=1)
    assert "pytest-costguard" not in result.stdout.str()
    assert "LLM cost" not in result.stdout.str()


def test_the_report_header_shows_budget_and_routing(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile("def test_plain(): pass")
    result = fake_pytester.runpytest("--llm-budget=2", "--llm-budget-per-test=0.1", "--llm-route=cheap")
    result.stdout.fnmatch_lines(
        ["costguard: budget $2.00, per test $0.10, route cheap -> claude-haiku-4-5, cache off"]
    )


def test_per_test_costs_add_up_to_the_total_and_to_what_the_api_billed(
    fake_pytester: pytest.Pytester,
) -> None:
    _suite(
        fake_pytester,
        """
def test_one(): ask()
def test_two(): ask(); ask(model="claude-haiku-4-5")
def test_none(): pass
""",
    )
    result = fake_pytester.runpytest("--llm-report=r.json")
    result.assert_outcomes(passed=3)
    report = _report(fake_pytester)
    billed = billed_cost(_billed(fake_pytester))
    assert len(report["calls"]) == 3
    assert Decimal(str(report["total_cost_usd"])) == billed
    per_test = {t["nodeid"]: t for t in report["tests"]}
    assert set(per_test) == {"test_suite.py::test_one", "test_suite.py::test_two", "test_suite.py::test_none"}
    assert per_test["test_suite.py::test_none"]["cost_usd"] == 0
    assert per_test["test_suite.py::test_two"]["calls"] == 2
    assert sum(Decimal(str(t["cost_usd"])) for t in report["tests"]) == billed
    # Sonnet 4.6 at $3/$15: 1000 in + 100 out = $0.0045; Haiku 4.5 at $1/$5 = $0.0015.
    assert per_test["test_suite.py::test_one"]["cost_usd"] == 0.0045
    assert per_test["test_suite.py::test_two"]["cost_usd"] == 0.006
    result.stdout.fnmatch_lines(
        ["*LLM cost (pytest-costguard)*", "*$0.006 * 2 * test_suite.py::test_two", "budget used: $0.0105*"]
    )


def test_the_session_budget_refuses_before_sending_and_fails_the_run(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
from pytest_costguard import BudgetExceededError

def test_spends():
    for _ in range(50):
        try:
            ask()
        except BudgetExceededError:
            pass  # the code under test swallows the refusal
""",
    )
    # Each call's worst case: ~4030 input bytes at $3/MTok + 100 output tokens at $15/MTok ~ $0.0136;
    # each call really costs $0.0045.
    result = fake_pytester.runpytest("--llm-budget=0.02", "--llm-report=r.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*LLM BUDGET EXCEEDED*refused by the session budget*"])
    report = _report(fake_pytester)
    billed = _billed(fake_pytester)
    assert report["budget_exceeded"] is True
    assert report["refused_calls"] == 50 - len(billed)
    assert len(json.loads(json.dumps(report["calls"]))) == len(billed)
    assert billed_cost(billed) <= Decimal("0.02")
    # Refusals start only when less than one call's worst case is left.
    assert billed_cost(billed) > Decimal("0.02") - Decimal("0.0137")


def test_a_per_test_budget_fails_only_that_test(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
@pytest.mark.llm_budget(0.005)
def test_capped():
    for _ in range(5):
        try:
            ask()
        except Exception:
            pass

def test_free():
    ask(); ask()
""",
    )
    result = fake_pytester.runpytest("--llm-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_capped*budget*"])
    report = _report(fake_pytester)
    assert report["budget_exceeded"] is False
    capped = next(t for t in report["tests"] if t["nodeid"].endswith("test_capped"))
    assert capped["outcome"] == "failed"
    assert Decimal(str(capped["cost_usd"])) <= Decimal("0.005")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_test_that_expects_a_refusal_handles_it_and_passes(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
from pytest_costguard import BudgetExceededError

@pytest.mark.llm_budget(0.001, expect_refusal=True)
def test_the_app_reports_a_refusal():
    with pytest.raises(BudgetExceededError):
        ask()

@pytest.mark.llm_budget(0.001, expect_refusal=True)
def test_an_unexpected_success_still_fails():
    ask(max_tokens=1)  # fits? no: the worst case of 4,000 bytes of input is above $0.001
""",
    )
    result = fake_pytester.runpytest("--llm-report=r.json")
    # The first handles its refusal; the second lets BudgetExceededError escape, which fails it as any error.
    result.assert_outcomes(passed=1, failed=1)
    assert _billed(fake_pytester) == []
    assert _report(fake_pytester)["refused_calls"] == 2


def test_the_closest_marker_wins_over_a_module_or_class_marker(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
from decimal import Decimal

pytestmark = [pytest.mark.llm_budget(1.0), pytest.mark.llm_model("claude-opus-4-7")]

class TestGroup:
    @pytest.mark.llm_budget(0.005)
    @pytest.mark.llm_model("claude-haiku-4-5")
    def test_capped(self, llm_cost):
        ask()
        assert llm_cost.limit == Decimal("0.005")
        assert {r.model for r in llm_cost.records} == {"claude-haiku-4-5"}

def test_module_wide(llm_cost):
    for _ in range(5):
        ask()
    assert llm_cost.limit == Decimal("1.0")
    assert {r.model for r in llm_cost.records} == {"claude-opus-4-7"}
""",
    )
    fake_pytester.runpytest().assert_outcomes(passed=2)


def test_the_default_per_test_budget_comes_from_the_ini_file(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeini("[pytest]\nllm_budget_per_test = 0.004\n")
    _suite(fake_pytester, "def test_two_calls(): ask(); ask()")
    result = fake_pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*LLM call not sent: worst case $*, but only $0.004 of this test's budget ($0.004) is left*"]
    )


@pytest.mark.parametrize("value", ["abc", "-1", "0x", "nan", "inf", "1e999999999999"])
def test_a_bad_budget_is_a_usage_error_naming_the_option(fake_pytester: pytest.Pytester, value: str) -> None:
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest_subprocess(f"--llm-budget={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--llm-budget: *{value}*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_bad_ini_value_names_the_ini_setting(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeini("[pytest]\nllm_budget = lots\n")
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llm_budget in tox.ini: 'lots' is not a dollar amount*"])


def test_an_unknown_route_policy_is_a_usage_error(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest_subprocess("--llm-route=fastest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-route: 'fastest' is not one of off, cheap, auto*"])


def test_an_unpriced_cheap_model_is_a_usage_error(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile("def test_x(): pass")
    result = fake_pytester.runpytest_subprocess("--llm-route=cheap", "--llm-cheap-model=claude-nonesuch-9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llm-cheap-model*claude-nonesuch-9*"])


def test_a_configured_price_makes_an_unknown_model_usable(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeini("[pytest]\nllm_prices =\n    claude-mythos-5 = input=20 output=100\n")
    _suite(fake_pytester, "def test_x(): ask(model='claude-mythos-5')")
    result = fake_pytester.runpytest("--llm-report=r.json")
    result.assert_outcomes(passed=1)
    # 1000 input at $20/MTok + 100 output at $100/MTok = $0.03
    assert _report(fake_pytester)["total_cost_usd"] == 0.03


def test_under_a_budget_an_unknown_model_without_a_price_is_refused_before_sending(
    fake_pytester: pytest.Pytester,
) -> None:
    # Without a budget such a call is sent and recorded unpriced (tests/test_hard_cap.py).
    _suite(
        fake_pytester,
        """
def test_x():
    with pytest.raises(Exception, match="no price known for model 'claude-nonesuch-9'"):
        ask(model="claude-nonesuch-9")
    assert API.requests == []
""",
    )
    fake_pytester.runpytest("--llm-budget=1").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "llm_budget('lots')",
            "@pytest.mark.llm_budget on test_suite.py::test_x: 'lots' is not a dollar amount*",
        ),
        ("llm_budget(1, 2)", "@pytest.mark.llm_budget on test_suite.py::test_x: takes the budget in USD*"),
        ("llm_budget(1, expect_refusal='yes')", "*llm_budget on test_suite.py::test_x: takes the budget in USD*"),
        ("llm_model(3)", "@pytest.mark.llm_model on test_suite.py::test_x: takes one argument*"),
        ("llm_model('claude-nonesuch-9')", "*no price known for model 'claude-nonesuch-9'*"),
    ],
)
def test_a_bad_marker_argument_is_a_usage_error(
    fake_pytester: pytest.Pytester, marker: str, message: str
) -> None:
    fake_pytester.makepyfile(test_suite=f"import pytest\n@pytest.mark.{marker}\ndef test_x(): pass\n")
    result = fake_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])
    assert "Traceback" not in result.stderr.str()


def test_cheap_routing_rewrites_only_the_model_and_reports_the_saving(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
def test_routed():
    ask(model="claude-opus-4-7", stop_sequences=["END"])
    sent = API.requests[0]
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["stop_sequences"] == ["END"] and sent["max_tokens"] == 100

@pytest.mark.llm_model("claude-sonnet-4-6")
def test_pinned():
    ask(model="claude-opus-4-7")
    assert API.requests[-1]["model"] == "claude-sonnet-4-6"
""",
    )
    result = fake_pytester.runpytest("--llm-route=cheap", "--llm-report=r.json")
    result.assert_outcomes(passed=2)
    calls = _report(fake_pytester)["calls"]
    assert [(c["requested_model"], c["model"]) for c in calls] == [
        ("claude-opus-4-7", "claude-haiku-4-5"),
        ("claude-opus-4-7", "claude-sonnet-4-6"),
    ]
    savings = _report(fake_pytester)["savings"]
    # Opus 4.7 ($5/$25) vs Haiku 4.5 ($1/$5) on 1000 in + 100 out: 0.0075 - 0.0015; vs Sonnet: 0.0075 - 0.0045.
    assert savings["routing_usd"] == pytest.approx(0.006 + 0.003)


def test_the_route_map_applies_even_with_routing_off(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeini("[pytest]\nllm_route_map =\n    claude-opus-4-7 = claude-sonnet-4-6\n")
    _suite(
        fake_pytester,
        "def test_x():\n    ask(model='claude-opus-4-7-20260101')\n"
        "    assert API.requests[0]['model'] == 'claude-sonnet-4-6'\n",
    )
    fake_pytester.runpytest().assert_outcomes(passed=1)


def test_streams_are_metered_whichever_api_the_code_uses(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
def test_create_stream():
    stream = API.client().messages.create(
        model="claude-haiku-4-5", max_tokens=100, stream=True, messages=[{"role": "user", "content": "hi"}])
    events = [e.type for e in stream]
    assert events[-1] == "message_stop"

def test_stream_helper():
    with API.client().messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        assert s.get_final_message().usage.output_tokens == 100
""",
    )
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=2)
    report = _report(fake_pytester)
    assert [c["streamed"] for c in report["calls"]] == [True, True]
    assert [c["estimated"] for c in report["calls"]] == [False, False]
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(_billed(fake_pytester))


def test_a_cut_stream_is_charged_its_output_cap_and_marked_estimated(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
def test_cut():
    API.cut_streams = True
    stream = API.client().messages.create(
        model="claude-haiku-4-5", max_tokens=300, stream=True, messages=[{"role": "user", "content": "hi"}])
    list(stream)
""",
    )
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(fake_pytester)["calls"]
    assert call["estimated"] is True
    assert call["output_tokens"] == 300  # never less than what may have been billed
    assert Decimal(str(call["cost_usd"])) >= billed_cost(_billed(fake_pytester))


def test_failed_attempts_are_not_charged_and_retries_are_counted(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
def test_retried():
    API.errors[:] = [529, 429]
    ask()
    assert len(API.requests) == 3

def test_not_retried():
    API.errors[:] = [400]
    with pytest.raises(Exception):
        ask()
""",
    )
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=2)
    report = _report(fake_pytester)
    assert [c["retries"] for c in report["calls"]] == [2]
    assert report["failed_attempts"] == 3
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(_billed(fake_pytester))


def test_async_raw_and_import_time_clients_are_all_seen(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(
        app="""
from fakeapi import FakeAPI
API = FakeAPI({"input_tokens": 1000, "output_tokens": 100}, log_path="billed.jsonl")
CLIENT = API.client()  # built when the app module is imported, during collection

def summarize(text):
    return CLIENT.messages.create(model="claude-haiku-4-5", max_tokens=50,
                                  messages=[{"role": "user", "content": text}])
""",
        test_suite="""
import asyncio
from app import API, summarize

def test_module_level_client():
    summarize("x")

def test_raw_response():
    raw = API.client().messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert raw.parse().usage.input_tokens > 0

def test_async_fan_out():
    async def main():
        client = API.async_client()
        await asyncio.gather(*[client.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": str(i)}])
            for i in range(5)])
    asyncio.run(main())
""",
    )
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=3)
    report = _report(fake_pytester)
    assert {t["nodeid"].split("::")[1]: t["calls"] for t in report["tests"]} == {
        "test_module_level_client": 1,
        "test_raw_response": 1,
        "test_async_fan_out": 5,
    }
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(_billed(fake_pytester))


def test_calls_outside_tests_go_to_the_session_line(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeconftest(
        """
from fakeapi import FakeAPI
API = FakeAPI({"input_tokens": 1000, "output_tokens": 100}, log_path="billed.jsonl")

def pytest_collection_finish(session):
    API.client().messages.create(model="claude-haiku-4-5", max_tokens=50,
                                 messages=[{"role": "user", "content": "warm-up"}])
"""
    )
    fake_pytester.makepyfile("def test_x(): pass")
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=1)
    report = _report(fake_pytester)
    assert report["session"]["calls"] == 1
    assert report["tests"][0]["calls"] == 0
    assert report["total_cost_usd"] == report["session"]["cost_usd"] > 0
    assert Decimal(str(report["total_cost_usd"])) == billed_cost(_billed(fake_pytester))


def test_fixtures_show_the_tests_and_the_sessions_spend(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
from decimal import Decimal

@pytest.mark.llm_budget("0.02")
def test_views(llm_cost, llm_budget):
    assert llm_cost.calls == 0 and llm_cost.total == 0
    assert llm_cost.limit == llm_cost.remaining == Decimal("0.02")  # before the first call opens its ledger
    ask()
    assert llm_cost.calls == 1
    assert llm_cost.total == Decimal("0.0045")
    assert llm_cost.remaining == Decimal("0.0155")
    assert llm_budget.limit == Decimal("1")
    assert llm_budget.spent == Decimal("0.0045")
    assert llm_budget.remaining == Decimal("0.9955")
    assert llm_cost.records[0].model == "claude-sonnet-4-6"
""",
    )
    fake_pytester.runpytest("--llm-budget=1").assert_outcomes(passed=1)


def test_markdown_report_and_github_step_summary(
    fake_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = fake_pytester.path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    _suite(fake_pytester, "def test_x(): ask()")
    fake_pytester.runpytest("--llm-report=r.md", "--llm-report=r.json", "--llm-budget=1").assert_outcomes(
        passed=1
    )
    markdown = (fake_pytester.path / "r.md").read_text()
    assert "| `test_suite.py::test_x` | $0.0045 | 1 | 1,000 | 0 | 0 | 100 |" in markdown
    assert "$0.0045 of $1.00, 0.5%" in markdown
    assert summary.read_text() == "# earlier step\n" + markdown


def test_junit_xml_carries_each_tests_cost(fake_pytester: pytest.Pytester) -> None:
    _suite(fake_pytester, "def test_x(): ask()\ndef test_no_call(): pass")
    fake_pytester.runpytest("--junitxml=j.xml", "--llm-meter").assert_outcomes(passed=2)
    xml = (fake_pytester.path / "j.xml").read_text()
    assert '<property name="llm_cost_usd" value="0.0045"' in xml
    assert '<property name="llm_calls" value="1"' in xml
    assert xml.count("llm_calls") == 1  # a test without LLM calls carries no cost properties


def test_api_keys_never_reach_reports_or_output(fake_pytester: pytest.Pytester) -> None:
    _suite(fake_pytester, "def test_x(): ask()")
    result = fake_pytester.runpytest("--llm-report=r.json", "--llm-report=r.md", "-v")
    text = (
        result.stdout.str()
        + (fake_pytester.path / "r.json").read_text()
        + (fake_pytester.path / "r.md").read_text()
    )
    assert "sk-ant-test-secret" not in text


def test_the_plugin_can_be_disabled(fake_pytester: pytest.Pytester) -> None:
    _suite(fake_pytester, "def test_x(): ask()")
    result = fake_pytester.runpytest_subprocess("-p", "no:costguard", "--llm-report=r.json")
    # Without the plugin its options do not exist.
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result = fake_pytester.runpytest_subprocess("-p", "no:costguard")
    result.assert_outcomes(passed=1)
    assert "costguard" not in result.stdout.str()


def test_an_idle_suite_does_not_import_anthropic_or_genai_prices(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makepyfile(
        """
import sys
def test_idle():
    assert "anthropic" not in sys.modules
    assert "genai_prices" not in sys.modules
"""
    )
    fake_pytester.runpytest_subprocess("--llm-budget=1", "-p", "no:asyncio").assert_outcomes(passed=1)


def test_an_idle_suite_without_routing_or_prices_loads_only_the_plugins_start_up_modules(
    pytester: pytest.Pytester,
) -> None:
    # Defining a dataclass costs about 2 ms here: the pricing, routing and guard modules (a dozen of them) are
    # loaded on the first LLM call, or at start-up only when routing or prices are configured. Metering on, the
    # thread hooks and the child-process session (two small modules) are installed at start-up.
    pytester.makepyfile(
        """
import sys
def test_idle():
    loaded = sorted(m for m in sys.modules if m.startswith("pytest_costguard."))
    assert loaded == [
        "pytest_costguard._compat",
        "pytest_costguard.domain",
        "pytest_costguard.domain.money",
        "pytest_costguard.metering",
        "pytest_costguard.metering.children",
        "pytest_costguard.metering.run",
        "pytest_costguard.metering.scope",
        "pytest_costguard.metering.threads",
        "pytest_costguard.plugin",
        "pytest_costguard.plugin.fixtures",
        "pytest_costguard.plugin.hookspecs",
        "pytest_costguard.plugin.marks",
        "pytest_costguard.plugin.options",
        "pytest_costguard.plugin.replay",
        "pytest_costguard.plugin.settings",
        "pytest_costguard.plugin.xdist",
        "pytest_costguard.providers",
        "pytest_costguard.providers._common",
        "pytest_costguard.providers.anthropic",
        "pytest_costguard.providers.anthropic.patch",
        "pytest_costguard.providers.openai",
        "pytest_costguard.providers.openai.patch",
    ], loaded
"""
    )
    pytester.runpytest_subprocess("--llm-budget=1", "-p", "no:asyncio").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nllm_route = cheap\n")
    result = pytester.runpytest_subprocess("-p", "no:asyncio")
    result.assert_outcomes(failed=1)  # configured routing is validated at start-up, so it is loaded then
    result.stdout.fnmatch_lines(["*pytest_costguard.core.routing*"])


def test_the_help_shows_the_option_group_as_in_the_snapshot(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    text = pytester.runpytest_subprocess("--help").stdout.str()
    start = text.index("LLM cost budget and reports (pytest-costguard):")
    section = text[start : text.index("\n\n", start)]
    snapshot = Path(__file__).parent / "snapshots" / "help.txt"
    assert section + "\n" == snapshot.read_text(), (
        "regenerate tests/snapshots/help.txt if the change is wanted"
    )
    for ini in (
        "llm_budget (string)",
        "llm_route_map (linelist)",
        "llm_prices (linelist)",
        "llm_report (linelist)",
    ):
        assert ini in text, ini


def test_auto_cache_marks_a_recurring_long_system_prompt_only(fake_pytester: pytest.Pytester) -> None:
    _suite(
        fake_pytester,
        """
LONG = "You triage support tickets. " * 800

def call(system):
    API.client().messages.create(model="claude-haiku-4-5", max_tokens=10, system=system,
                                 messages=[{"role": "user", "content": "hi"}])

def test_cache():
    call("short prompt")
    call("short prompt")
    call(LONG)
    call(LONG)
    call(LONG)
    systems = [r.get("system") for r in API.requests]
    assert systems[:2] == ["short prompt", "short prompt"]
    assert systems[2] == LONG  # seen once so far: never made more expensive by caching
    assert systems[3][0]["cache_control"] == {"type": "ephemeral"}
    assert systems[4][0]["cache_control"] == {"type": "ephemeral"}
""",
    )
    fake_pytester.runpytest("--llm-cache=auto").assert_outcomes(passed=1)


def test_the_pipeline_fixture_runs_process_through_the_metered_client(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeconftest(
        """
import pytest
from fakeapi import FakeAPI

API = FakeAPI({"input_tokens": 30, "output_tokens": 10}, log_path="billed.jsonl")

@pytest.fixture
def llm_client():
    return API.client()
"""
    )
    fake_pytester.makepyfile(
        test_suite="""
def test_pipeline(llm_pipeline, llm_cost):
    result = llm_pipeline.process("classify this ticket")
    assert result.text == "ok"
    assert llm_pipeline.tracker.total_cost == llm_cost.total == result.record.cost_usd
    assert result.record.model == "claude-haiku-4-5"  # short text: routed to the cheap model
"""
    )
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=1)
    assert _report(fake_pytester)["calls"][0]["nodeid"] == "test_suite.py::test_pipeline"


def test_an_unwritable_report_path_is_a_clear_error_not_a_traceback(fake_pytester: pytest.Pytester) -> None:
    _suite(fake_pytester, "def test_x(): ask()")
    (fake_pytester.path / "blocked").write_text("a file where a folder should be")
    result = fake_pytester.runpytest("--llm-report=blocked/r.json", "--llm-report=ok.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*pytest-costguard: --llm-report: cannot write *blocked/r.json*"])
    assert "Traceback" not in result.stdout.str()
    # Nothing already recorded is lost: the other report is written whole.
    assert _report(fake_pytester, "ok.json")["calls"][0]["nodeid"] == "test_suite.py::test_x"
