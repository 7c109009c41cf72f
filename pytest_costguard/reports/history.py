"""Cost history: one JSON line per run appended to a file, read back as a trend.

Each line holds the run's time (UTC), its git commit and branch when git knows them, the total, the cost by
model and the cost of each test that made calls. Appends take an exclusive lock (`fcntl.flock` on POSIX), so
concurrent runs (CI jobs sharing a cache, `costguard merge` of shards) never interleave their lines. A line
that cannot be read (a run killed mid-write, a hand edit) is skipped with a warning naming the file and line.

No pytest import: the plugin and `costguard history` / `costguard merge` share it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..domain.money import MoneyError, format_usd, usd_from_json
from .model import calls_total

__all__ = ["HISTORY_SCHEMA", "HistoryError", "append_history", "git_revision", "history_entry", "read_history",
           "trend_lines"]

HISTORY_SCHEMA = "pytest-costguard-history/1"
GIT_TIMEOUT = 2.0
"""Seconds to wait for `git rev-parse`: a slow or hung git must not hold up the end of a run."""


class HistoryError(ValueError):
    """A history file that cannot be read at all (missing, unreadable)."""


def git_revision(cwd: str | os.PathLike[str] | None = None) -> tuple[str | None, str | None]:
    """Return (commit, branch) of the checkout at `cwd`, or None for what git cannot tell (or is missing)."""

    def rev_parse(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "rev-parse", *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        out = done.stdout.strip()
        return out if done.returncode == 0 and out else None

    commit = rev_parse("HEAD")
    if commit is None:
        return None, None
    branch = rev_parse("--abbrev-ref", "HEAD")
    if branch == "HEAD":  # detached, as CI checkouts often are: the CI may say which branch it built
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or None
    return commit, branch


def history_entry(
    report: Mapping[str, Any],
    *,
    now: datetime | None = None,
    revision: tuple[str | None, str | None] = (None, None),
) -> dict[str, Any]:
    """Return the history line of a run from its JSON report."""
    commit, branch = revision
    tests = {t["nodeid"]: t["cost_usd"] for t in report["tests"] if t.get("calls")}
    session = report.get("session", {})
    if session.get("calls"):
        tests["(outside tests)"] = session["cost_usd"]
    entry: dict[str, Any] = {
        "schema": HISTORY_SCHEMA,
        "time": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "branch": branch,
        "total_usd": report["total_cost_usd"],
        "budget_usd": report.get("budget_usd"),
        "calls": calls_total(report),
        "refused_calls": report.get("refused_calls", 0),
        "by_model": {model: totals["cost_usd"] for model, totals in report.get("by_model", {}).items()},
        "tests": tests,
    }
    if report.get("backend"):
        entry["backend"] = report["backend"]
    return entry


def _locked_append(fh: Any, line: bytes) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: appends of one write each, unlocked
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    try:
        # A run killed mid-write leaves a line without its newline: start on a fresh line, so only that
        # line is lost, not this one too.
        end = fh.seek(0, os.SEEK_END)
        if end:
            fh.seek(end - 1)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_history(path: str | os.PathLike[str], entry: Mapping[str, Any]) -> None:
    """Append one run's line to a history file (created with its folder when missing), under an exclusive lock."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
    with open(target, "a+b") as fh:
        _locked_append(fh, line)


def _valid(entry: Any) -> str | None:
    """Return why a parsed line is not a history entry (None when it is one)."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("schema") != HISTORY_SCHEMA:
        return f"schema {entry.get('schema')!r} is not {HISTORY_SCHEMA!r}"
    try:
        usd_from_json(entry.get("total_usd"))
        tests = entry.get("tests", {})
        if not isinstance(tests, dict):
            return "'tests' is not an object"
        for value in tests.values():
            usd_from_json(value)
    except MoneyError as exc:
        return f"an amount is not a number ({exc})"
    if not isinstance(entry.get("time"), str):
        return "no 'time'"
    return None


def read_history(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a history file: its entries, oldest first, and a warning for each line skipped."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such file") from None
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    entries: list[dict[str, Any]] = []
    warnings: list[str] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            warnings.append(f"{path} line {number}: skipped, not JSON ({exc})")
            continue
        problem = _valid(entry)
        if problem is not None:
            warnings.append(f"{path} line {number}: skipped, {problem}")
            continue
        entries.append(entry)
    return entries, warnings


def _change(before: Decimal, after: Decimal) -> str:
    delta = after - before
    text = ("+" if delta >= 0 else "") + format_usd(delta)
    if before:
        text += f", {delta * 100 / before:+.1f}%"
    return text


def trend_lines(entries: Sequence[Mapping[str, Any]], *, last: int = 10, top: int = 5) -> list[str]:
    """Render the trend of the last runs as plain lines: each run's total and change, then the top tests."""
    runs = list(entries)[-last:]
    if not runs:
        return ["no runs in the history"]
    out = [f"last {len(runs)} of {len(entries)} run(s):"]
    previous: Decimal | None = None
    for run in runs:
        total = usd_from_json(run.get("total_usd"))
        where = " ".join(
            part for part in (str(run.get("commit") or "")[:10], str(run.get("branch") or "")) if part
        )
        change = "" if previous is None else f"  ({_change(previous, total)})"
        out.append(f"  {run.get('time', '?'):<25}  {where:<30}  {format_usd(total):>10}{change}")
        previous = total
    latest = runs[-1].get("tests", {})
    tests = sorted(latest, key=lambda n: (-usd_from_json(latest[n]), n))[:top]
    if tests:
        out.append("most expensive tests of the latest run, over the same runs (oldest first):")
        for nodeid in tests:
            costs = [format_usd(r.get("tests", {}).get(nodeid, 0)) for r in runs]
            out.append(f"  {nodeid}: {' -> '.join(costs)}")
    return out

