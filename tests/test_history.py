"""The cost history: one JSON line per run, appended under a lock, read back with bad lines skipped."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pytest_costguard import cli
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.reports import history
from pytest_costguard.reports.history import (
    HistoryError,
    append_history,
    git_revision,
    history_entry,
    read_history,
    trend_lines,
)
from pytest_costguard.reports.model import build_report


def report(*costs: str) -> dict[str, Any]:
    records = [
        CostRecord(model="claude-haiku-4-5", input_tokens=10, output_tokens=1, cost_usd=Decimal(c), tag=f"t.py::t{i}")
        for i, c in enumerate(costs)
    ]
    return build_report(records, {r.tag: "passed" for r in records if r.tag} | {"t.py::idle": "passed"})


def test_an_entry_holds_time_revision_total_models_and_the_tests_that_spent() -> None:
    when = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    entry = history_entry(report("0.1", "0.2"), now=when, revision=("abc123", "main"))
    assert entry["time"] == "2026-11-30T12:00:00+00:00"
    assert (entry["commit"], entry["branch"]) == ("abc123", "main")
    assert entry["total_usd"] == pytest.approx(0.3)
    assert entry["by_model"] == {"claude-haiku-4-5": pytest.approx(0.3)}
    assert entry["tests"] == {"t.py::t0": 0.1, "t.py::t1": 0.2}  # the idle test is left out


def test_appended_runs_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "h.jsonl"
    for cost in ("0.1", "0.2", "0.4"):
        append_history(path, history_entry(report(cost)))
    entries, warnings = read_history(path)
    assert warnings == []
    assert [e["total_usd"] for e in entries] == [0.1, 0.2, 0.4]


def test_bad_lines_are_skipped_with_the_file_and_line_named(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    append_history(path, history_entry(report("0.1")))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("not json\n[1, 2]\n")
        fh.write(json.dumps({"schema": history.HISTORY_SCHEMA, "time": "x", "total_usd": "lots"}) + "\n")
    append_history(path, history_entry(report("0.3")))
    entries, warnings = read_history(path)
    assert [e["total_usd"] for e in entries] == [0.1, 0.3]
    assert [w.split(": skipped")[0] for w in warnings] == [f"{path} line {n}" for n in (2, 3, 4)]


def test_a_line_cut_short_by_a_killed_run_costs_only_that_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    append_history(path, history_entry(report("0.1")))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"schema": "pytest-costguard-hist')  # no newline: the writer died
    append_history(path, history_entry(report("0.2")))
    entries, warnings = read_history(path)
    assert [e["total_usd"] for e in entries] == [0.1, 0.2]
    assert len(warnings) == 1 and "line 2" in warnings[0]


def test_a_missing_history_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"nope\.jsonl: no such file"):
        read_history(tmp_path / "nope.jsonl")


def _append_many(path: str, worker: int) -> None:
    big = report(*(["0.001"] * 300))  # lines of ~15 kB: far beyond what one unlocked write keeps whole
    for _ in range(20):
        append_history(path, {**history_entry(big), "worker": worker})


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "h.jsonl")
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(path, w)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    entries, warnings = read_history(path)
    assert warnings == []
    assert sorted(e["worker"] for e in entries) == sorted(list(range(4)) * 20)


def test_git_missing_or_hung_gives_no_revision_and_no_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    assert git_revision(tmp_path) == (None, None)

    def hang(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(cmd="git", timeout=kwargs.get("timeout", 0))

    monkeypatch.setattr(history.subprocess, "run", hang)
    assert git_revision(tmp_path) == (None, None)


def test_git_names_the_commit_and_branch_of_a_checkout(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    try:
        git("init", "-q", "-b", "trunk")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    assert git_revision(tmp_path) == (git("rev-parse", "HEAD").strip(), "trunk")


def test_the_trend_shows_each_run_and_its_change_and_the_top_tests() -> None:
    entries = [history_entry(report(c, "0.01"), revision=("0123456789abcdef", "main")) for c in ("0.1", "0.3")]
    lines = trend_lines(entries)
    assert lines[0] == "last 2 of 2 run(s):"
    assert "0123456789 main" in lines[1] and lines[1].rstrip().endswith("$0.11")
    assert lines[2].rstrip().endswith("$0.31  (+$0.20, +181.8%)")
    assert "  t.py::t0: $0.10 -> $0.30" in lines


def test_costguard_history_prints_the_trend_and_renders_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.jsonl"
    for cost in ("0.1", "0.2", "0.3"):
        append_history(path, history_entry(report(cost)))
    path.write_text(path.read_text() + "garbage\n")
    assert cli.main(["history", str(path), "--html", str(tmp_path / "h.html")]) == 0
    out, err = capsys.readouterr()
    assert "last 3 of 3 run(s):" in out
    assert f"costguard: warning: {path} line 4: skipped, not JSON" in err
    assert 'data-runs="3"' in (tmp_path / "h.html").read_text(encoding="utf-8")
    assert cli.main(["history", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
