"""Shared helpers of the benchmark scripts: arguments, medians, figure lines and pytest subprocess runs.

Every benchmark prints its figures as a ratio against a baseline measured in the same run, because the
machines these run on (CI runners, shared 2-core VMs) are too noisy for absolute times to compare across
runs. Targets are printed as information ("target met" / "target missed"); a script exits non-zero only when
it could not measure (a crash), never because a figure missed its target.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "REPO",
    "PytestRun",
    "figure",
    "fmt_time",
    "make_parser",
    "median",
    "paired_ratio",
    "pytest_env",
    "run_pytest",
    "time_alternating",
    "write_files",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
"""The project checkout (benchmarks/ lives at its top)."""


def make_parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the option every benchmark takes (`--quick`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode for CI: tiny iteration counts, figures too noisy to judge a target by",
    )
    return parser


def median(values: Sequence[float]) -> float:
    """Return the median (the benchmarks' summary statistic: robust to a noisy neighbour's bursts)."""
    return statistics.median(values)


def fmt_time(seconds: float) -> str:
    """Format a duration (or a difference of two: it may be negative) in a unit that keeps it readable."""
    if seconds < 0:
        return "-" + fmt_time(-seconds)
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e9:.0f} ns"


def figure(key: str, text: str, *, met: bool | None = None, target: str | None = None, quick: bool = False) -> None:
    """Print one figure line: `key: text [target ...: target met|missed]`.

    The key is stable (`tests/test_benchmarks_smoke.py` looks for it); the verdict is information only.
    """
    line = f"{key}: {text}"
    if target is not None:
        line += f" [target {target}: {'target met' if met else 'target missed'}"
        if quick:
            # Tiny counts on a noisy runner: the verdict shows the plumbing works, not the performance.
            line += ", quick mode: indicative only"
        line += "]"
    print(line, flush=True)


def time_alternating(variants: Mapping[str, Callable[[], T]], rounds: int, *, warmup: int = 1) -> dict[str, list[T]]:
    """Run each variant `rounds` times, alternating between them and reversing the order every round.

    Each callable returns what it measured (a duration, or a `PytestRun`). Alternating spreads a noisy
    neighbour's bursts and any slow drift (CPU frequency, page cache) over all variants instead of charging
    them to whichever ran last.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[T]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = names if round_index % 2 == 0 else list(reversed(names))
        for name in order:
            times[name].append(variants[name]())
    return times


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write a generated test suite: `{relative path: source}` (sources are dedented)."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")


def pytest_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for an inner pytest run, free of the outer run's settings."""
    env = dict(os.environ)
    # An outer pytest (the smoke test, a developer's shell) must not change what the inner run measures.
    for name in (
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_CURRENT_TEST",
        "PYTEST_XDIST_WORKER",
        "GITHUB_STEP_SUMMARY",
    ):
        env.pop(name, None)
    # Generated suites are run several times: the first (discarded) run compiles them, the rest reuse it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # The `peers` extra (bench_peers.py) brings logfire, whose two pytest11 plugins load in every pytest run and
    # add ~0.3-0.7 s to each side of a comparison here, diluting its ratio: the inner runs leave them out, so a
    # figure means the same with or without the extra. `-p no:NAME` of a plugin that is not installed is a no-op.
    env["PYTEST_ADDOPTS"] = "-p no:logfire -p no:pytest_logfire"
    # Import the plugin from the checkout through sys.path, as from a regular install's site-packages. An
    # editable install resolves it through a meta-path finder instead, which pytest's assertion rewriter
    # does not see: the plugin would then skip the rewriting every installed user's run pays for.
    # Last, so that a PYTHONPATH given to the benchmark (a patched copy under test) still wins.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(REPO)) if p)
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class PytestRun:
    """One `python -m pytest` subprocess: how long it took and what it printed."""

    wall: float
    """Seconds from process start to exit, as a CI job sees it."""
    cpu: float
    """User + system CPU seconds of the process: much less sensitive than wall time to other jobs' load."""
    result: subprocess.CompletedProcess[str]
    """Its exit code and output."""


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows: no rusage; the CPU figures read nan there
        return math.nan
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(
    args: Sequence[str], cwd: Path, *, env: Mapping[str, str] | None = None, check: bool = True
) -> PytestRun:
    """Run `python -m pytest ARGS` in `cwd` and time it."""
    command = [sys.executable, "-m", "pytest", *args]
    cpu_before = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, env=dict(env) if env is not None else pytest_env(), capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    # RUSAGE_CHILDREN grows by exactly this child's usage: it is the only child reaped meanwhile.
    cpu = _children_cpu() - cpu_before
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode} in {cwd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return PytestRun(elapsed, cpu, result)


def paired_ratio(values: Sequence[float], baselines: Sequence[float]) -> float:
    """Return the median of value/baseline over rounds: each round's pair ran back to back, under the same load."""
    return median([v / b for v, b in zip(values, baselines, strict=True)])
