"""Per-call overhead: an SDK `messages.create` metered under a budget against the same call unmetered.

The call goes through the real `anthropic` SDK to an `httpx2.MockTransport` that answers a canned Messages
response (no network), so what is measured is the SDK's own work plus ours. Three measurements:

1. In process, interleaved (the headline figure). A *bare* client is built before pytest-costguard is
   imported, so it carries no middleware at all: the SDK's fastest path, exactly what an unmetered user gets.
   Then `install(CostGuard(..., InMemoryLedger(limit=1000)))` patches the SDK and a *metered* client is built
   (it carries the shared middleware). Blocks of calls alternate between the clients, reversing the order
   every round, and the figure is the median of the per-round ratios, so drift and a noisy neighbour's bursts
   hit both sides alike. Two informational variants split the cost: a client with a do-nothing SDK
   middleware (what the SDK charges for having any middleware) and the metered client with no guard
   installed (the pass-through cost once the SDK is patched).
2. Across processes (a cross-check of 1): a child that never imports pytest_costguard against a child that
   installs the guard, alternating, medians of their per-call means.
3. Through pytest: a generated suite of N tests each making one call, `pytest --llm-budget 1000` against
   `pytest -p no:costguard`, whole-run wall time alternating, medians. This includes pytest's own per-test
   work and the plugin's fixed startup cost, so its ratio is diluted; the per-call difference is printed too.

Run: python benchmarks/bench_overhead.py [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

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

MODEL = "claude-sonnet-4-6"
RESPONSE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "The quick brown fox jumps over the lazy dog."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 24,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    },
}
MESSAGES = [{"role": "user", "content": "Summarise the ticket: the printer on floor 3 is out of toner again."}]


def make_client(middleware: list[Any] | None = None, **options: Any) -> Any:
    """Build an SDK client whose HTTP transport answers every request with `RESPONSE`, in memory.

    `options` go to the client's constructor (`bench_peers.py` passes the SDK's `open_telemetry` option).
    """
    import anthropic
    import httpx2

    body = json.dumps(RESPONSE).encode()

    def answer(request: Any) -> Any:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    # max_retries=0: a retry would hide a failure as a slow call.
    return anthropic.Anthropic(api_key="bench", http_client=http, max_retries=0, middleware=middleware, **options)


def call_block(client: Any, calls: int, after: Callable[[Any], object] | None = None) -> Callable[[], float]:
    """Return a callable timing `calls` calls on `client`, returning seconds per call.

    `after`, if given, is handed each call's response inside the timed window (`bench_peers.py` prices it).
    """

    def run() -> float:
        create = client.messages.create
        start = time.perf_counter()
        if after is None:
            # The loop stays bare: a test per call would be charged to every variant's figure.
            for _ in range(calls):
                create(model=MODEL, max_tokens=256, messages=MESSAGES)
        else:
            for _ in range(calls):
                after(create(model=MODEL, max_tokens=256, messages=MESSAGES))
        return (time.perf_counter() - start) / calls

    return run


@dataclass(frozen=True)
class Metered:
    """A client metered by pytest-costguard, as `overhead.inprocess` measures it."""

    guard: Any
    """The `CostGuard` (typed loosely: pytest_costguard is imported only once the bare clients exist)."""
    client: Any
    """The client built while the guard was installed: it carries the shared middleware."""
    block: Callable[[], float]
    """Times a block of calls with the guard installed around it (and only around it); seconds per call."""

    def check(self, calls: int) -> None:
        """Fail unless the guard metered exactly `calls` calls and holds no reservation."""
        assert len(self.guard.records) == calls, (len(self.guard.records), calls)
        assert self.guard.ledger.spent > 0 and self.guard.ledger.reserved == 0


def metered_setup(calls: int) -> Metered:
    """Import pytest_costguard, build a guard over `InMemoryLedger(limit=1000)` and a client it meters.

    Build every unmetered client first: the SDK's constructor stays patched once pytest_costguard is
    installed, so a client built later carries the (pass-through) middleware too. The guard is left
    uninstalled: `Metered.block` installs it around its own calls, so other variants run with no guard.
    """
    from pytest_costguard.metering.guard import CostGuard, GuardConfig
    from pytest_costguard.metering.ledger import InMemoryLedger
    from pytest_costguard.providers import anthropic as provider

    provider.uninstall()  # no guard left over from an importer: the pass-through variant must be idle
    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1000)))
    provider.install(guard)
    client = make_client()
    from pytest_costguard.providers.anthropic.patch import middleware_chain

    chain = middleware_chain(client)  # ours included: `client.middleware` leaves it out
    assert [type(m).__name__ for m in chain] == ["CostGuardMiddleware"], chain
    provider.uninstall(guard)
    timed = call_block(client, calls)

    def block() -> float:
        provider.install(guard)
        try:
            return timed()
        finally:
            provider.uninstall(guard)

    return Metered(guard, client, block)


def in_process(quick: bool) -> None:
    import anthropic

    class DoNothing(anthropic.Middleware):
        """The cheapest middleware possible: what the SDK's middleware path costs by itself."""

        def handle(self, request: Any, call_next: Any) -> Any:
            return call_next(request)

    # Built before pytest_costguard is imported: these clients never see the patched constructor.
    bare = make_client()
    sdk_noop = make_client([DoNothing()])
    assert not bare.middleware, "the bare client must carry no middleware"

    # Many short blocks rather than a few long ones: a burst of load then spoils a few pairs, which the median
    # of the paired ratios discards, instead of shifting a long block's mean.
    calls = 20 if quick else 50
    rounds = 3 if quick else 80
    metered = metered_setup(calls)
    # The guard is installed only around its own blocks, so the pass-through variant (same client) runs with none.
    times = time_alternating(
        {
            "bare": call_block(bare, calls),
            "metered": metered.block,
            "sdk_noop": call_block(sdk_noop, calls),
            "passthrough": call_block(metered.client, calls),
        },
        rounds,
    )
    metered.check((rounds + 1) * calls)  # the warm-up round counts too

    bare_t = median(times["bare"])

    def paired(name: str) -> float:
        return median([v / b for v, b in zip(times[name], times["bare"], strict=True)])

    ratio = paired("metered")
    spread = statistics.quantiles([v / b for v, b in zip(times["metered"], times["bare"], strict=True)], n=4)
    figure(
        "overhead.inprocess",
        f"metered {fmt_time(median(times['metered']))}/call vs bare {fmt_time(bare_t)}/call: "
        f"ratio {ratio:.3f} ({fmt_time(median(times['metered']) - bare_t)}/call more; "
        f"median of {rounds} paired blocks of {calls} calls, interquartile {spread[0]:.3f}-{spread[2]:.3f})",
        met=ratio <= 1.10,
        target="<= 1.10, aim 1.05",
        quick=quick,
    )
    figure(
        "overhead.inprocess.sdk_noop_middleware",
        f"{fmt_time(median(times['sdk_noop']))}/call vs bare: ratio {paired('sdk_noop'):.3f} "
        "(the SDK's own cost of running any middleware; info)",
    )
    figure(
        "overhead.inprocess.passthrough",
        f"{fmt_time(median(times['passthrough']))}/call vs bare: ratio {paired('passthrough'):.3f} "
        "(patched SDK, no guard installed; info)",
    )


def child(mode: str, calls: int) -> None:
    """One side of the cross-process comparison: print seconds per call after a warm-up."""
    if mode == "metered":
        from pytest_costguard.metering.guard import CostGuard, GuardConfig
        from pytest_costguard.metering.ledger import InMemoryLedger
        from pytest_costguard.providers import anthropic as provider

        provider.install(CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1000))))
    client = make_client()
    call_block(client, max(calls // 5, 5))()
    per_call = call_block(client, calls)()
    if mode == "bare":
        assert "pytest_costguard" not in sys.modules, "the bare child must never import pytest_costguard"
    else:
        from pytest_costguard.providers.anthropic.patch import middleware_chain

        # `client.middleware` leaves ours out (docs/compat.md): look at the whole chain.
        assert middleware_chain(client), "the metered child's client carries no middleware"
    print(per_call)


def across_processes(quick: bool) -> None:
    calls = 30 if quick else 1000
    rounds = 1 if quick else 7

    def variant(mode: str) -> Callable[[], float]:
        def run() -> float:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--calls", str(calls)],
                capture_output=True,
                text=True,
                check=True,
                env=pytest_env(),
            )
            return float(out.stdout.strip().splitlines()[-1])

        return run

    # No warm-up round: each child warms itself up, and a process start costs as much as the whole check.
    times = time_alternating({"bare": variant("bare"), "metered": variant("metered")}, rounds, warmup=0)
    bare_t, metered_t = median(times["bare"]), median(times["metered"])
    ratio = paired_ratio(times["metered"], times["bare"])
    figure(
        "overhead.subprocess",
        f"metered {fmt_time(metered_t)}/call vs bare {fmt_time(bare_t)}/call (pytest_costguard never imported): "
        f"ratio {ratio:.3f} (median of {rounds} back-to-back process pairs x {calls} calls each; ratio of "
        f"medians {metered_t / bare_t:.3f}; between processes the spread is wider than between in-process blocks)",
        met=ratio <= 1.10,
        target="<= 1.10, aim 1.05",
        quick=quick,
    )


CONFTEST = f"""
    import json

    import anthropic
    import httpx2
    import pytest

    BODY = json.dumps({RESPONSE!r}).encode()


    def _answer(request):
        return httpx2.Response(200, content=BODY, headers={{"content-type": "application/json"}})


    # Built at import, as an application would: with the plugin loaded the SDK is already patched by now.
    CLIENT = anthropic.Anthropic(
        api_key="bench", http_client=httpx2.Client(transport=httpx2.MockTransport(_answer)), max_retries=0
    )


    @pytest.fixture
    def client():
        return CLIENT
"""


def through_pytest(quick: bool) -> None:
    tests = 20 if quick else 500
    rounds = 1 if quick else 7
    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        root = Path(tmp)
        write_files(
            root,
            {
                "pytest.ini": "[pytest]\n",
                "conftest.py": CONFTEST,
                "test_calls.py": f"""
                    import pytest


                    @pytest.mark.parametrize("i", range({tests}))
                    def test_one_call(client, i):
                        message = client.messages.create(
                            model={MODEL!r}, max_tokens=256, messages={MESSAGES!r}
                        )
                        assert message.usage.output_tokens == 12
                """,
            },
        )
        base = ["-q", "-p", "no:cacheprovider"]
        report = root / "report.json"
        metered = ["--llm-budget", "1000"]
        if quick:
            # One run of each side: the metered run's report (tiny) proves it metered every call.
            metered.append(f"--llm-report={report}")
        else:
            # A run with a report proves the metered runs meter every call; it also compiles the suite.
            run_pytest([*base, *metered, f"--llm-report={report}"], root)

        def variant(extra: list[str]) -> Callable[[], PytestRun]:
            return lambda: run_pytest([*base, *extra], root)

        runs = time_alternating(
            {"bare": variant(["-p", "no:costguard"]), "metered": variant(metered)},
            rounds,
            warmup=0 if quick else 1,
        )
        calls = len(json.loads(report.read_text())["calls"])
        assert calls == tests, f"metered {calls} of {tests} calls"
    wall = {name: [r.wall for r in done] for name, done in runs.items()}
    cpu = {name: [r.cpu for r in done] for name, done in runs.items()}
    bare_t, metered_t = median(wall["bare"]), median(wall["metered"])
    ratio = paired_ratio(wall["metered"], wall["bare"])
    figure(
        "overhead.pytest",
        f"{tests} tests x 1 call: pytest {fmt_time(metered_t)} vs pytest -p no:costguard {fmt_time(bare_t)}: "
        f"wall ratio {ratio:.3f} (median of {rounds} back-to-back pairs; "
        f"{fmt_time((metered_t - bare_t) / tests)} more per test, startup included); "
        f"CPU-time ratio {paired_ratio(cpu['metered'], cpu['bare']):.3f}",
        met=ratio <= 1.10,
        target="<= 1.10",
        quick=quick,
    )


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--child", choices=("bare", "metered"), help="internal: one side of the subprocess check")
    parser.add_argument("--calls", type=int, default=1000, help="internal: calls timed by a --child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return 0
    in_process(args.quick)
    across_processes(args.quick)
    through_pytest(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
