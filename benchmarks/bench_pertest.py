"""Per-test bookkeeping: a suite of N tests run with metering on against the same suite with the plugin off.

Two generated suites of N tests (2,000 by default), each run as `pytest --llm-budget 1000` (metering on) and
`pytest -p no:costguard`, alternating, whole-process CPU time (user + system, from `getrusage`; much less
sensitive to other jobs than wall time), medians of the per-round ratios:

* `pertest.one_call`: every test makes one SDK call to an `httpx2.MockTransport`: the per-test hooks plus one
  call's metering.
* `pertest.no_call`: no test makes a call: what the per-test hooks (scope, outcome, JUnit properties, budget
  verdict) cost by themselves, which should be close to nothing.

`--reference DIR` adds a third variant: the plugin imported from another checkout (DIR on PYTHONPATH), for a
before/after comparison measured side by side in the same run.

Run: python benchmarks/bench_pertest.py [--quick] [--tests N] [--rounds R] [--reference DIR]
"""

from __future__ import annotations

import json
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
from bench_overhead import CONFTEST, MESSAGES, MODEL


def suite(root: Path, tests: int) -> None:
    write_files(
        root,
        {
            "pytest.ini": "[pytest]\n",
            "conftest.py": CONFTEST,
            "test_one_call.py": f"""
                import pytest


                @pytest.mark.parametrize("i", range({tests}))
                def test_one_call(client, i):
                    message = client.messages.create(model={MODEL!r}, max_tokens=256, messages={MESSAGES!r})
                    assert message.usage.output_tokens == 12
            """,
            "test_no_call.py": f"""
                import pytest


                @pytest.mark.parametrize("i", range({tests}))
                def test_no_call(i):
                    assert i >= 0
            """,
        },
    )


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--tests", type=int, default=2000, help="tests in each suite (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="back-to-back rounds (default 5)")
    parser.add_argument("--reference", help="another checkout whose plugin is measured side by side")
    args = parser.parse_args()
    quick = args.quick
    tests = 20 if quick else args.tests
    rounds = 1 if quick else args.rounds
    reference = Path(args.reference).resolve() if args.reference else None
    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        root = Path(tmp)
        suite(root, tests)
        base = ["-q", "-p", "no:cacheprovider"]
        report = root / "report.json"
        # Compiles the suite, and proves the metered runs meter every call of the one-call suite.
        run_pytest([*base, "--llm-budget", "1000", f"--llm-report={report}", "test_one_call.py"], root)
        calls = len(json.loads(report.read_text())["calls"])
        assert calls == tests, f"metered {calls} of {tests} calls"

        for key, path, what in (
            ("pertest.one_call", "test_one_call.py", "one call each"),
            ("pertest.no_call", "test_no_call.py", "no call"),
        ):

            def variant(
                extra: list[str], env: dict[str, str] | None = None, path: str = path
            ) -> Callable[[], PytestRun]:
                return lambda: run_pytest([*base, *extra, path], root, env=env)

            variants = {
                "bare": variant(["-p", "no:costguard"]),
                "metered": variant(["--llm-budget", "1000"]),
            }
            if reference is not None:
                variants["reference"] = variant(["--llm-budget", "1000"], pytest_env({"PYTHONPATH": str(reference)}))
            runs = time_alternating(variants, rounds, warmup=0 if quick else 1)
            cpu = {name: [r.cpu for r in done] for name, done in runs.items()}
            ratio = paired_ratio(cpu["metered"], cpu["bare"])
            per_test = (median(cpu["metered"]) - median(cpu["bare"])) / tests
            text = (
                f"{tests} tests, {what}: CPU with metering on {fmt_time(median(cpu['metered']))} vs -p no:costguard "
                f"{fmt_time(median(cpu['bare']))}: CPU ratio {ratio:.3f} ({fmt_time(per_test)} more per test, "
                f"startup included; median of {rounds} back-to-back pairs)"
            )
            if reference is not None:
                text += (
                    f"; reference checkout {reference}: CPU ratio {paired_ratio(cpu['reference'], cpu['bare']):.3f} "
                    f"({fmt_time((median(cpu['reference']) - median(cpu['bare'])) / tests)} more per test)"
                )
            limit = 1.05 if key == "pertest.one_call" else 1.03
            figure(key, text, met=ratio <= limit, target=f"CPU ratio <= {limit}", quick=quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
