"""Ledgers: InMemoryLedger's invariant; SqliteLedger shared by processes, durable, and strict about files."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_costguard import cli
from pytest_costguard.core.budget import BudgetExceededError
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.metering.ledger import InMemoryLedger
from pytest_costguard.metering.sqlite_ledger import UNKNOWN_MODEL, LedgerError, SqliteLedger, read_ledger

D = Decimal


def record(cost: str | Decimal, **fields: Any) -> CostRecord:
    return CostRecord(model="claude-haiku-4-5", input_tokens=10, output_tokens=5, cost_usd=D(cost), **fields)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


# -- InMemoryLedger ------------------------------------------------------------------------------------------
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.decimals(min_value=0, max_value=3, places=6)),
        # settle the i-th open reservation at a fraction (<= 1) of what it holds
        st.tuples(st.just("settle"), st.integers(0, 20), st.decimals(min_value=0, max_value=1, places=3)),
        st.tuples(st.just("release"), st.integers(0, 20)),
    ),
    max_size=60,
)


@given(limit=st.decimals(min_value=0, max_value=5, places=6), ops=operations)
def test_in_memory_spend_never_exceeds_the_limit_when_calls_cost_at_most_their_reservation(
    limit: Decimal, ops: list[tuple[Any, ...]]
) -> None:
    ledger = InMemoryLedger(limit=limit)
    held: list[Any] = []
    settled = D(0)
    for op in ops:
        if op[0] == "reserve":
            try:
                held.append(ledger.reserve(op[1]))
            except BudgetExceededError:
                assert ledger.spent + ledger.reserved + op[1] > limit
        elif held:
            reservation = held.pop(op[1] % len(held))
            if op[0] == "settle":
                cost = reservation.amount * op[2]
                ledger.settle(reservation, record(cost))
                settled += cost
            else:
                ledger.release(reservation)
        assert ledger.spent == settled
        assert ledger.spent + ledger.reserved <= limit
    assert ledger.reserved == sum((r.amount for r in held), D(0))


# -- SqliteLedger: the protocol ------------------------------------------------------------------------------
def test_sqlite_ledger_admits_what_fits_and_refuses_the_rest(path: Path) -> None:
    ledger = SqliteLedger(path, D("1.00"))
    first = ledger.reserve(D("0.60"))
    assert (ledger.reserved, ledger.remaining) == (D("0.60"), D("0.40"))
    with pytest.raises(BudgetExceededError, match=r"only \$0\.40 of the \$1\.00 budget is left"):
        ledger.reserve(D("0.50"))
    ledger.settle(first, record("0.25"))
    second = ledger.reserve(D("0.50"))
    ledger.release(second)
    assert (ledger.spent, ledger.reserved, ledger.remaining, ledger.refused) == (D("0.25"), D(0), D("0.75"), 1)


def test_a_ledger_without_limit_admits_everything_and_still_records(path: Path) -> None:
    ledger = SqliteLedger(path)
    ledger.settle(ledger.reserve(D("1000")), record("999.5"))
    assert ledger.remaining is None
    assert read_ledger(path).spent == D("999.5")


def test_settle_stores_the_whole_record_exactly(path: Path) -> None:
    ledger = SqliteLedger(path, D(5))
    full = CostRecord(
        model="claude-haiku-4-5-20251001",
        input_tokens=1234,
        output_tokens=56,
        cost_usd=D("0.0012345678901234567890"),
        requested_model="claude-opus-4-1",
        cache_creation_input_tokens=7,
        cache_read_input_tokens=8,
        web_search_requests=2,
        tag="tests/test_x.py::test_y[a b]",
        streamed=True,
        retries=3,
        estimated=True,
        cost_at_requested_usd=D("0.1000000000000000000001"),
        cost_uncached_usd=None,
    )
    ledger.settle(ledger.reserve(D(1)), full)
    assert ledger.records() == [full]
    assert ledger.spent == full.cost_usd


def test_settling_twice_counts_once(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    reservation = ledger.reserve(D("0.5"))
    ledger.settle(reservation, record("0.1"))
    ledger.settle(reservation, record("0.1"))
    ledger.release(reservation)
    assert (ledger.spent, len(ledger.records())) == (D("0.1"), 1)


def test_refusals_and_reservations_carry_the_running_test(path: Path) -> None:
    running = ["tests/test_a.py::test_one"]
    ledger = SqliteLedger(path, D("0.10"), worker="gw3", tag_source=lambda: running[0])
    with pytest.raises(BudgetExceededError) as refused:
        ledger.reserve(D("0.20"))
    (refusal,) = ledger.refusals()
    assert (refusal.tag, refusal.scope, refusal.worst_case_usd, refusal.worker) == (
        "tests/test_a.py::test_one",
        "session",
        D("0.20"),
        "gw3",
    )
    assert refusal.message == str(refused.value)
    assert ledger.refusals(worker="gw0") == []


# -- SqliteLedger: files -------------------------------------------------------------------------------------
def test_a_worker_cannot_join_a_ledger_that_does_not_exist(path: Path) -> None:
    with pytest.raises(LedgerError, match="no such ledger"):
        SqliteLedger(path, D(1), create=False)
    assert not path.exists()


def test_joining_with_another_budget_is_refused(path: Path) -> None:
    SqliteLedger(path, D(1)).close()
    with pytest.raises(LedgerError, match="enforces a budget of 1, not 2"):
        SqliteLedger(path, D(2))


def test_fresh_replaces_an_earlier_ledger(path: Path) -> None:
    old = SqliteLedger(path, D(1))
    old.settle(old.reserve(D("0.5")), record("0.5"))
    old.close()
    assert SqliteLedger.fresh(path, D(3)).spent == 0
    assert read_ledger(path).limit == D(3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, not a database\n", "not a pytest-costguard ledger (not an SQLite database"),
        ("foreign", "an SQLite database, but not a pytest-costguard ledger (no costguard_meta table)"),
        ("version", "ledger version '99'; this pytest-costguard reads versions 1 and 2"),
        (b"SQLite format 3\x00" + b"\xff" * 200, "not an SQLite database"),
    ],
)
def test_foreign_and_corrupt_files_are_refused_and_left_untouched(
    path: Path, content: bytes | str, message: str
) -> None:
    if content == "foreign":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE important (x)")
        conn.close()
    elif content == "version":
        SqliteLedger(path).close()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE costguard_meta SET value = '99' WHERE key = 'version'")
        conn.close()
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    before = path.read_bytes()
    for attempt in (read_ledger, SqliteLedger, SqliteLedger.fresh):
        with pytest.raises(LedgerError) as error:
            attempt(path)
        assert message in str(error.value)
        assert "\n" not in str(error.value)
    if content != "version":
        assert path.read_bytes() == before


def test_an_empty_file_becomes_a_ledger_but_is_no_ledger_to_read(path: Path) -> None:
    path.write_bytes(b"")
    with pytest.raises(LedgerError, match="an empty file, not a pytest-costguard ledger"):
        read_ledger(path)
    SqliteLedger.fresh(path, D(1)).close()
    assert read_ledger(path).limit == D(1)


def test_a_locked_ledger_waits_for_the_lock_then_gives_up_with_a_clear_error(path: Path) -> None:
    ledger = SqliteLedger(path, D(1), timeout=0.3)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.1, lambda: blocker.execute("COMMIT"))
    timer.start()
    ledger.reserve(D("0.1"))  # waits for the commit instead of failing with "database is locked"
    timer.join()
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(LedgerError, match=r"stayed locked for 0\.3 s"):
        ledger.reserve(D("0.1"))
    assert time.monotonic() - started >= 0.3
    blocker.execute("ROLLBACK")
    blocker.close()


# -- SqliteLedger: processes ---------------------------------------------------------------------------------
LIMIT = D("0.000150")
CHEAPEST = D("0.000001")


def _hammer(path: str, start: Any, results: Any) -> None:
    """Reserve and settle the cheapest calls until refused; report what this process settled."""
    ledger = SqliteLedger(path, LIMIT, create=False)
    settled, calls = D(0), 0
    start.wait()
    while True:
        try:
            reservation = ledger.reserve(CHEAPEST)
        except BudgetExceededError:
            break
        time.sleep(random.uniform(0, 0.002))  # the "HTTP call": reservations of all processes overlap
        ledger.settle(reservation, record(CHEAPEST, tag=f"pid {os.getpid()}"))
        settled += CHEAPEST
        calls += 1
    results.put((calls, str(settled)))


def test_processes_sharing_a_ledger_never_settle_more_than_the_limit_together(path: Path) -> None:
    SqliteLedger(path, LIMIT).close()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(str(path), start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    settled = sum((D(total) for _, total in outcomes), D(0))
    ledger = read_ledger(path)
    assert settled == ledger.spent <= LIMIT
    assert LIMIT - ledger.spent < CHEAPEST  # no call was refused that would have fitted
    assert len(ledger.records) == sum(calls for calls, _ in outcomes)
    assert (ledger.in_flight, len(ledger.refusals)) == (0, 4)  # each process stopped at its first refusal
    assert sum(1 for calls, _ in outcomes if calls) >= 2, "the processes did not contend"


def _reserve_and_die(path: str, amount: str) -> None:
    ledger = SqliteLedger(path, D(1), create=False, worker="gw7", tag_source=lambda: "test_a.py::test_dies")
    ledger.reserve(D(amount))
    os._exit(0)  # dies with the call in flight: no settle, no release, no cleanup


def _reserve_and_wait(path: str, reserved: Any, finish: Any) -> None:
    ledger = SqliteLedger(path, D(1), create=False)
    reservation = ledger.reserve(D("0.6"))
    reserved.set()
    finish.wait(30)
    ledger.settle(reservation, record("0.2"))


def test_calls_a_dead_process_left_in_flight_are_charged_at_their_worst_case(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    child = multiprocessing.get_context("spawn").Process(target=_reserve_and_die, args=(str(path), "0.6"))
    child.start()
    child.join(timeout=30)
    assert ledger.reserved == D("0.6")
    # Only a call that would be refused makes the ledger look for holders that are gone.
    with pytest.raises(BudgetExceededError):
        ledger.reserve(D("0.5"))
    assert (ledger.reserved, ledger.spent) == (D(0), D("0.6"))
    (charged,) = ledger.records(worker="gw7")
    assert (charged.model, charged.cost_usd, charged.estimated, charged.tag) == (
        UNKNOWN_MODEL,
        D("0.6"),
        True,
        "test_a.py::test_dies",
    )
    ledger.reserve(D("0.4"))


def test_calls_in_flight_in_a_live_process_stay_held(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    ctx = multiprocessing.get_context("spawn")
    reserved, finish = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_reserve_and_wait, args=(str(path), reserved, finish))
    child.start()
    try:
        assert reserved.wait(30)
        with pytest.raises(BudgetExceededError):
            ledger.reserve(D("0.5"))
        assert (ledger.reserved, ledger.spent) == (D("0.6"), D(0))
    finally:
        finish.set()
        child.join(timeout=30)
    assert (ledger.reserved, ledger.spent) == (D(0), D("0.2"))


def test_the_controller_charges_what_a_crashed_worker_left_in_flight(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    mine = ledger.reserve(D("0.1"))
    child = multiprocessing.get_context("spawn").Process(target=_reserve_and_die, args=(str(path), "0.3"))
    child.start()
    child.join(timeout=30)
    assert ledger.reclaim(worker="gw7") == D("0.3")
    assert (ledger.reserved, ledger.spent) == (D("0.1"), D("0.3"))
    ledger.release(mine)


# -- costguard report ----------------------------------------------------------------------------------------
def test_costguard_report_prints_a_ledger_and_its_calls_in_flight(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = SqliteLedger(path, D(1))
    ledger.settle(ledger.reserve(D("0.2")), record("0.125", tag="t.py::test_a"))
    ledger.reserve(D("0.3"))  # never ends: the run was killed during this call
    assert cli.main(["report", str(path), "--md", str(path.with_suffix(".md"))]) == 0
    out = capsys.readouterr().out
    assert ["$0.125", "1", "10", "0", "0", "5", "t.py::test_a"] in [line.split() for line in out.splitlines()]
    assert "budget used: $0.125 of $1.00, 12.5%" in out
    assert "1 call(s) had not ended when the ledger was last written (up to $0.30, not included above)" in out
    assert "`t.py::test_a`" in path.with_suffix(".md").read_text()


@pytest.mark.parametrize("kind", ["text", "foreign-sqlite", "other-version", "missing", "bad-output"])
def test_costguard_report_refuses_what_is_not_a_ledger_with_one_line_and_exit_2(
    path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    args = ["report", str(path)]
    if kind == "text":
        path.write_text("id,cost\n1,0.5\n")
    elif kind == "foreign-sqlite":
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    elif kind == "other-version":
        SqliteLedger(path).close()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE costguard_meta SET value = '99' WHERE key = 'version'")
        conn.close()
    elif kind == "bad-output":
        SqliteLedger(path).close()
        args += ["--json", str(path.with_suffix(".txt"))]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("costguard: error: ") and err.count("\n") == 1, err
    assert {
        "text": "not a pytest-costguard ledger (not an SQLite database)",
        "foreign-sqlite": "an SQLite database, but not a pytest-costguard ledger",
        "other-version": "ledger version '99'; this pytest-costguard reads versions 1 and 2",
        "missing": "cannot read (No such file or directory)",
        "bad-output": "--json: ",
    }[kind] in err
