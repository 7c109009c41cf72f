"""The example suite (examples/support_triage), recorded against the emulator and replayed with it stopped.

The issue's "done when": record once, then replay with the network cut off (the example's conftest serves no
emulator under `--llm-record=none` and points the app's clients at a port nothing listens on): every test
passes, nothing is spent, `savings.replay_usd` equals what the recording run cost (Anthropic and OpenAI calls
alike), and a changed prompt fails its test, refused before it is sent. No secret reaches a cassette.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.replay import find_secrets

# It records the whole example suite and replays it: `.ci/run` runs it in its `-m slow` step.
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parent.parent / "examples" / "support_triage"


def _pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("replay") / "support_triage"
    shutil.copytree(EXAMPLE, where, ignore=shutil.ignore_patterns("cassettes", "__pycache__"))
    run = _pytest(where, "--llm-record=all", "--llm-report=recorded.json")
    assert run.returncode == 0, run.stdout + run.stderr
    return where


def test_the_example_replays_offline_spending_nothing_and_saving_what_recording_cost(recorded: Path) -> None:
    run = _pytest(recorded, "--llm-record=none", "--llm-report=replayed.json", "--llm-budget=0.0001")

    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed in " in run.stdout and "skipped" not in run.stdout  # the whole suite, OpenAI part included
    before = json.loads((recorded / "recorded.json").read_text())
    after = json.loads((recorded / "replayed.json").read_text())
    assert {c["provider"] for c in before["calls"]} == {"anthropic", "openai"}
    assert not any(c["replayed"] for c in before["calls"])
    assert after["total_cost_usd"] == 0 and not after["budget_exceeded"]
    assert len(after["calls"]) == len(before["calls"]) and all(c["replayed"] for c in after["calls"])
    assert [c["provider"] for c in after["calls"]].count("openai") == [c["provider"] for c in before["calls"]].count(
        "openai"
    )
    recorded_cost = sum(Decimal(str(c["cost_usd"])) for c in before["calls"])
    assert recorded_cost > 0
    assert abs(Decimal(str(after["savings"]["replay_usd"])) - recorded_cost) < Decimal("1e-9")
    assert f"replay: {len(before['calls'])} calls answered from cassettes" in run.stdout


def test_no_secret_is_in_any_cassette_of_the_example(recorded: Path) -> None:
    files = sorted((recorded / "tests" / "cassettes").rglob("*.json"))
    before = json.loads((recorded / "recorded.json").read_text())
    tests = {json.loads(path.read_text())["test"] for path in files}

    assert {c["nodeid"] for c in before["calls"]} <= tests  # every test that called the API has its cassette
    providers = set()
    for path in files:
        text = path.read_text()
        assert "offline-dummy-key" not in text  # the key the example's clients send, to both APIs
        assert find_secrets(text) == []
        providers |= {i["provider"] for i in json.loads(text)["interactions"]}
    assert providers == {"anthropic", "openai"}


def test_a_changed_prompt_fails_its_test_under_none_and_is_never_sent(recorded: Path) -> None:
    conftest = recorded / "tests" / "conftest.py"
    original = conftest.read_text()
    conftest.write_text(original.replace("Can you refund both?", "Could you refund both of them?"))
    try:
        run = _pytest(
            recorded, "--llm-record=none", "tests/test_summaries.py::test_a_summary_is_text_for_the_next_agent"
        )
    finally:
        conftest.write_text(original)

    assert run.returncode == 1
    assert (
        "tests/test_summaries.py::test_a_summary_is_text_for_the_next_agent: a claude-sonnet-4-6 call "
        "(prompt: '<ticket id=\"T-1042\">') was not recorded in" in run.stdout
    )
    assert "nothing was sent); the closest recording differs at messages[0].content;" in run.stdout
    assert "Connect" not in run.stdout  # refused before sending: no connection was even tried
