"""The benchmarks keep working: `benchmarks/run_all.py --quick` runs every script and prints every figure.

A smoke test, not a timed test: it asserts that each script exits 0 and prints each figure line (with its
"target met"/"target missed" verdict where it has a target), never what the figures are.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about 45 s: .ci/run runs it as a step of its own

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# Figure key -> whether its line carries a target verdict.
FIGURES = {
    "pricing.pricebook": True,
    "pricing.variants": False,
    "tracking.costtracker": True,
    "tracking.seed_measured": False,
    "ledger.inmemory": True,
    "ledger.sqlite": True,
    "ledger.sqlite_floor_unsynced": False,
    "ledger.sqlite_tail": True,
    "ledger.sqlite_tail_cpu": False,
    "ledger.contention": True,
    **({"ledger.redis": False} if shutil.which("redis-server") else {}),
    "report.build_and_write": True,
    "report.html": True,
    "overhead.inprocess": True,
    "overhead.inprocess.sdk_noop_middleware": False,
    "overhead.inprocess.passthrough": False,
    "overhead.subprocess": True,
    "overhead.pytest": True,
    "idle.pytest": True,
    "idle.pytest_no_rewrite_cache": True,
    "money.saving": False,
    "money.breakdown": False,
    "stream.create": True,
    "stream.helper": True,
    "memory.per_call": True,
    "memory.past_limit": True,
}
# bench_peers.py runs only where a peer package is installed (run_all.py skips it otherwise): its figures.
PEER_FIGURES = {"peers.costguard": True, "peers.tracing_off": False, "peers.ranking": False}
# One line each, a ratio or why there is none ("not installed", "does not work here: ...", skipped when quick).
PEER_LINES = (
    "peers.anthropic_otel",
    "peers.otel_instrumentation_anthropic",
    "peers.logfire",
    "peers.litellm_completion_cost",
)
OPTIONAL_SCRIPTS = {"bench_peers.py"}


def test_run_all_quick_runs_every_benchmark_and_prints_every_figure() -> None:
    # One test, one run: split into several tests, pytest-xdist could run the whole thing once per worker.
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout
    assert done.returncode == 0, output[-4000:] + done.stderr[-4000:]
    for script in sorted(p.name for p in BENCHMARKS.glob("bench_*.py")):
        skipped = script in OPTIONAL_SCRIPTS and f"== {script}: skipped: " in output
        assert skipped or f"== {script}: exit 0" in output, f"{script} did not run or failed"
    figures = dict(FIGURES)
    problems = []
    if "== bench_peers.py: exit 0" in output:
        figures.update(PEER_FIGURES)
        for key in PEER_LINES:
            if len([line for line in output.splitlines() if line.startswith(f"{key}: ")]) != 1:
                problems.append(f"{key}: expected one line (a figure or why there is none)")
    for key, has_target in figures.items():
        lines = [line for line in output.splitlines() if line.startswith(f"{key}: ")]
        if len(lines) != 1:
            problems.append(f"{key}: expected one figure line, got {len(lines)}")
        elif "ratio" not in lines[0]:
            problems.append(f"{key}: no ratio in {lines[0]!r}")
        elif has_target and "target met" not in lines[0] and "target missed" not in lines[0]:
            problems.append(f"{key}: no verdict in {lines[0]!r}")
    assert not problems, "\n".join(problems) + "\n" + output[-3000:]
