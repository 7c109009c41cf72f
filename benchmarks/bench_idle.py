"""Idle cost: what the plugin adds to a suite that makes no LLM call.

A generated 300-test suite (plain asserts, no fixture of ours, no LLM call) is run with the plugin installed
(its default configuration: nothing on the command line) and with `-p no:costguard`, alternating the two
and reversing the order every round; the figure is the ratio of the median wall times (process start to
exit, as a CI job sees it).

pytest rewrites the asserts of every module of a `pytest11` plugin package, and caches the result next to the
normal bytecode. Two figures, so both situations a CI job can be in are measured:

* `idle.pytest`: bytecode caches warm (a developer machine, a CI job with a warm virtualenv).
* `idle.pytest_no_rewrite_cache`: the plugin's rewritten bytecode is not cached and cannot be written
  (`PYTHONDONTWRITEBYTECODE=1`, common in Docker images, or a read-only site-packages): every run parses,
  rewrites and compiles each plugin module it imports. Normal bytecode stays cached, as in such an image.

Both use a private `PYTHONPYCACHEPREFIX`, so the figures do not depend on the state of the checkout's
`__pycache__` directories, and nothing is written into the source tree. A discarded warm-up run fills it.

Run: python benchmarks/bench_idle.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _bench import (
    PytestRun,
    figure,
    fmt_time,
    make_parser,
    median,
    paired_ratio,
    pytest_env,
    run_pytest,
    time_alternating,
    write_files,
)

TESTS = 300
QUICK_TESTS = 30


def suite(tests: int) -> dict[str, str]:
    """Return the files of a suite of `tests` tests spread over 10 modules, as real suites are."""
    per_module = tests // 10
    body = "\n\n".join(f"def test_case_{i}():\n    assert sum(range({i % 7 + 1})) >= 0" for i in range(per_module))
    files = {"pytest.ini": "[pytest]\n"}
    files.update({f"test_module_{m}.py": body + "\n" for m in range(10)})
    return files


def measure(root: Path, env: dict[str, str], rounds: int, tests: int) -> dict[str, list[PytestRun]]:
    base = ["-q", "-p", "no:cacheprovider"]

    def variant(extra: list[str]) -> Callable[[], PytestRun]:
        def run() -> PytestRun:
            done = run_pytest([*base, *extra], root, env=env)
            # Proves every run ran the whole suite (a collection error would be fast, and wrong).
            assert f"{tests} passed" in done.result.stdout, done.result.stdout[-500:]
            return done

        return run

    return time_alternating({"without": variant(["-p", "no:costguard"]), "with": variant([])}, rounds, warmup=0)


def report(key: str, label: str, runs: dict[str, list[PytestRun]], tests: int, quick: bool) -> None:
    wall = {name: [r.wall for r in done] for name, done in runs.items()}
    cpu = {name: [r.cpu for r in done] for name, done in runs.items()}
    without, with_plugin = median(wall["without"]), median(wall["with"])
    ratio = paired_ratio(wall["with"], wall["without"])
    figure(
        key,
        f"{tests} tests, no LLM calls, {label}: with plugin {fmt_time(with_plugin)} vs -p no:costguard "
        f"{fmt_time(without)}: wall ratio {ratio:.3f} (median of {len(wall['with'])} back-to-back pairs; "
        f"ratio of medians {with_plugin / without:.3f}, {fmt_time(with_plugin - without)} more per run); "
        f"CPU-time ratio {paired_ratio(cpu['with'], cpu['without']):.3f} "
        f"({fmt_time(median(cpu['with']))} vs {fmt_time(median(cpu['without']))} CPU)",
        met=ratio <= 1.03,
        target="<= 1.03",
        quick=quick,
    )


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    quick: bool = args.quick
    rounds = 1 if quick else 15
    tests = QUICK_TESTS if quick else TESTS
    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        root, cache = Path(tmp) / "suite", Path(tmp) / "pycache"
        write_files(root, suite(tests))
        warm = pytest_env({"PYTHONPYCACHEPREFIX": str(cache)})
        # Fill the private cache: normal bytecode of everything both sides import, the suite's rewritten
        # tests, and the plugin's rewritten modules. A run with the plugin imports all a run without it does,
        # so in quick mode (a smoke test, where each process start counts) it alone fills the cache.
        for extra in [[]] if quick else [["-p", "no:costguard"], []]:
            run_pytest(["-q", "-p", "no:cacheprovider", *extra], root, env=warm)
        # From now on nothing is written: every run sees the same caches.
        frozen = {**warm, "PYTHONDONTWRITEBYTECODE": "1"}
        report("idle.pytest", "bytecode cached", measure(root, frozen, rounds, tests), tests, quick)

        # Drop only the plugin's rewritten bytecode (pytest names it "<module>.cpython-XY-pytest-N.pyc").
        dropped = [pyc for pyc in cache.rglob("*-pytest-*.pyc") if "pytest_costguard" in pyc.parts]
        assert dropped, f"no rewritten plugin bytecode under {cache}: pytest no longer rewrites the plugin?"
        for pyc in dropped:
            pyc.unlink()
        report(
            "idle.pytest_no_rewrite_cache",
            f"plugin's assert-rewritten bytecode not cached ({len(dropped)} modules rewritten per run)",
            measure(root, frozen, rounds, tests),
            tests,
            quick,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
