"""Record and replay of OpenAI calls: inner pytest runs drive the real `openai` SDK against the emulator.

Each scenario records a suite against the costguard emulator, then runs it again with the clients pointed at a
port nothing listens on (`OFFLINE=1`, no emulator started): a call that reached the network would fail to
connect, so a passing replay proves every call was answered from the cassettes. The report's figures are
compared with the recording run's; the cassettes are read back from disk.

Inner runs are subprocesses (see tests/test_openai.py for why). Each suite is recorded once per module, into a
directory of its own, and each test replays a copy of that recording in its own pytester directory: a test that
changes its cassettes or its ini changes only its copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.cli import main as costguard
from pytest_costguard.domain.money import format_usd
from pytest_costguard.metering.children import ENV
from pytest_costguard.replay import find_secrets

KEY = "sk-proj-" + "Rk7pX2vQ" * 6 + "_AbCdEfGh"
"""An OpenAI project key of the real shape: it must never reach a cassette."""
ORGANIZATION, PROJECT = "org-Costguard5ecret", "proj_Costguard5ecret"

SUITE = f"""
import asyncio
import os

import openai
import pytest

KEY = {KEY!r}
PROMPT = os.environ.get("PROMPT", "Summarise ticket T-1042")


@pytest.fixture(scope="session")
def base_url(request):
    if os.environ.get("OFFLINE"):
        return "http://127.0.0.1:9/v1"  # the discard port: nothing answers there
    return request.getfixturevalue("llm_emulator").base_url + "/v1"


def client(base_url, cls=openai.OpenAI):
    return cls(api_key=KEY, base_url=base_url, organization={ORGANIZATION!r}, project={PROJECT!r}, max_retries=0)


def chat(prompt=PROMPT, **extra):
    messages = [{{"role": "user", "content": prompt}}]
    return dict(model="gpt-4o-mini", max_completion_tokens=200, messages=messages, **extra)


def test_chat(base_url):
    with client(base_url) as c:
        reply = c.chat.completions.create(**chat(metadata={{"run": os.environ.get("RUN", "a")}}, store=False))
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0


def test_chat_stream(base_url):
    with client(base_url) as c:
        stream = c.chat.completions.create(**chat(f"stream: {{PROMPT}}"), stream=True,
                                           stream_options={{"include_usage": True}})
        chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_responses(base_url):
    with client(base_url) as c:
        response = c.responses.create(model="gpt-5-mini", input=f"responses: {{PROMPT}}", max_output_tokens=300)
    assert response.output_text and response.usage.output_tokens > 0


def test_responses_stream(base_url):
    with client(base_url) as c:
        with c.responses.stream(model="gpt-5-mini", input=f"responses stream: {{PROMPT}}",
                                max_output_tokens=300) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
    assert kinds[-1] == "response.completed" and final.usage.output_tokens > 0


def test_raw_responses(base_url):
    with client(base_url) as c:
        raw = c.chat.completions.with_raw_response.create(**chat(f"raw: {{PROMPT}}"))
        parsed = raw.parse()
        with c.chat.completions.with_streaming_response.create(**chat(f"streaming raw: {{PROMPT}}")) as response:
            body = b"".join(response.iter_bytes())
    assert raw.status_code == 200 and parsed.choices[0].message.content
    assert b"chat.completion" in body


def test_async(base_url):
    async def go():
        async with client(base_url, openai.AsyncOpenAI) as c:
            asks = [c.chat.completions.create(**chat(f"async {{i}}: {{PROMPT}}")) for i in range(3)]
            replies = await asyncio.gather(*asks)
            stream = await c.chat.completions.create(**chat(f"async stream: {{PROMPT}}"), stream=True,
                                                     stream_options={{"include_usage": True}})
            chunks = [chunk async for chunk in stream]
            return replies, chunks

    replies, chunks = asyncio.run(go())
    assert all(r.choices[0].message.content for r in replies)
    assert chunks[-1].usage is not None
"""


ADDOPTS = "-p no:asyncio -p no:respx"
CONFTEST = "import httpx2\n\nhttpx2.alias_httpx()\n"
UNSET = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "PROMPT", "OFFLINE", "EXTRA", ENV)
"""Variables an inner run must not inherit from the outer one (ENV: the outer session, when it is metered)."""


def _record(where: Path, suite: str, passed: int, *args: str, **env: str) -> None:
    """Write the suite into `where` and run it there in a subprocess, once, recording its cassettes.

    The environment is the one the tests' pytester gives its inner runs (HOME in the directory, PYTEST_ADDOPTS
    replaced, Hypothesis' plugin left out as tests/conftest.py does), so the recording is the one a
    `runpytest_subprocess` in that directory would have made.
    """
    (where / "conftest.py").write_text(CONFTEST)
    (where / "test_app.py").write_text(suite)
    child_env = {k: v for k, v in os.environ.items() if k not in UNSET}
    child_env.update(PYTEST_ADDOPTS=f"{ADDOPTS} -p no:hypothesispytest", HOME=str(where), USERPROFILE=str(where))
    child_env.update(PY_COLORS="0", **env)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", f"--basetemp={where.with_name(where.name + '-basetemp')}", *args],
        cwd=where,
        env=child_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    outcome = pytest.RunResult(run.returncode, run.stdout.splitlines(), run.stderr.splitlines(), duration=0.0)
    outcome.assert_outcomes(passed=passed)


def _copy_recording(recording: Path, pytester: pytest.Pytester) -> None:
    """Give this test its own copy of a module's recording: the suite, its cassettes and its report."""
    shutil.copytree(recording, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture
def oa(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", ADDOPTS, prepend=" ")
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=SUITE)
    return pytester


def _run(pytester: pytest.Pytester, *args: str, offline: bool = False, prompt: str | None = None) -> pytest.RunResult:
    env = {"OFFLINE": "1"} if offline else {}
    if prompt is not None:
        env["PROMPT"] = prompt
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        return pytester.runpytest_subprocess(*args)


def _report(pytester: pytest.Pytester, name: str) -> dict:
    return json.loads((pytester.path / name).read_text())


def _cassettes(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / "cassettes").rglob("*.json"))


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SUITE recorded once against the emulator, for every test of the module to copy."""
    where = tmp_path_factory.mktemp("openai-recording")
    _record(where, SUITE, 6, "--llm-record=once", "--llm-report=recorded.json")
    return where


@pytest.fixture
def recorded(oa: pytest.Pytester, recording: Path) -> pytest.Pytester:
    _copy_recording(recording, oa)
    return oa


def test_every_openai_call_path_replays_offline_at_no_cost_saving_what_it_cost_to_record(
    recorded: pytest.Pytester,
) -> None:
    result = _run(recorded, "--llm-record=none", "--llm-report=replayed.json", "--llm-budget=0.000001", offline=True)

    result.assert_outcomes(passed=6)
    before, after = _report(recorded, "recorded.json"), _report(recorded, "replayed.json")
    assert before["calls"] and {c["provider"] for c in before["calls"]} == {"openai"}
    assert not any(c["replayed"] for c in before["calls"]) and before["total_cost_usd"] > 0
    assert len(after["calls"]) == len(before["calls"]) and all(c["replayed"] for c in after["calls"])
    assert after["total_cost_usd"] == 0 and not after["budget_exceeded"]
    recorded_cost = sum(Decimal(str(c["cost_usd"])) for c in before["calls"])
    assert abs(Decimal(str(after["savings"]["replay_usd"])) - recorded_cost) < Decimal("1e-9")
    # The same usage came back, token for token, call by call.
    tokens = [(c["nodeid"], c["model"], c["input_tokens"], c["output_tokens"]) for c in before["calls"]]
    assert sorted(tokens) == sorted(
        (c["nodeid"], c["model"], c["input_tokens"], c["output_tokens"]) for c in after["calls"]
    )


def test_cassettes_hold_json_as_data_and_streams_event_by_event_with_no_credential(recorded: pytest.Pytester) -> None:
    files = _cassettes(recorded)

    assert {p.stem for p in files} == {
        "test_chat",
        "test_chat_stream",
        "test_responses",
        "test_responses_stream",
        "test_raw_responses",
        "test_async",
    }
    for path in files:
        text = path.read_text()
        assert KEY not in text and ORGANIZATION not in text and PROJECT not in text
        assert find_secrets(text) == []
        for interaction in json.loads(text)["interactions"]:
            assert interaction["provider"] == "openai"
            headers = interaction["request"]["headers"]
            for name in ("authorization", "openai-organization", "openai-project"):
                assert headers[name] == "[REDACTED]"
    stream = json.loads((files[0].parent / "test_chat_stream.json").read_text())["interactions"][0]["response"]
    assert stream["events"][0]["data"]["object"] == "chat.completion.chunk"
    assert stream["events"][-1] == {"text": "[DONE]"}
    assert any(e["data"].get("usage") for e in stream["events"][:-1])
    plain = json.loads((files[0].parent / "test_chat.json").read_text())["interactions"][0]
    assert plain["response"]["json"]["object"] == "chat.completion"
    assert plain["response"]["json"]["usage"]["prompt_tokens"] > 0  # usage fields are never redacted


def test_a_changed_prompt_fails_its_test_under_none_naming_the_model_and_prompt_and_is_never_sent(
    recorded: pytest.Pytester,
) -> None:
    result = _run(recorded, "--llm-record=none", "test_app.py::test_chat", offline=True, prompt="Something else")

    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "test_app.py::test_chat: a gpt-4o-mini call (prompt: 'Something else') was not recorded in" in out
    assert "nothing was sent); the closest recording differs at messages[0].content;" in out
    assert "Connect" not in out  # refused before sending: no connection was even tried


def test_a_field_set_to_differ_per_run_is_left_out_of_matching(recorded: pytest.Pytester) -> None:
    recorded.makeini("[pytest]\nllm_record_ignore = metadata.run\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUN", "b")  # test_chat sends metadata.run = "b": recorded with "a"
        result = _run(recorded, "--llm-record=none", "test_app.py::test_chat", offline=True)

    result.assert_outcomes(passed=1)


def test_new_records_only_what_has_no_recording_and_keeps_the_rest(recorded: pytest.Pytester) -> None:
    before = json.loads((recorded.path / "cassettes" / "test_app" / "test_chat.json").read_text())

    result = _run(recorded, "--llm-record=new", "--llm-report=new.json", "test_app.py::test_chat", prompt="Fresh one")

    result.assert_outcomes(passed=1)
    (call,) = _report(recorded, "new.json")["calls"]
    assert not call["replayed"] and call["cost_usd"] > 0  # sent and billed: it had no recording
    after = json.loads((recorded.path / "cassettes" / "test_app" / "test_chat.json").read_text())
    assert after["interactions"][0] == before["interactions"][0]
    assert after["interactions"][1]["request"]["body"]["messages"][0]["content"] == "Fresh one"


@pytest.mark.slow
def test_openai_cassettes_replay_under_xdist(recorded: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = _run(recorded, "--llm-record=none", "-n", "2", "--llm-report=xdist.json", offline=True)

    result.assert_outcomes(passed=6)
    report = _report(recorded, "xdist.json")
    assert report["calls"] and all(c["replayed"] for c in report["calls"]) and report["total_cost_usd"] == 0
    recorded_cost = sum(Decimal(str(c["cost_usd"])) for c in _report(recorded, "recorded.json")["calls"])
    assert abs(Decimal(str(report["savings"]["replay_usd"])) - recorded_cost) < Decimal("1e-9")


def test_check_secrets_finds_an_openai_key_in_a_cassette(
    recorded: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    assert costguard(["cassettes", str(recorded.path / "cassettes"), "--check-secrets"]) == 0
    path = recorded.path / "cassettes" / "test_app" / "test_chat.json"
    data = json.loads(path.read_text())
    data["interactions"][0]["request"]["body"]["messages"][0]["content"] = f"my key is {KEY}"
    path.write_text(json.dumps(data))

    assert costguard(["cassettes", str(recorded.path / "cassettes"), "--check-secrets"]) == 1
    out = capsys.readouterr().out
    assert "test_chat.json: SECRET: OpenAI API key sk-proj-" in out
    assert KEY not in out  # the report does not print the secret


def test_the_cassette_listing_prices_openai_recordings_as_the_recording_run_did(
    recorded: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    assert costguard(["cassettes", str(recorded.path / "cassettes")]) == 0

    cost = sum(Decimal(str(c["cost_usd"])) for c in _report(recorded, "recorded.json")["calls"])
    assert cost > 0
    assert f"total: {format_usd(cost)} at today's prices" in capsys.readouterr().out


SESSION_SUITE = """
import os

import openai
import pytest

WHERE = "http://127.0.0.1:9/v1" if os.environ.get("OFFLINE") else os.environ["EMULATOR_URL"] + "/v1"
PROMPT = os.environ.get("PROMPT", "warm up")


def ask(prompt):
    with openai.OpenAI(api_key="sk-test", base_url=WHERE, max_retries=0) as c:
        reply = c.chat.completions.create(
            model="gpt-4o-mini", max_completion_tokens=50, messages=[{"role": "user", "content": prompt}]
        )
    return reply.choices[0].message.content


AT_IMPORT = ask(f"import: {PROMPT}")


@pytest.fixture(scope="session")
def warm():
    return ask(f"session fixture: {PROMPT}")


@pytest.fixture(scope="session", autouse=True)
def best_effort():
    if os.environ.get("EXTRA"):
        try:
            ask(os.environ["EXTRA"])  # never recorded: refused, and the refusal swallowed
        except Exception:
            pass


def test_first(warm):
    assert warm and AT_IMPORT and ask("first test")


def test_second(warm):
    assert warm and ask("second test")
"""


@pytest.fixture(scope="module")
def session_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SESSION_SUITE recorded once against an emulator started here, for every test of the module to copy."""
    from pytest_costguard.emulator import Emulator

    where = tmp_path_factory.mktemp("openai-session-recording")
    with Emulator() as emulator:
        _record(where, SESSION_SUITE, 2, "--llm-record=once", EMULATOR_URL=emulator.base_url)
    return where


@pytest.fixture
def session_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, session_recording: Path
) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", ADDOPTS, prepend=" ")
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    _copy_recording(session_recording, pytester)
    return pytester


def test_calls_outside_tests_go_to_the_session_cassette_and_replay_whichever_test_runs_first(
    session_suite: pytest.Pytester,
) -> None:
    session = json.loads((session_suite.path / "cassettes" / "_session.json").read_text())
    first = json.loads((session_suite.path / "cassettes" / "test_app" / "test_first.json").read_text())

    prompts = [i["request"]["body"]["messages"][0]["content"] for i in session["interactions"]]
    assert session["test"] == "<session>" and prompts == ["import: warm up", "session fixture: warm up"]
    assert [i["request"]["body"]["messages"][0]["content"] for i in first["interactions"]] == ["first test"]
    # Only the second test: it sets the session fixture up now, and its call replays all the same.
    result = _run(session_suite, "--llm-record=none", "--llm-report=r.json", "-k", "second", offline=True)
    result.assert_outcomes(passed=1, deselected=1)
    report = _report(session_suite, "r.json")
    assert len(report["calls"]) == 3 and all(c["replayed"] for c in report["calls"])
    assert report["total_cost_usd"] == 0
    assert "stale" not in result.stdout.str()


def test_a_call_outside_tests_with_no_recording_is_refused_under_none_and_fails_the_run(
    session_suite: pytest.Pytester,
) -> None:
    result = _run(session_suite, "--llm-record=none", offline=True, prompt="changed")

    assert result.ret != 0
    out = result.stdout.str()
    assert "<session>: a gpt-4o-mini call (prompt: 'import: changed') was not recorded in" in out
    assert "_session.json (--llm-record=none, nothing was sent)" in out
    assert "Connect" not in out


def test_an_unrecorded_openai_call_going_live_under_a_budget_is_priced_as_openai_bills_it() -> None:
    from pytest_costguard.core.pricing import UnknownModelPrice
    from pytest_costguard.metering.guard import CostGuard, GuardConfig
    from pytest_costguard.metering.ledger import InMemoryLedger

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))
    body = {"model": "claude-sonnet-4-6", "max_completion_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    # Admitted for replay (nothing reserved, no price needed); no recording answers it, so it would go live.
    ticket, _ = guard.begin(body, streamed=False, replay=True, provider="openai", endpoint="chat")

    # OpenAI lists no such model: refused before it is sent, though Anthropic prices a model of that name.
    with pytest.raises(UnknownModelPrice, match="claude-sonnet-4-6"):
        guard.hold(ticket)
    assert guard.ledger.spent == 0


@pytest.mark.parametrize("workers", [pytest.param((), id="one process"), pytest.param(("-n", "2"), id="xdist")])
def test_a_swallowed_refusal_outside_tests_fails_the_run_though_every_test_passed(
    session_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: tuple[str, ...]
) -> None:
    if workers:
        pytest.importorskip("xdist")
    monkeypatch.setenv("EXTRA", "a question nobody recorded")

    result = _run(session_suite, "--llm-record=none", *workers, offline=True)

    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "replay: 1 call(s) outside tests were refused (this fails the run):" in out
    assert "<session>: a gpt-4o-mini call (prompt: 'a question nobody recorded') was not recorded in" in out
