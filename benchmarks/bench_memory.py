"""Memory per metered call: what a run keeps for each call it settles, measured with tracemalloc.

A `CostRun` (the plugin's accounting: the guard's records and the per-test index) meters N calls (100,000 by
default) through `CostGuard.begin` and `settle`, 10 calls per test, the way the middleware drives it but
without the SDK, so that what is left allocated is only the run's own bookkeeping. The figure is the memory
still allocated after the calls, divided by N, against the memory of the N bare `CostRecord`s alone
(the floor of keeping every call's record), built in the same run.

Run: python benchmarks/bench_memory.py [--quick]
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from decimal import Decimal

from _bench import figure, make_parser

from pytest_costguard.domain.records import CostRecord, Usage
from pytest_costguard.metering.guard import CostGuard, GuardConfig
from pytest_costguard.metering.ledger import InMemoryLedger
from pytest_costguard.metering.run import CostRun
from pytest_costguard.metering.scope import Scope, running

MODEL = "claude-sonnet-4-6"
BODY = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Summarise the ticket, please."}]}


def metered(calls: int) -> tuple[int, CostRun]:
    """Bytes still allocated after `calls` calls metered by a run, and the run (kept alive until measured)."""
    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(10**6)))
    run = CostRun(lambda: guard)
    assert run.guard is guard
    owner = guard.scope_owner
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(calls):
        scope = Scope(tag=f"tests/test_app.py::test_reply[{index // 10}]")
        with running(owner, scope):
            ticket, _ = guard.begin(BODY, streamed=False)
            # Varied usage, as real calls have: no two calls need cost the same.
            guard.settle(ticket, Usage(input_tokens=20 + index % 997, output_tokens=1 + index % 251), MODEL)
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, run


def bare_records(calls: int) -> tuple[int, list[CostRecord]]:
    """Bytes of `calls` bare records in a list: the floor of keeping every call's record."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    records = [
        CostRecord(
            model=MODEL,
            input_tokens=20 + index % 997,
            output_tokens=1 + index % 251,
            cost_usd=Decimal(index) / 10**7,
            tag=f"t{index // 10}",
        )
        for index in range(calls)
    ]
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, records


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    calls = 2_000 if args.quick else 100_000
    metered(200)  # warm: prices loaded, caches filled, before anything is counted
    tracemalloc.start()
    used, run = metered(calls)
    assert len(run.records) == calls
    floor, records = bare_records(calls)
    tracemalloc.stop()
    per_call, floor_per_call = used / calls, floor / calls
    figure(
        "memory.per_call",
        f"{calls:,} calls metered ({calls // 10:,} tests): {per_call:.0f} bytes/call kept vs bare CostRecords "
        f"{floor_per_call:.0f} bytes/record: ratio {per_call / floor_per_call:.2f}",
        met=per_call <= 200,
        target="<= 200 bytes/call",
        quick=args.quick,
    )
    del records
    return 0


if __name__ == "__main__":
    sys.exit(main())
