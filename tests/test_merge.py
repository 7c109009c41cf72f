"""`costguard merge`: CI shards' reports merged into one, gated on a budget, bad input refused clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pytest_costguard import cli
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.reports.merge import merge_reports
from pytest_costguard.reports.model import RefusalInfo, ReportError, build_report, load_report, write_report

D = Decimal


def call(nodeid: str, cost: str, model: str = "claude-haiku-4-5", **fields: Any) -> CostRecord:
    return CostRecord(model=model, input_tokens=100, output_tokens=10, cost_usd=D(cost), tag=nodeid, **fields)


def shard(tmp_path: Path, name: str, records: list[CostRecord], **kwargs: Any) -> Path:
    outcomes = {r.tag: "passed" for r in records if r.tag}
    path = tmp_path / f"{name}.json"
    write_report(build_report(records, outcomes, **kwargs), path)
    return path


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    # 0.1 + 0.2 as floats is 0.30000000000000004: the merged total must still be 0.3 (and 0.6).
    return [
        shard(tmp_path, "a", [call("t.py::a", "0.1"), call("t.py::b", "0.2", model="claude-sonnet-4-5")],
              budget=D(1)),
        shard(tmp_path, "b", [call("t.py::c", "0.1", cost_uncached_usd=D("0.15"))], budget=D(1)),
        shard(tmp_path, "c", [call("t.py::d", "0.2", requested_model="claude-opus-4-1",
                                   cost_at_requested_usd=D("0.5"))], budget=D(1)),
    ]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_shards_merge_into_one_report_of_the_same_schema_with_exact_sums(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged_path = tmp_path / "merged.json"
    status, out, _ = run(["merge", *map(str, shards), "-o", str(merged_path), "--md", str(tmp_path / "m.md")], capsys)
    assert status == 0
    merged = load_report(merged_path)  # the merged report is itself a valid report
    assert merged["total_cost_usd"] == 0.6
    assert [t["nodeid"] for t in merged["tests"]] == ["t.py::a", "t.py::b", "t.py::c", "t.py::d"]
    assert len(merged["calls"]) == 4
    assert merged["by_model"]["claude-haiku-4-5"]["cost_usd"] == 0.4
    assert merged["by_model"]["claude-haiku-4-5"]["calls"] == 3
    assert merged["by_model"]["claude-sonnet-4-5"]["cost_usd"] == 0.2
    assert merged["savings"] == {"routing_usd": 0.3, "caching_usd": 0.05, "replay_usd": 0.0, "total_usd": 0.35}
    assert (merged["budget_usd"], merged["budget_exceeded"]) == (3.0, False)  # the shards' budgets add up
    assert [s["source"] for s in merged["shards"]] == list(map(str, shards))
    assert "costguard merge: 3 reports, 4 tests, 4 calls, total $0.60" in out
    assert "budget used: $0.60 of $3.00, 20.0%" in out
    assert "## LLM cost report" in (tmp_path / "m.md").read_text()


def test_a_merged_total_over_the_budget_fails(shards: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["merge", *map(str, shards), "--budget", "0.50"], capsys)
    assert status == 1
    assert "LLM BUDGET EXCEEDED: the merged total $0.60 is over the budget $0.50" in out
    assert run(["merge", *map(str, shards), "--budget", "$0.60"], capsys)[0] == 0


def test_a_shard_that_exceeded_its_budget_fails_the_merge(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = RefusalInfo("t.py::e", "session", D("0.3"), "LLM session budget would be exceeded")
    over = shard(tmp_path, "over", [call("t.py::e", "0.05")], budget=D("0.1"), refusals=[refused])
    status, out, _ = run(["merge", *map(str, shards), str(over), "-o", str(tmp_path / "m.json")], capsys)
    assert status == 1
    assert f"LLM BUDGET EXCEEDED: {over}: its budget was exceeded (calls were refused)" in out
    merged = json.loads((tmp_path / "m.json").read_text())
    assert (merged["budget_exceeded"], merged["refused_calls"], merged["total_cost_usd"]) == (True, 1, 0.65)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def report_with(tmp_path: Path, name: str, **changes: Any) -> Path:
    data = build_report([call("t.py::x", "0.1")], {"t.py::x": "passed"})
    data.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.json", "missing.json: no such file"),
        (lambda p: write(p, "x.json", "{not json"), "x.json: not a JSON report"),
        (lambda p: report_with(p, "noschema.json", schema=None),
         "noschema.json: schema None is not 'pytest-costguard/1'"),
        (lambda p: write(p, "other.json", '{"hello": 1}'),
         "other.json: not a pytest-costguard report (no schema field)"),
        (lambda p: report_with(p, "v2.json", schema="pytest-costguard/2"),
         "v2.json: schema 'pytest-costguard/2' is not 'pytest-costguard/1'"),
        (lambda p: report_with(p, "eur.json", currency="EUR"), "eur.json: currency 'EUR' is not USD"),
        (lambda p: report_with(p, "bad.json", total_cost_usd="lots"), "bad.json: malformed report"),
    ],
    ids=["missing", "not-json", "null-schema", "foreign-json", "schema-version", "currency", "malformed"],
)
def test_bad_input_is_refused_with_exit_2_and_one_line(
    shards: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    status, out, err = run(["merge", str(shards[0]), str(make(tmp_path))], capsys)
    assert status == 2
    assert message in err
    assert err.startswith("costguard: error: ") and err.count("\n") == 1
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "abc"], "--budget: 'abc' is not a dollar amount"),
        (["--budget", "-1"], "--budget: '-1' is negative"),
        (["--budget", "nan"], "--budget: 'nan' is not a dollar amount"),
        (["-o", "merged.txt"], "-o: 'merged.txt' must end in .json or .md or .markdown"),
    ],
)
def test_bad_options_are_refused_with_exit_2(
    shards: list[Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, _, err = run(["merge", *map(str, shards), *args], capsys)
    assert (status, message in err) == (2, True), err


def test_reports_in_different_currencies_are_not_summed() -> None:
    usd = build_report([call("t.py::x", "0.1")], {})
    eur = {**usd, "currency": "EUR"}
    with pytest.raises(ReportError, match=r"different currencies: 'USD' \(a.json\), 'EUR' \(b.json\)"):
        merge_reports([usd, eur], sources=["a.json", "b.json"])


def test_the_costguard_command_merges(shards: list[Path], tmp_path: Path) -> None:
    command = Path(sys.executable).with_name("costguard")
    done = subprocess.run(
        [str(command), "merge", *map(str, shards), "--budget", "0.1"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "over the budget $0.10" in done.stdout
    done = subprocess.run([str(command), "merge"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "the following arguments are required: REPORT" in done.stderr


def test_the_same_report_given_twice_is_refused(shards: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["merge", str(shards[0]), str(shards[1]), str(shards[0])], capsys)
    assert status == 2 and out == ""
    assert f"{shards[0]} and {shards[0]} are the same report" in err
    copy = shards[0].with_name("copy.json")
    copy.write_bytes(shards[0].read_bytes())
    status, _, err = run(["merge", str(shards[0]), str(copy)], capsys)
    assert status == 2 and "the same report" in err  # a copy under another name counts twice just the same


def test_costguard_version_names_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    status, out, _ = run(["--version"], capsys)
    assert (status, out) == (0, f"costguard {version('pytest-costguard')}\n")


def test_output_piped_into_a_reader_that_stops_early_is_quiet(shards: list[Path]) -> None:
    # The reader closes its end before the writer has started, so every write meets a closed pipe.
    command = f"{sys.executable} -m pytest_costguard.cli report {shards[0]} | (exec 0<&-; sleep 2)"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.stderr == ""
    assert done.returncode == 141  # as a writer killed by SIGPIPE, the status shells expect
