"""Child processes: Python processes a suite starts are metered under its budget, reported and judged with it.

Each test runs an inner pytest in a subprocess against an Emulator started here: respx cannot reach a child
process, the emulator on loopback can. The inner run's children build their own `anthropic.Anthropic()`
clients, as production code does (ANTHROPIC_BASE_URL points them at the emulator). Three accounts of the same
calls are compared: what the emulator billed (priced with the default price book), the budget, and the
inner run's JSON report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pytest_costguard.core.pricing import default_price_book, usage_from_response
from pytest_costguard.emulator import Emulator
from pytest_costguard.metering.children import ENV

SPENDER = """
import sys

import anthropic


def spend(n, tag=""):
    made = 0
    client = anthropic.Anthropic(max_retries=0)
    for i in range(n):
        try:
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=40, messages=[{"role": "user", "content": f"hi {tag} {i}"}]
            )
        except Exception as exc:
            if "budget" not in str(exc):
                raise
            break
        made += 1
    return made


if __name__ == "__main__":
    print(spend(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""))
"""

BUDGET = Decimal("0.002")
"""About eight worst cases of one call: a child making 20 calls runs into it."""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


@pytest.fixture
def inner(pytester: pytest.Pytester, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv(ENV, raising=False)
    pytester.makepyfile(spender=SPENDER)
    pytester.makeini("[pytest]\naddopts = -p no:asyncio -p no:cacheprovider\n")
    return pytester


def billed_usd(emulator: Emulator) -> Decimal:
    prices = default_price_book()
    return sum(
        (prices.cost(usage_from_response(entry["usage"]), entry["model"]) for entry in emulator.billed),
        Decimal(0),
    )


def report_of(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    return data


def test_a_subprocess_of_the_interpreter_spends_under_the_session_budget(
    inner: pytest.Pytester, emulator: Emulator
) -> None:
    inner.makepyfile(
        test_children="""
import subprocess, sys

def test_spawns_a_spender():
    done = subprocess.run([sys.executable, "spender.py", "20"], capture_output=True, text=True, check=True)
    assert int(done.stdout) < 20  # refused before its 20th call
"""
    )
    result = inner.runpytest_subprocess(f"--llm-budget={BUDGET}", "--llm-report=r.json")
    billed = billed_usd(emulator)
    assert 0 < len(emulator.billed) < 20
    assert billed <= BUDGET
    report = report_of(inner)
    assert len(report["calls"]) == len(emulator.billed)
    assert Decimal(str(report["total_cost_usd"])) == billed
    assert {call["nodeid"] for call in report["calls"]} == {"test_children.py::test_spawns_a_spender"}
    assert report["refused_calls"] >= 1
    assert result.ret != 0  # the child's refusal fails the run, though the test passed


def test_a_run_whose_children_keep_to_the_budget_passes_and_reports_them(
    inner: pytest.Pytester, emulator: Emulator
) -> None:
    inner.makepyfile(
        test_children="""
import subprocess, sys

def test_spawns_a_small_spender():
    done = subprocess.run([sys.executable, "spender.py", "2"], capture_output=True, text=True, check=True)
    assert int(done.stdout) == 2
"""
    )
    result = inner.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    report = report_of(inner)
    assert len(emulator.billed) == 2
    assert [c["nodeid"] for c in report["calls"]] == ["test_children.py::test_spawns_a_small_spender"] * 2
    assert Decimal(str(report["total_cost_usd"])) == billed_usd(emulator)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_share_one_budget(inner: pytest.Pytester, emulator: Emulator, method: str) -> None:
    import multiprocessing

    if method not in multiprocessing.get_all_start_methods():
        # A platform limit, not a missing component: Linux has all three; Windows and macOS lack fork/forkserver.
        pytest.skip(f"multiprocessing start method {method!r} does not exist on {sys.platform}")
    inner.makepyfile(
        test_pool=f"""
import multiprocessing

from spender import spend

def test_three_children_spend():
    ctx = multiprocessing.get_context("{method}")
    with ctx.Pool(3) as pool:
        made = pool.starmap(spend, [(20, "a"), (20, "b"), (20, "c")])
    assert sum(made) < 60
"""
    )
    result = inner.runpytest_subprocess(f"--llm-budget={BUDGET}", "--llm-report=r.json")
    billed = billed_usd(emulator)
    assert 0 < len(emulator.billed) < 60
    assert billed <= BUDGET  # one budget for all three, not one each
    report = report_of(inner)
    assert len(report["calls"]) == len(emulator.billed)
    assert Decimal(str(report["total_cost_usd"])) == billed
    assert {call["nodeid"] for call in report["calls"]} == {"test_pool.py::test_three_children_spend"}
    assert result.ret != 0


def test_a_process_pool_executor_is_metered(inner: pytest.Pytester, emulator: Emulator) -> None:
    inner.makepyfile(
        test_pool="""
from concurrent.futures import ProcessPoolExecutor

from spender import spend

def test_pool_spends():
    with ProcessPoolExecutor(2) as pool:
        assert sum(pool.map(spend, [1, 1, 1])) == 3
"""
    )
    result = inner.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    report = report_of(inner)
    assert len(emulator.billed) == 3
    assert len(report["calls"]) == 3
    assert Decimal(str(report["total_cost_usd"])) == billed_usd(emulator)


def test_the_start_up_hook_is_installed_and_idle_without_a_session(tmp_path: Path) -> None:
    site = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p, "pytest_costguard.pth").exists())
    assert "PYTEST_COSTGUARD_SESSION" in (site / "pytest_costguard.pth").read_text()
    env = {k: v for k, v in os.environ.items() if k != ENV}
    probe = "import sys; print(sorted(m for m in sys.modules if m.startswith('pytest_costguard')))"
    idle = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert idle.stdout.strip() == "[]"  # nothing of ours imported without a session
    named = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, ENV: json.dumps({"ledger": str(tmp_path / "l"), "budget": "1", "label": "x", "host": "h"})},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pytest_costguard.metering.children" in named.stdout


def test_children_of_an_idle_run_are_not_told_of_a_session(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_idle="""
import os

def test_no_variable():
    assert "PYTEST_COSTGUARD_SESSION" not in os.environ
"""
    )
    inner.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_project_that_spawns_fans_out_and_nests_stays_under_its_budget(
    inner: pytest.Pytester, emulator: Emulator
) -> None:
    """The issue's hostile project: children, a pool left spending, an inner pytest run, one small budget."""
    sub = inner.mkdir("sub")
    (sub / "test_sub.py").write_text("from spender import spend\n\ndef test_inner_spends():\n    spend(20, 'inner')\n")
    inner.makepyfile(
        test_project="""
import subprocess, sys, threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from spender import spend

POOL = ThreadPoolExecutor(4)
GO = threading.Event()


def test_a_spawns_children():
    subprocess.run([sys.executable, "spender.py", "20", "child"], check=True, capture_output=True)


def test_b_fans_out_and_returns():
    for i in range(4):
        POOL.submit(lambda i=i: GO.wait(30) and spend(5, f"pool{i}"))


@pytest.mark.llm_budget("0.000001")
def test_c_innocent_with_its_own_budget():
    GO.set()
    POOL.shutdown(wait=True)


def test_d_runs_an_inner_session():
    pytest.main(["-q", "-p", "no:cacheprovider", "sub/test_sub.py"])
"""
    )
    inner.makeini("[pytest]\naddopts = -p no:asyncio -p no:cacheprovider\ntestpaths = test_project.py\n")
    result = inner.runpytest_subprocess(f"--llm-budget={BUDGET}", "--llm-report=r.json")
    billed = billed_usd(emulator)
    assert billed <= BUDGET
    report = report_of(inner)
    assert len(report["calls"]) == len(emulator.billed) > 0
    assert Decimal(str(report["total_cost_usd"])) == billed
    assert "test_c_innocent_with_its_own_budget" not in {c["nodeid"].split("::")[-1] for c in report["calls"]}
    assert result.parseoutcomes()["passed"] == 4  # the innocent test passed
    assert result.ret != 0  # refusals happened (children, pool, inner run): the run fails


def test_a_child_prices_its_calls_as_the_session_does(inner: pytest.Pytester, emulator: Emulator) -> None:
    # At the configured price (a dollar a token) one call's worst case is over the budget: the session's child
    # refuses it. At genai-prices' price it would fit many times over, so a child that ignored the session's
    # prices would spend.
    inner.makeini(
        "[pytest]\naddopts = -p no:asyncio -p no:cacheprovider\n"
        "llm_prices =\n    claude-haiku-4-5 = input=1000000 output=1000000\n"
    )
    inner.makepyfile(
        test_children="""
import subprocess, sys

def test_spawns_a_spender():
    done = subprocess.run([sys.executable, "spender.py", "3"], capture_output=True, text=True, check=True)
    assert int(done.stdout) == 0
"""
    )
    result = inner.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json")
    assert emulator.billed == []
    assert report_of(inner)["refused_calls"] == 1
    assert result.ret != 0


def test_a_childs_openai_calls_are_metered_under_the_session_budget(
    inner: pytest.Pytester, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{emulator.base_url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    inner.makepyfile(
        openai_spender="""
import sys

import openai

made = 0
client = openai.OpenAI(max_retries=0)
for i in range(int(sys.argv[1])):
    try:
        client.chat.completions.create(
            model="gpt-4.1-nano", max_completion_tokens=40, messages=[{"role": "user", "content": f"hi {i}"}]
        )
    except Exception as exc:
        if "budget" not in str(exc):
            raise
        break
    made += 1
print(made)
""",
        test_children="""
import subprocess, sys

def test_spawns_an_openai_spender():
    done = subprocess.run([sys.executable, "openai_spender.py", "400"], capture_output=True, text=True, check=True)
    assert 0 < int(done.stdout) < 400  # refused before its 400th call
""",
    )
    budget = Decimal("0.0005")
    result = inner.runpytest_subprocess(f"--llm-budget={budget}", "--llm-report=r.json")
    report = report_of(inner)
    assert report["refused_calls"] >= 1
    calls = report["calls"]
    assert calls and {call["provider"] for call in calls} == {"openai"}
    assert len(calls) == len(emulator.billed)
    assert Decimal(str(report["total_cost_usd"])) <= budget
    assert result.ret != 0
