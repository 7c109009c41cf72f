"""Instruction counts: the per-call and idle overheads measured without timing noise (needs valgrind).

The wall-clock figures of `bench_overhead.py` and `bench_idle.py` move by several points from run to run on a
shared machine. Counting the instructions the CPU executes (valgrind's cachegrind, which simulates the CPU) gives
the same figure on every run of the same code, whatever else the machine is doing. It is a cross-check, not the
target: the targets are about time, and an instruction is not a fixed amount of time (cache misses are counted
too, as simulated first-level data misses).

* `instructions.per_call`: processes that make 50 and 250 `messages.create` calls over `httpx2.MockTransport`,
  as in `bench_overhead.py`; the difference divided by 200 is the count per call, start-up excluded. Bare client
  (pytest_costguard never imported), a client with a do-nothing SDK middleware, and a client metered by
  `install(CostGuard(...))` under a budget.
* `instructions.stream_call`: the same for `messages.create(stream=True)` over `bench_stream.py`'s 21-event
  stream, each read to its end (10 and 60 calls, difference / 50): bare, a do-nothing middleware, metered.
* `instructions.idle`: the 300-test idle suite of `bench_idle.py`, `pytest` against `pytest -p no:costguard`,
  bytecode caches warm.

Each valgrind run takes one to two minutes; two run at a time. Without valgrind on PATH, or with --quick, the
figures are reported as not measured and the script exits 0.

Run: python benchmarks/bench_instructions.py
"""

from __future__ import annotations

import argparse
import gc
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from _bench import figure, make_parser, pytest_env, run_pytest, write_files

HERE = Path(__file__).resolve().parent
SMALL, LARGE = 50, 250


def child(mode: str, calls: int) -> None:
    """Make `calls` SDK calls in this process (after a warm-up), bare, through a no-op middleware, or metered.

    A mode ending in `_stream` makes streamed calls (`bench_stream.py`'s client and loop) instead.
    """
    import anthropic

    if mode.endswith("_stream"):
        from bench_stream import create_block as call_block
        from bench_stream import make_client

        mode = mode.removesuffix("_stream")
    else:
        from bench_overhead import call_block, make_client  # type: ignore[assignment]

    if mode == "metered":
        from pytest_costguard.metering.guard import CostGuard, GuardConfig
        from pytest_costguard.metering.ledger import InMemoryLedger
        from pytest_costguard.providers import anthropic as provider
        from pytest_costguard.providers.anthropic.patch import middleware_chain

        provider.install(CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1000))))
        client = make_client()
        # `client.middleware` leaves the shared middleware out (user code reads and extends it): ask the chain.
        assert middleware_chain(client), "the metered client carries no middleware"
    elif mode == "noop":

        class DoNothing(anthropic.Middleware):
            def handle(self, request: object, call_next: object) -> object:
                return call_next(request)  # type: ignore[operator]

        client = make_client(middleware=[DoNothing()])
    else:
        client = make_client()
    call_block(client, 20)()  # first-call work (price lookup, SDK caches) is start-up, not per call
    # A full collection of the start-up heap (some 10M instructions) lands wherever allocation counts put it:
    # inside one run's measured calls and not the other's, it would move the per-call figure by 2%. Collect and
    # freeze the start-up heap first, so both runs measure the calls from the same collector state.
    gc.collect()
    gc.freeze()
    call_block(client, calls)()
    if mode != "metered":
        assert "pytest_costguard" not in sys.modules


def count(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Run `command` under cachegrind and return the instructions it executed."""
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind {' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return int(found.group(1).replace(",", ""))


def counts_per_call(pool: ThreadPoolExecutor, suffix: str, small: int, large: int) -> dict[str, float]:
    """Instructions per call of each child mode (`bare`, `noop`, `metered`, plus `suffix`): (large - small) runs."""
    env = pytest_env({"PYTHONHASHSEED": "0"})
    modes = ("bare", "noop", "metered")
    # Fill the bytecode caches first (one call per mode, not counted). Otherwise the first child to import a
    # module changed since its cache was written compiles it, and only that child counts the compilation: one
    # run of a pair paying tens of millions of instructions the other does not is what once put the metered
    # per-call count below the bare one (0.722).
    for mode in modes:
        subprocess.run([sys.executable, str(Path(__file__)), "--child", mode + suffix, "1"], env=env, check=True)
    jobs = {
        (mode, n): pool.submit(count, [sys.executable, str(Path(__file__)), "--child", mode + suffix, str(n)], env=env)
        for mode in modes
        for n in (small, large)
    }
    return {mode: (jobs[mode, large].result() - jobs[mode, small].result()) / (large - small) for mode in modes}


def per_call(pool: ThreadPoolExecutor) -> None:
    per = counts_per_call(pool, "", SMALL, LARGE)
    figure(
        "instructions.per_call",
        f"metered {per['metered']:,.0f} vs bare {per['bare']:,.0f} instructions/call: "
        f"ratio {per['metered'] / per['bare']:.3f}; do-nothing SDK middleware {per['noop'] / per['bare']:.3f} "
        f"(cachegrind, ({LARGE} - {SMALL} calls) / {LARGE - SMALL}; the same on every run of the same code)",
    )


def stream_call(pool: ThreadPoolExecutor) -> None:
    small, large = 10, 60
    per = counts_per_call(pool, "_stream", small, large)
    figure(
        "instructions.stream_call",
        f"create(stream=True), 21 SSE events: metered {per['metered']:,.0f} vs bare {per['bare']:,.0f} "
        f"instructions/call: ratio {per['metered'] / per['bare']:.3f}; do-nothing SDK middleware "
        f"{per['noop'] / per['bare']:.3f} (cachegrind, ({large} - {small} calls) / {large - small})",
    )


def idle(pool: ThreadPoolExecutor) -> None:
    from bench_idle import TESTS, suite

    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        root = Path(tmp)
        write_files(root, suite(TESTS))
        env = pytest_env({"PYTHONPYCACHEPREFIX": str(root / "pycache"), "PYTHONHASHSEED": "0"})
        base = ["-q", "-p", "no:cacheprovider"]
        variants = {"with": base, "without": [*base, "-p", "no:costguard"]}
        for args in variants.values():
            run_pytest(args, root, env=env)  # fill the bytecode caches first
        jobs = {
            name: pool.submit(count, [sys.executable, "-m", "pytest", *args], cwd=root, env=env)
            for name, args in variants.items()
        }
        with_plugin, without = jobs["with"].result(), jobs["without"].result()
    figure(
        "instructions.idle",
        f"{TESTS} tests, no LLM calls: with plugin {with_plugin:,} vs -p no:costguard {without:,} instructions: "
        f"ratio {with_plugin / without:.3f} (cachegrind, whole process, bytecode cached)",
    )


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    why = "quick mode" if args.quick else None if shutil.which("valgrind") else "valgrind not found on PATH"
    if why is not None:
        for key in ("instructions.per_call", "instructions.stream_call", "instructions.idle"):
            figure(key, f"not measured ({why}); no ratio")
        return 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        per_call(pool)
        stream_call(pool)
        idle(pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
