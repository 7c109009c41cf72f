"""Memory per metered call: what a run keeps for each call it settles, measured with tracemalloc.

A `CostRun` (the plugin's accounting: the guard's records and the per-test index) meters N calls (100,000 by
default) through `CostGuard.begin` and `settle`, 10 calls per test, the way the middleware drives it but
without the SDK, so that what is left allocated is only the run's own bookkeeping. Each test's calls carry one
node id string and its teardown outcome is recorded, as the plugin does. `memory.per_call` is the memory still
allocated after the calls, divided by N, with every record kept (N within the default record limit), against
the memory of the N bare `CostRecord`s alone (the floor of keeping every call's record), built in the same run.
`memory.past_limit` meters the same N calls under a record limit of N / 10 (`--llm-max-records`): the first
records are kept, the rest are tallied, so what a call beyond the limit costs is its test's share of the
per-test totals.

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


def metered(calls: int, max_records: int | None = None) -> tuple[int, CostRun]:
    """Bytes still allocated after `calls` calls metered by a run, and the run (kept alive until measured)."""
    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(10**6)))
    run = CostRun(lambda: guard, max_records=max_records)
    assert run.guard is guard
    owner = guard.scope_owner
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for test in range(calls // 10):
        nodeid = f"tests/test_app.py::test_reply[{test}]"  # one string per test, as pytest's item.nodeid is
        scope = Scope(tag=nodeid)
        for index in range(test * 10, test * 10 + 10):
            with running(owner, scope):
                ticket, _ = guard.begin(BODY, streamed=False)
                # Varied usage, as real calls have: no two calls need cost the same.
                guard.settle(ticket, Usage(input_tokens=20 + index % 997, output_tokens=1 + index % 251), MODEL)
        run.record_outcome(nodeid, "call", "passed")
        run.record_outcome(nodeid, "teardown", "passed")
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
    del run
    limit = calls // 10
    used_limited, run = metered(calls, max_records=limit)
    assert len(run.records) == limit and run.build_report()["calls_total"] == calls
    del run
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
    limited_per_call = used_limited / calls
    beyond = (used_limited - limit * per_call) / (calls - limit)
    figure(
        "memory.past_limit",
        f"the same {calls:,} calls with --llm-max-records={limit:,}: {limited_per_call:.0f} bytes/call kept "
        f"({used_limited / 2**20:.1f} MiB; each call past the limit about {beyond:.0f} bytes, its test's share "
        f"of the per-test totals): ratio {limited_per_call / per_call:.2f} of keeping every record",
        met=limited_per_call <= 200,
        target="<= 200 bytes/call",
        quick=args.quick,
    )
    del records
    return 0


if __name__ == "__main__":
    sys.exit(main())
