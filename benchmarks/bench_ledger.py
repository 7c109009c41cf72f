"""Ledger: reserve + settle latency in one process, and 4 processes contending on one SqliteLedger.

Single process: each sample is one `reserve(worst)` followed by `settle(reservation, record)`, timed alone;
the figure is the median (p50) and p99 of the samples. Each ledger is compared with the floor of its own
kind, measured in the same run and interleaved with it:

* `InMemoryLedger` against the bare primitives it is built of: a lock taken twice, a dict insert and pop and
  a Decimal addition.
* `SqliteLedger` against the same two transactions written by hand with `sqlite3` on a file with the same
  settings (the ledger's page size; WAL; the reservation committed with `synchronous=NORMAL`, the settlement
  with `synchronous=FULL`, i.e. synced to disk). A second hand-written floor commits both with `NORMAL`, to
  show what the durable settlement costs by itself.

Tail: `ledger.sqlite_tail` times 10,000 reserve+settle pairs and reports p50, mean and p99, for the ledger as
it ships and for the same ledger checkpointing its WAL inside a commit (SQLite's automatic checkpoint, as it
did before it got a checkpointing thread), interleaved in chunks of 500. `ledger.sqlite_tail_cpu` times the
same pairs again by the calling thread's CPU time, which a loaded machine's preemptions do not inflate: on a
busy 2-core VM the wall-clock tail is the scheduler's, and this shows what the ledger's own work adds.

Redis: `RedisLedger` on a `redis-server` started on loopback for the benchmark (no persistence), against the
floor any Redis ledger pays: two round trips running a script that does nothing (`EVALSHA` of `return 1`).
Skipped with a line when redis-server is not installed.

Contention: 4 processes (spawned, started together behind a barrier) share one SqliteLedger whose limit is
smaller than what they try to spend, so the budget runs out while they race. Each call reserves a worst case
and settles at a random part of it. Reported: throughput (settled calls per second, from the first start to
the last finish) against one process doing the same work alone, and the overspend check: the money settled
by all processes, read back from the file, must not exceed the limit.

Run: python benchmarks/bench_ledger.py [--quick]
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from _bench import figure, fmt_time, make_parser

from pytest_costguard.core.budget import BudgetExceededError
from pytest_costguard.core.tracking import CostRecord
from pytest_costguard.metering.ledger import InMemoryLedger
from pytest_costguard.metering.sqlite_ledger import _PAGE_SIZE, SqliteLedger, read_ledger

WORST = Decimal("0.0100")
RECORD = CostRecord(
    model="claude-haiku-4-5",
    input_tokens=900,
    output_tokens=120,
    cost_usd=Decimal("0.0015"),
    requested_model="claude-haiku-4-5",
    tag="tests/test_app.py::test_reply",
)


def percentile(samples: list[float], q: float) -> float:
    """Return the q-quantile (0..1) by nearest rank: p50 is the median, p99 the 99th percentile."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def sample_loop(step: Callable[[], None], samples: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Time `step` alone, `samples` times (by `clock`: wall time, or the calling thread's CPU time)."""
    out = []
    for _ in range(samples):
        start = clock()
        step()
        out.append(clock() - start)
    return out


def interleaved(
    steps: dict[str, Callable[[], None]], samples: int, chunk: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Collect `samples` timings of each step, alternating chunks so that load hits every step alike."""
    out: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for index in range(0, samples, chunk):
        for name in names if (index // chunk) % 2 == 0 else reversed(names):
            out[name] += sample_loop(steps[name], min(chunk, samples - index), clock)
    return out


def in_memory_steps() -> tuple[Callable[[], None], Callable[[], None]]:
    ledger = InMemoryLedger(limit=Decimal(10**9))

    def ours() -> None:
        ledger.settle(ledger.reserve(WORST), RECORD)

    lock = threading.Lock()
    held: dict[int, Decimal] = {}
    totals = [Decimal(0)]

    def floor() -> None:
        with lock:
            held[1] = WORST
        with lock:
            held.pop(1)
            totals[0] += RECORD.cost_usd

    return ours, floor


def raw_sqlite_step(path: Path, *, durable_settle: bool) -> Callable[[], None]:
    """The two transactions of a reserve and a settle, by hand: the floor any SQLite ledger pays."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # the ledger's, since smaller pages make smaller WAL writes
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS held (id INTEGER PRIMARY KEY AUTOINCREMENT, amount TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS settled (id INTEGER PRIMARY KEY AUTOINCREMENT, cost TEXT)")

    def step() -> None:
        conn.execute("BEGIN IMMEDIATE")
        row_id = conn.execute("INSERT INTO held (amount) VALUES (?)", (str(WORST),)).lastrowid
        conn.execute("COMMIT")
        if durable_settle:
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM held WHERE id = ?", (row_id,))
        conn.execute("INSERT INTO settled (cost) VALUES (?)", (str(RECORD.cost_usd),))
        conn.execute("COMMIT")
        if durable_settle:
            conn.execute("PRAGMA synchronous=NORMAL")

    return step


def single_process(quick: bool, tmp: Path) -> None:
    samples = 300 if quick else 5_000
    ours, floor = in_memory_steps()
    times = interleaved({"ours": ours, "floor": floor}, samples * 4, 200)
    p50, floor50 = percentile(times["ours"], 0.5), percentile(times["floor"], 0.5)
    figure(
        "ledger.inmemory",
        f"reserve+settle p50 {fmt_time(p50)} (p99 {fmt_time(percentile(times['ours'], 0.99))}) vs bare "
        f"lock+dict+Decimal floor p50 {fmt_time(floor50)}: ratio {p50 / floor50:.2f} ({len(times['ours'])} samples)",
        met=p50 <= 100e-6,
        target="p50 <= 100 us",
        quick=quick,
    )

    ledger = SqliteLedger.fresh(tmp / "single.sqlite3", Decimal(10**9))

    def sqlite_ours() -> None:
        ledger.settle(ledger.reserve(WORST), RECORD)

    times = interleaved(
        {
            "ours": sqlite_ours,
            "floor_full": raw_sqlite_step(tmp / "floor_full.sqlite3", durable_settle=True),
            "floor_normal": raw_sqlite_step(tmp / "floor_normal.sqlite3", durable_settle=False),
        },
        samples,
        50,
    )
    ledger.close()
    p50 = percentile(times["ours"], 0.5)
    full50, normal50 = percentile(times["floor_full"], 0.5), percentile(times["floor_normal"], 0.5)
    figure(
        "ledger.sqlite",
        f"reserve+settle p50 {fmt_time(p50)} (p99 {fmt_time(percentile(times['ours'], 0.99))}) vs hand-written "
        f"sqlite3 floor with the same durability (settle synced) p50 {fmt_time(full50)}: ratio {p50 / full50:.2f} "
        f"({len(times['ours'])} samples; file on {tmp})",
        met=p50 <= 100e-6,
        target="p50 <= 100 us",
        quick=quick,
    )
    figure(
        "ledger.sqlite_floor_unsynced",
        f"the same hand-written floor with the settle unsynced (synchronous=NORMAL) p50 {fmt_time(normal50)}: "
        f"SqliteLedger/unsynced floor ratio {p50 / normal50:.2f}, synced/unsynced floor ratio "
        f"{full50 / normal50:.2f} (what syncing each settlement costs; info)",
    )


def sqlite_tail(quick: bool, tmp: Path) -> None:
    """p50, mean and p99 of 10,000 reserve+settle pairs: what a call loop pays is the mean, not the p50.

    Two ledgers side by side, interleaved in chunks: the ledger as it ships (the WAL checkpointed from a thread
    of its own) and the same ledger with SQLite's automatic checkpoint inside the commit that fills the WAL
    (how it worked before), each on its own file.
    """
    pairs = 600 if quick else 10_000
    ledgers = {}
    for name, background in (("background", True), ("inline", False)):
        ledger = SqliteLedger.fresh(tmp / f"tail-{name}.sqlite3", Decimal(10**9))
        ledger._checkpoint_in_background = background
        ledgers[name] = ledger

    def step(ledger: SqliteLedger) -> Callable[[], None]:
        return lambda: ledger.settle(ledger.reserve(WORST), RECORD)

    times = interleaved({name: step(ledger) for name, ledger in ledgers.items()}, pairs, 500)
    # The calling thread's CPU time of the same pairs: what the scheduler's preemptions (the wall-clock tail of
    # a loaded machine) never add to, so a tail the ledger's own work makes shows here whatever the load.
    cpu = interleaved({name: step(ledger) for name, ledger in ledgers.items()}, pairs, 500, time.thread_time)
    for ledger in ledgers.values():
        ledger.close()
    stats = {}
    for name, samples in times.items():
        p50 = percentile(samples, 0.5)
        stats[name] = (p50, sum(samples) / len(samples), percentile(samples, 0.99), max(samples))
    p50, mean, p99, worst = stats["background"]
    ip50, imean, ip99, iworst = stats["inline"]
    figure(
        "ledger.sqlite_tail",
        f"{pairs} reserve+settle pairs: p50 {fmt_time(p50)}, mean {fmt_time(mean)}, p99 {fmt_time(p99)}, max "
        f"{fmt_time(worst)}: mean/p50 ratio {mean / p50:.2f}; with the checkpoint inside a commit (SQLite's "
        f"automatic one) p50 {fmt_time(ip50)}, mean {fmt_time(imean)}, p99 {fmt_time(ip99)}, max {fmt_time(iworst)}: "
        f"mean/p50 ratio {imean / ip50:.2f}; mean ratio background/inline {mean / imean:.2f}",
        met=mean <= 1.5 * p50,
        target="mean <= 1.5x p50",
        quick=quick,
    )
    parts = []
    for name, samples in cpu.items():
        c50, cmean, c99 = percentile(samples, 0.5), sum(samples) / len(samples), percentile(samples, 0.99)
        parts.append(
            f"{name}: p50 {fmt_time(c50)}, mean {fmt_time(cmean)}, p99 {fmt_time(c99)}, "
            f"mean/p50 ratio {cmean / c50:.2f}"
        )
    figure(
        "ledger.sqlite_tail_cpu",
        f"the same {pairs} pairs again, timed by the calling thread's CPU time (no preemption, no I/O wait): "
        + "; ".join(parts)
        + " (info)",
    )


def redis_process(quick: bool, tmp: Path) -> None:
    binary = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        redis = None  # type: ignore[assignment]
    if binary is None or redis is None:
        print("ledger.redis: skipped: redis-server or the redis package is not installed", flush=True)
        return
    from pytest_costguard.metering.redis_ledger import RedisLedger

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        ledger = RedisLedger(url, Decimal(10**9), key="bench")
        noop = client.register_script("return 1")

        def redis_ours() -> None:
            ledger.settle(ledger.reserve(WORST), RECORD)

        def floor() -> None:
            noop()
            noop()

        samples = 300 if quick else 5_000
        times = interleaved({"ours": redis_ours, "floor": floor}, samples, 100)
        ledger.close()
        client.close()
        p50, floor50 = percentile(times["ours"], 0.5), percentile(times["floor"], 0.5)
        figure(
            "ledger.redis",
            f"reserve+settle on loopback redis-server p50 {fmt_time(p50)} "
            f"(p99 {fmt_time(percentile(times['ours'], 0.99))}) "
            f"vs two EVALSHA round trips of a no-op script p50 {fmt_time(floor50)}: ratio {p50 / floor50:.2f} "
            f"({len(times['ours'])} samples)",
        )
    finally:
        server.kill()
        server.wait()


def contender(path: str, limit: str, calls: int, seed: int, barrier: Any, results: Any) -> None:
    """One contending process: `calls` attempts to reserve and settle; report what it did and when."""
    ledger = SqliteLedger(path, Decimal(limit), create=False, worker=f"w{seed}")
    rng = random.Random(seed)
    settled = refused = 0
    spent = Decimal(0)
    barrier.wait()
    start = time.monotonic()  # system-wide on Linux and macOS: comparable across processes
    for _ in range(calls):
        try:
            reservation = ledger.reserve(WORST)
        except BudgetExceededError:
            refused += 1
            continue
        # Settle at a random part of the worst case, so freed room reopens the race for other processes.
        cost = (WORST * Decimal(rng.randint(50, 100)) / 100).quantize(Decimal("0.0001"))
        ledger.settle(
            reservation,
            CostRecord(model="claude-haiku-4-5", input_tokens=1, output_tokens=1, cost_usd=cost, tag=f"w{seed}"),
        )
        settled += 1
        spent += cost
    end = time.monotonic()
    ledger.close()
    results.put((seed, settled, refused, str(spent), start, end))


def run_contention(path: Path, processes: int, calls: int, limit: Decimal) -> dict[str, Any]:
    SqliteLedger.fresh(path, limit).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=contender, args=(str(path), str(limit), calls, i, barrier, results))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    rows = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"a contending process exited {p.exitcode}")
    snapshot = read_ledger(path)
    settled = sum(r[1] for r in rows)
    reported = sum((Decimal(r[3]) for r in rows), Decimal(0))
    on_file = sum((r.cost_usd for r in snapshot.records), Decimal(0))
    # Consistency: what the processes say they settled is what the file holds, call for call.
    assert len(snapshot.records) == settled, (len(snapshot.records), settled)
    assert on_file == reported == snapshot.spent, (on_file, reported, snapshot.spent)
    assert snapshot.in_flight == 0
    wall = max(r[5] for r in rows) - min(r[4] for r in rows)
    return {
        "settled": settled,
        "refused": sum(r[2] for r in rows),
        "spent": on_file,
        "wall": wall,
        "throughput": settled / wall,
    }


def contention(quick: bool, tmp: Path) -> None:
    processes = 4
    calls = 25 if quick else 400
    # Room for about 60% of the attempts at their average settled cost: the budget runs out mid-race.
    limit = (WORST * Decimal("0.75") * processes * calls * Decimal("0.6")).quantize(Decimal("0.01"))
    alone = run_contention(tmp / "alone.sqlite3", 1, calls, limit)
    shared = run_contention(tmp / "shared.sqlite3", processes, calls, limit)
    overspend = shared["spent"] - limit
    figure(
        "ledger.contention",
        f"{processes} processes x {calls} attempts on one SqliteLedger: {shared['throughput']:.0f} settled calls/s "
        f"vs 1 process alone {alone['throughput']:.0f}/s: ratio {shared['throughput'] / alone['throughput']:.2f}; "
        f"settled {shared['settled']}, refused {shared['refused']}, spent ${shared['spent']} of limit ${limit} "
        f"(overspend ${max(overspend, Decimal(0))})",
        met=overspend <= 0 and shared["refused"] > 0,
        target="zero overspend with the budget exhausted",
        quick=quick,
    )


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    with tempfile.TemporaryDirectory(prefix="costguard-bench-") as tmp:
        single_process(args.quick, Path(tmp))
        sqlite_tail(args.quick, Path(tmp))
        redis_process(args.quick, Path(tmp))
        contention(args.quick, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
