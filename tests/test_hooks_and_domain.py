"""The extension hooks, the one model-name rule, the pipeline metered once, and names users import."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pytest_costguard.core.caching import DEFAULT_MINIMUMS
from pytest_costguard.core.pricing import PriceBook, PriceOverride
from pytest_costguard.core.routing import RoutePolicy
from pytest_costguard.domain.models import canonical_model, lookup_model

BEDROCK = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.mark.parametrize(
    "name",
    [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5@20250929",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        BEDROCK,
        f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{BEDROCK}",
        "claude-sonnet-4.5",
    ],
)
def test_every_provider_name_of_a_model_reduces_to_its_id(name: str) -> None:
    assert canonical_model(name) == "claude-sonnet-4-5"


def test_prices_routes_and_cache_minimums_find_a_model_by_the_same_rule() -> None:
    override = PriceOverride(input=Decimal(7), output=Decimal(9))
    book = PriceBook(overrides={"claude-sonnet-4-5": override})
    assert book.rates(BEDROCK).input.base == Decimal(7)
    policy = RoutePolicy(route_map={"claude-sonnet-4-5": "claude-haiku-4-5"})
    assert policy.route(BEDROCK, {"messages": []}).model == "claude-haiku-4-5"
    assert DEFAULT_MINIMUMS.for_model(BEDROCK) == DEFAULT_MINIMUMS.for_model("claude-sonnet-4-5") == 1024
    # Exact on the id: a variant is another model, never priced or routed as its base.
    assert lookup_model({"claude-opus-4-7": 1}, "claude-opus-4-7-fast") is None


def test_a_bedrock_id_is_priced_as_the_model_it_names() -> None:
    book = PriceBook()
    assert book.rates(BEDROCK).input.base == book.rates("claude-sonnet-4-5").input.base == Decimal(3)


def test_conftest_hooks_label_extend_and_price_the_report(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeconftest(
        """
from pytest_costguard import PriceOverride

def pytest_costguard_report_labels(config):
    return {"pipeline": "nightly"}

def pytest_costguard_report(config, report):
    report["team"] = "search"

def pytest_costguard_prices(config):
    return {"gateway-model": PriceOverride(input=2, output=10)}
"""
    )
    fake_pytester.makepyfile(
        """
from fakeapi import FakeAPI

def test_call():
    FakeAPI({"input_tokens": 1000, "output_tokens": 100}).client().messages.create(
        model="gateway-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
"""
    )
    fake_pytester.runpytest("--llm-report=r.json", "--llm-budget=1").assert_outcomes(passed=1)
    report = json.loads((fake_pytester.path / "r.json").read_text())
    assert (report["pipeline"], report["team"]) == ("nightly", "search")
    (call,) = report["calls"]
    priced = (call["input_tokens"] * 2 + call["output_tokens"] * 10) / 1_000_000  # the hook's $2/M in, $10/M out
    assert report["total_cost_usd"] == pytest.approx(priced) and priced > 0


def test_the_emulator_fixture_labels_the_run_as_simulated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import anthropic

def test_call(llm_emulator):
    client = anthropic.Anthropic(base_url=llm_emulator.base_url, api_key="x")
    client.messages.create(model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
"""
    )
    result = pytester.runpytest_subprocess("--llm-report=r.json", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*LLM cost (pytest-costguard) - emulator, simulated costs*"])
    assert json.loads((pytester.path / "r.json").read_text())["backend"] == "emulator"


def test_the_pipeline_fixture_is_metered_once_at_the_sessions_prices(fake_pytester: pytest.Pytester) -> None:
    fake_pytester.makeini("[pytest]\nllm_prices =\n    claude-haiku-4-5 = input=10 output=10\n")
    fake_pytester.makeconftest(
        """
import pytest
from fakeapi import FakeAPI

@pytest.fixture
def llm_client():
    return FakeAPI({"input_tokens": 1000, "output_tokens": 100}).client()
"""
    )
    fake_pytester.makepyfile(
        """
from decimal import Decimal

def test_process(llm_pipeline, llm_cost):
    result = llm_pipeline.process("short text")
    record = result.record
    # At the session's configured $10/M for input and output, not genai-prices' $1/$5.
    assert record.cost_usd == Decimal(record.input_tokens + record.output_tokens) * 10 / 1_000_000
    assert llm_cost.calls == 1 and llm_pipeline.tracker.count == 1
"""
    )
    fake_pytester.runpytest("--llm-report=r.json").assert_outcomes(passed=1)
    report = json.loads((fake_pytester.path / "r.json").read_text())
    assert len(report["calls"]) == 1


def test_the_cost_fixture_class_can_be_imported_into_a_test_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
from pytest_costguard.plugin import LlmCost, TestCost

def test_annotated(llm_cost: TestCost):
    assert isinstance(llm_cost, LlmCost)
"""
    )
    result = pytester.runpytest("-W", "error::pytest.PytestCollectionWarning", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pytest_costguard.pricing", "pytest_costguard.core.pricing"),
        ("pytest_costguard.budget", "pytest_costguard.core.budget"),
        ("pytest_costguard.guard", "pytest_costguard.metering.guard"),
        ("pytest_costguard.sqlite_ledger", "pytest_costguard.metering.sqlite_ledger"),
        ("pytest_costguard.report", "pytest_costguard.reports.model"),
        ("pytest_costguard.baseline", "pytest_costguard.reports.baseline"),
        ("pytest_costguard.xdist", "pytest_costguard.plugin.xdist"),
    ],
)
def test_a_module_path_from_before_the_layout_imports_the_module_that_moved(old: str, new: str) -> None:
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)


def test_names_that_moved_keep_their_old_spelling() -> None:
    from pytest_costguard.report import RefusalInfo
    from pytest_costguard.sqlite_ledger import LedgerRefusal
    from pytest_costguard.xdist import record_from_json, record_to_json

    from pytest_costguard.domain.records import Refusal

    assert RefusalInfo is LedgerRefusal is Refusal
    record = __import__("pytest_costguard").CostRecord("m", 1, 2, Decimal("0.5"), tag="t")
    assert record_from_json(record_to_json(record)) == record
