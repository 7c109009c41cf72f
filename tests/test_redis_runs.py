"""Whole pytest runs sharing one budget on a real `redis-server`: concurrent "machines", faults, the report.

The inner suites call the real anthropic SDK against an `httpx2.MockTransport` "API" that appends a line to a
file for every response it bills (naming the machine), so these tests compare what the runs report with what
was really billed, across processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from redis_support import RedisServer, free_port

from pytest_costguard import cli
from pytest_costguard.core.pricing import Usage, default_price_book

pytest.importorskip("redis")
pytest.importorskip("xdist")

MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 2000, "output_tokens": 100}
PER_CALL = default_price_book().cost(Usage(input_tokens=2000, output_tokens=100), MODEL)

API = f"""
import json, os, random, time

import anthropic
import httpx2

USAGE = {USAGE!r}


def handler(request):
    if request.url.path.endswith("/count_tokens"):
        # A preflight (--llm-preflight): free, like the API's count; never billed.
        return httpx2.Response(200, json={{"input_tokens": USAGE["input_tokens"]}})
    time.sleep(random.uniform(0, 0.003))  # lets calls of different runs overlap
    # One short append per billed response: atomic with O_APPEND, whichever process writes it.
    with open(os.environ["BILLED_FILE"], "a") as fh:
        fh.write(json.dumps({{"usage": USAGE, "machine": os.environ.get("COSTGUARD_MACHINE")}}) + "\\n")
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
"""

SPEND = """
import pytest
from api import call

@pytest.mark.parametrize("i", range(15))
def test_two_calls(i):
    call(2)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("BILLED_FILE", str(pytester.path / "billed.jsonl"))
    # Only the plugins under test (each process would otherwise import hypothesis, respx, asyncio...).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("COSTGUARD_RUN_ID", raising=False)
    monkeypatch.delenv("COSTGUARD_MACHINE", raising=False)
    pytester.makepyfile(api=API)
    return pytester


PLUGINS = ("-p", "pytest_costguard.plugin", "-p", "no:cacheprovider")


def billed(path: Path) -> list[str | None]:
    """The machine that received each response the fake API billed."""
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [line["machine"] for line in lines]


@pytest.mark.slow
def test_concurrent_runs_on_one_key_never_bill_more_than_the_budget_and_their_reports_add_up(
    suite: pytest.Pytester, redis_server: RedisServer, redis_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = (PER_CALL * 30).quantize(Decimal("0.0001"))  # 90 calls wanted, about 30 fit
    suite.makepyfile(test_spend=SPEND)
    machines = ["ci-1", "ci-2", "ci-3"]
    runs = []
    for index, machine in enumerate(machines):
        env = {**os.environ, "COSTGUARD_RUN_ID": f"run-{machine}", "COSTGUARD_MACHINE": machine}
        xdist = ("-n", "2", "-p", "xdist") if index == 0 else ()  # one run's two workers join as one run
        command = [
            sys.executable, "-m", "pytest", *PLUGINS, *xdist, f"--llm-ledger={redis_server.url}",
            f"--llm-ledger-key={redis_key}", f"--llm-budget={budget}", f"--llm-report=r-{machine}.json",
            "--tb=line", "-q",
        ]
        runs.append(
            subprocess.Popen(command, cwd=suite.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = [run.communicate(timeout=300)[0].decode() for run in runs]
    lines = billed(suite.path / "billed.jsonl")
    total = PER_CALL * len(lines)
    assert total <= budget, outputs
    assert total > budget / 2  # the runs shared the budget, not a slice each
    reports = {m: json.loads((suite.path / f"r-{m}.json").read_text()) for m in machines}
    for machine, report in reports.items():
        assert Decimal(str(report["total_cost_usd"])) == PER_CALL * lines.count(machine)
        assert len(report["calls"]) == lines.count(machine)
    refused = [m for m in machines if reports[m]["refused_calls"]]
    assert refused, "the budget ran out"
    for machine, run in zip(machines, runs, strict=True):
        # A run refused anywhere fails; one that was never refused passes.
        expected = pytest.ExitCode.TESTS_FAILED if machine in refused else pytest.ExitCode.OK
        assert run.returncode == expected, outputs

    capsys.readouterr()
    assert cli.main(["report", redis_server.url, "--key", redis_key, "--json", str(suite.path / "all.json")]) == 0
    printed = capsys.readouterr().out
    shared = json.loads((suite.path / "all.json").read_text())
    assert Decimal(str(shared["total_cost_usd"])) == total
    assert sorted((r["run"], r["machines"], r["calls"]) for r in shared["runs"]) == [
        (f"run-{m}", [m], lines.count(m)) for m in machines
    ]
    assert shared["budget_usd"] == float(budget)
    assert {t["nodeid"] for t in shared["tests"]} <= {f"test_spend.py::test_two_calls[{i}]" for i in range(15)}
    assert "run-ci-1" in printed and "ci-1" in printed and "budget used:" in printed


KILL = """
import os, signal
from api import call

def test_before():
    call(1)

def test_after_the_server_is_lost():
    os.kill(int(os.environ["REDIS_PID"]), signal.SIGKILL)
    call(1)
"""


@pytest.mark.slow
def test_a_redis_lost_mid_run_refuses_calls_and_the_run_exits_non_zero(
    suite: pytest.Pytester, redis_servers: Callable[[], RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_servers()
    assert server.process is not None
    monkeypatch.setenv("REDIS_PID", str(server.process.pid))
    suite.makepyfile(test_kill=KILL)
    try:
        result = suite.runpytest_subprocess(*PLUGINS, f"--llm-ledger={server.url}", "--llm-budget=1", "--tb=short")
    finally:
        server.stop()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    assert len(billed(suite.path / "billed.jsonl")) == 1  # the second call was never sent
    result.stdout.fnmatch_lines(["*budget cannot be checked: the shared ledger redis://127.0.0.1:*cannot be reached*"])


def test_an_unreachable_redis_at_start_up_is_a_usage_error_that_never_prints_the_password(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_idle="def test_idle():\n    pass\n")
    url = f"redis://ci:pa55-word@127.0.0.1:{free_port()}/3"
    result = suite.runpytest_subprocess(*PLUGINS, f"--llm-ledger={url}", "--llm-budget=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "--llm-ledger: redis://ci:***@127.0.0.1:" in output
    assert "pa55-word" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llm-budget-window=1d"], "*--llm-budget-window: needs a shared ledger*"),
        (["--llm-ledger-key=ci"], "*--llm-ledger-key: needs a shared ledger*"),
        (["--llm-ledger=redis://127.0.0.1:6379/0", "--llm-budget-window=5x"], "*--llm-budget-window: '5x' is not*"),
        (["--llm-ledger=redis://127.0.0.1:6379/0", "--llm-ledger-key=a b"], "*--llm-ledger-key: 'a b' is not*"),
        (["--llm-ledger=redis://u:hidden@127.0.0.1/0"], "*--llm-ledger: 'redis://u:***@127.0.0.1/0' names no port*"),
    ],
)
def test_bad_shared_budget_settings_are_usage_errors_naming_the_option(
    suite: pytest.Pytester, args: list[str], message: str
) -> None:
    result = suite.runpytest(*PLUGINS, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "hidden" not in result.stderr.str()


@pytest.mark.slow
def test_the_window_and_key_have_ini_twins(
    suite: pytest.Pytester, redis_server: RedisServer, redis_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    suite.makeini(
        f"[pytest]\nllm_ledger = {redis_server.url}\nllm_ledger_key = {redis_key}\nllm_budget_window = 1d\n"
    )
    suite.makepyfile(test_one="from api import call\n\ndef test_one():\n    call(1)\n")
    result = suite.runpytest_subprocess(*PLUGINS, "--llm-budget=1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*shared ledger redis://127.0.0.1:*/0 key {redis_key}, window 1d*"])
    capsys.readouterr()
    assert cli.main(["report", redis_server.url, "--key", redis_key, "--window", "1d"]) == 0
    printed = capsys.readouterr().out
    assert "window 1d " in printed and "test_one.py::test_one" in printed
    assert cli.main(["report", redis_server.url, "--key", redis_key]) == 0  # the unwindowed budget: empty
    assert "test_one" not in capsys.readouterr().out


def test_a_run_with_an_sqlite_ledger_does_not_import_the_redis_client(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_idle="import sys\n\ndef test_idle():\n    assert 'redis' not in sys.modules\n"
    )
    suite.runpytest_subprocess(*PLUGINS, "--llm-budget=1", "--llm-ledger=l.sqlite3").assert_outcomes(passed=1)


DIES = f"""
import os, signal

import anthropic
import httpx2
import pytest
from api import call


def test_the_worker_dies_mid_call():
    def handler(request):
        os.kill(os.getpid(), signal.SIGKILL)  # sent, maybe billed, never answered

    transport = httpx2.MockTransport(handler)
    client = anthropic.Anthropic(api_key="k", max_retries=0, http_client=httpx2.Client(transport=transport))
    client.messages.create(model={MODEL!r}, max_tokens=100, messages=[{{"role": "user", "content": "x" * 2000}}])


@pytest.mark.parametrize("i", range(4))
def test_one_call(i):
    call(1)
"""


@pytest.mark.slow
def test_an_xdist_worker_that_dies_mid_call_has_its_hold_charged_at_its_worst_case(
    suite: pytest.Pytester, redis_server: RedisServer, redis_key: str
) -> None:
    suite.makepyfile(test_dies=DIES)
    result = suite.runpytest_subprocess(
        *PLUGINS, "-n", "2", "-p", "xdist", f"--llm-ledger={redis_server.url}", f"--llm-ledger-key={redis_key}",
        "--llm-budget=1", "--llm-report=r.json", "--tb=no",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the crashed test fails
    report = json.loads((suite.path / "r.json").read_text())
    [charged] = [c for c in report["calls"] if c["model"] == "unknown"]
    assert charged["nodeid"] == "test_dies.py::test_the_worker_dies_mid_call" and charged["estimated"]
    assert charged["cost_usd"] >= float(PER_CALL)  # its worst case
    assert len(billed(suite.path / "billed.jsonl")) == len(report["calls"]) - 1 == 4
    shared = cli_report(redis_server.url, redis_key, suite.path / "all.json")
    assert shared["total_cost_usd"] == report["total_cost_usd"]
    assert shared["ledger"]["in_flight_calls"] == 0


def cli_report(url: str, key: str, out: Path) -> dict[str, object]:
    assert cli.main(["report", url, "--key", key, "--json", str(out)]) == 0
    loaded: dict[str, object] = json.loads(out.read_text())
    return loaded
