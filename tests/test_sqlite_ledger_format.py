"""SqliteLedger's file format: exact money in integer picodollars, balances, versions, ids and timestamps."""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import sqlite3
import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_costguard import cli
from pytest_costguard.core.budget import BudgetExceededError
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.metering.sqlite_ledger import LEDGER_VERSION, LedgerError, SqliteLedger, read_ledger

D = Decimal
PICO = D("1E-12")


def record(cost: str | Decimal, **fields: Any) -> CostRecord:
    return CostRecord(model="claude-haiku-4-5", input_tokens=10, output_tokens=5, cost_usd=D(cost), **fields)


def exact_sum(amounts: list[Decimal]) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 1000
        return sum(amounts, D(0))


def pico_up(amount: Decimal) -> int:
    with localcontext() as ctx:
        ctx.prec = 1000
        return math.ceil(amount * 10**12)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def assert_balances_add_up(path: Path) -> None:
    """Each record's balance is the one before plus its cost in whole picodollars (rounded up), and carries,
    exactly, what the rounding added; the reservations hold their amounts rounded up the same way."""
    pico, excess = 0, D(0)
    for cost, spent_pico, spent_excess in rows(
        path, "SELECT cost_usd, spent_pico, spent_excess FROM records ORDER BY id"
    ):
        pico += pico_up(D(cost))
        excess = exact_sum([excess, pico_up(D(cost)) * PICO - D(cost)])
        assert (type(spent_pico), spent_pico, D(spent_excess)) == (int, pico, excess)
    for amount, amount_pico in rows(path, "SELECT amount, amount_pico FROM reservations"):
        assert (type(amount_pico), amount_pico) == (int, pico_up(D(amount)))


# -- money ----------------------------------------------------------------------------------------------------
def test_spent_is_exact_whatever_the_precision_of_the_costs(path: Path) -> None:
    costs = [
        D("0.0015"),
        D("0.0012345678901234567890"),  # finer than a picodollar
        D("1E-30"),
        D("0.1234567890123456789012345678901234567890"),  # more digits than Decimal's default 28
        D("7"),
        D("0.0000000000005"),  # half a picodollar
    ]
    ledger = SqliteLedger(path, D(10))
    for cost in costs:
        ledger.settle(ledger.reserve(D(1)), record(cost))
    expected = exact_sum(costs)
    assert ledger.spent == read_ledger(path).spent == expected
    assert ledger.remaining == exact_sum([D(10), expected.copy_negate()])
    assert [r.cost_usd for r in ledger.records()] == costs
    assert_balances_add_up(path)


def test_whole_picodollar_costs_leave_no_rounding_to_carry(path: Path) -> None:
    ledger = SqliteLedger(path)
    for cost in ("0.0015", "0.000000000001", "12.5"):
        ledger.settle(ledger.reserve(D(13)), record(cost))
    assert rows(path, "SELECT spent_pico, spent_excess FROM records ORDER BY id DESC LIMIT 1") == [
        (12_501_500_000_001, "0")
    ]
    assert ledger.spent == D("12.501500000001")
    assert str(ledger.spent) == "12.501500000001"


def test_amounts_finer_than_a_picodollar_round_up_for_admission_so_the_cap_holds(path: Path) -> None:
    ledger = SqliteLedger(path, D("3E-12"))
    first = ledger.reserve(D("1.5E-12"))  # holds 2 picodollars
    with pytest.raises(BudgetExceededError):
        ledger.reserve(D("1.5E-12"))  # 2 + 2 > 3, though 1.5 + 1.5 would fit exactly
    ledger.settle(first, record("1.5E-12"))  # counts 2 picodollars, spent stays exact
    assert (ledger.spent, ledger.reserved) == (D("1.5E-12"), D(0))
    ledger.reserve(D("1E-12"))  # 2 + 1 <= 3
    with pytest.raises(BudgetExceededError):
        ledger.reserve(D("1E-15"))  # rounds up to a whole picodollar: 2 + 1 + 1 > 3
    assert_balances_add_up(path)


def test_a_limit_finer_than_a_picodollar_rounds_down(path: Path) -> None:
    ledger = SqliteLedger(path, D("2.5E-12"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(D("2.4E-12"))  # 3 picodollars held against a limit of 2
    ledger.reserve(D("2E-12"))


settled_costs = st.lists(
    st.tuples(
        st.decimals(min_value=0, max_value=1, places=20, allow_nan=False, allow_infinity=False),
        st.sampled_from(["settle", "release", "keep"]),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(limit=st.decimals(min_value=0, max_value=3, places=14), calls=settled_costs)
def test_spend_never_exceeds_the_limit_and_spent_is_the_exact_sum(limit: Decimal, calls: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite3"
        ledger = SqliteLedger(path, limit)
        settled: list[Decimal] = []
        held: list[Decimal] = []
        for cost, fate in calls:
            try:
                reservation = ledger.reserve(cost)
            except BudgetExceededError:
                # Refused only when it does not fit in whole picodollars (amounts up, the limit down).
                assert sum(pico_up(x) for x in [*settled, *held, cost]) > math.floor(limit * 10**12)
                continue
            if fate == "settle":
                ledger.settle(reservation, record(cost))
                settled.append(cost)
            elif fate == "release":
                ledger.release(reservation)
            else:
                held.append(cost)
            assert exact_sum([*settled, *held]) <= limit
        assert ledger.spent == read_ledger(path).spent == exact_sum(settled)
        assert ledger.reserved == exact_sum(held)
        assert_balances_add_up(path)
        ledger.close()


def test_the_balances_add_up_after_dead_holders_are_charged(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    mine = ledger.reserve(D("0.1"))
    crashed = SqliteLedger(path, D(1), worker="gw7")
    crashed.reserve(D("0.25"))
    crashed.reserve(D("0.0000000000001234"))
    ledger.settle(ledger.reserve(D("0.2")), record("0.1000000000000005"))
    assert ledger.reclaim(worker="gw7") == D("0.2500000000001234")
    assert_balances_add_up(path)
    assert ledger.spent == D("0.3500000000001239")
    assert ledger.reserved == D("0.1")
    ledger.settle(mine, record("0.05"))
    assert_balances_add_up(path)
    assert ledger.spent == D("0.4000000000001239")


def _reserve_and_die(path: str) -> None:
    ledger = SqliteLedger(path, D(1), create=False, worker="gw3")
    ledger.reserve(D("0.4000000000000001"))
    os._exit(0)


def test_the_balances_add_up_after_a_dead_process_is_charged_on_a_refusal(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    ledger.settle(ledger.reserve(D("0.5")), record("0.25"))
    child = multiprocessing.get_context("spawn").Process(target=_reserve_and_die, args=(str(path),))
    child.start()
    child.join(timeout=30)
    assert ledger.reserved == D("0.4000000000000001")
    with pytest.raises(BudgetExceededError):
        ledger.reserve(D("0.5"))  # a refusal looks for dead holders: their calls are charged at worst case
    assert (ledger.spent, ledger.reserved) == (D("0.6500000000000001"), D(0))
    assert_balances_add_up(path)


def test_money_beyond_an_sqlite_integer_is_a_clear_error_not_a_float(path: Path) -> None:
    ledger = SqliteLedger(path)
    with pytest.raises(LedgerError, match=r"cannot hold \$9300000: more than the ledger counts exactly"):
        ledger.reserve(D(9_300_000))
    ledger.settle(ledger.reserve(D(5_000_000)), record(5_000_000))
    second = ledger.reserve(D(5_000_000))
    with pytest.raises(LedgerError, match=r"cannot settle a call of \$5000000: more than the ledger counts exactly"):
        ledger.settle(second, record(5_000_000))
    assert (ledger.spent, ledger.reserved) == (D(5_000_000), D(5_000_000))  # rolled back: still held
    assert rows(path, "SELECT typeof(spent_pico) FROM records") == [("integer",)]
    ledger.release(second)


# -- ids and timestamps -----------------------------------------------------------------------------------------
def test_a_late_settle_of_a_dropped_reservation_leaves_newer_ones_alone(path: Path) -> None:
    ledger = SqliteLedger(path, D(1))
    dropped = ledger.reserve(D("0.5"))
    ledger.release(dropped)
    newer = [ledger.reserve(D("0.1")) for _ in range(5)]
    ledger.settle(dropped, record("0.5"))
    assert (ledger.spent, ledger.reserved, ledger.records()) == (D(0), D("0.5"), [])
    assert len({r.id for r in newer} | {dropped.id}) == 6


def test_rows_carry_utc_timestamps_to_the_millisecond(path: Path) -> None:
    ledger = SqliteLedger(path, D("0.1"))
    before = datetime.now(timezone.utc)
    ledger.settle(ledger.reserve(D("0.05")), record("0.01"))
    ledger.reserve(D("0.05"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(D("0.05"))
    stamps = [
        *rows(path, "SELECT settled FROM records"),
        *rows(path, "SELECT created FROM reservations"),
        *rows(path, "SELECT created FROM refusals"),
    ]
    assert len(stamps) == 3
    for (stamp,) in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp), stamp
        assert before - timedelta(seconds=1) <= datetime.fromisoformat(stamp) <= datetime.now(timezone.utc)


# -- versions ---------------------------------------------------------------------------------------------------
_V1_DDL = """
CREATE TABLE costguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE totals (name TEXT PRIMARY KEY, amount TEXT NOT NULL);
CREATE TABLE reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, amount TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
    worker TEXT, tag TEXT, created TEXT NOT NULL
);
CREATE TABLE records (
    id INTEGER PRIMARY KEY AUTOINCREMENT, reservation_id INTEGER, pid INTEGER NOT NULL, worker TEXT,
    settled TEXT NOT NULL, reclaimed INTEGER NOT NULL DEFAULT 0, model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd TEXT NOT NULL, requested_model TEXT,
    cache_creation_input_tokens INTEGER NOT NULL, cache_read_input_tokens INTEGER NOT NULL,
    web_search_requests INTEGER NOT NULL, tag TEXT, streamed INTEGER NOT NULL, retries INTEGER NOT NULL,
    estimated INTEGER NOT NULL, cost_at_requested_usd TEXT, cost_uncached_usd TEXT, reserved_usd TEXT
);
CREATE TABLE refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, worker TEXT, tag TEXT, scope TEXT NOT NULL,
    amount TEXT NOT NULL, message TEXT NOT NULL, created TEXT NOT NULL
);
INSERT INTO costguard_meta VALUES ('schema', 'pytest-costguard-ledger'), ('version', '1'), ('limit_usd', '1.00'),
    ('scope', 'session'), ('created', '2026-01-02T03:04:05.678+00:00');
INSERT INTO totals VALUES ('spent', '0.1250');
INSERT INTO reservations (amount, pid, host, worker, tag, created)
    VALUES ('0.3', 1, 'h', NULL, 't.py::test_b', '2026-01-02T03:04:06.000+00:00');
INSERT INTO records (reservation_id, pid, worker, settled, model, input_tokens, output_tokens, cost_usd,
    cache_creation_input_tokens, cache_read_input_tokens, web_search_requests, tag, streamed, retries, estimated)
    VALUES (1, 1, NULL, '2026-01-02T03:04:06.000+00:00', 'claude-haiku-4-5', 10, 5, '0.125', 0, 0, 0,
    't.py::test_a', 0, 0, 0);
INSERT INTO refusals (pid, worker, tag, scope, amount, message, created)
    VALUES (1, NULL, 't.py::test_c', 'session', '2', 'refused', '2026-01-02T03:04:07.000+00:00');
"""


@pytest.fixture
def v1_ledger(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(_V1_DDL)
    conn.close()
    return path


def test_a_version_1_ledger_is_read_as_before(v1_ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = read_ledger(v1_ledger)
    assert (snapshot.limit, snapshot.spent, snapshot.in_flight, snapshot.in_flight_usd) == (
        D(1),
        D("0.125"),
        1,
        D("0.3"),
    )
    assert [(r.tag, r.cost_usd) for r in snapshot.records] == [("t.py::test_a", D("0.125"))]
    assert [(r.tag, r.worst_case_usd) for r in snapshot.refusals] == [("t.py::test_c", D(2))]
    assert cli.main(["report", str(v1_ledger)]) == 0
    out = capsys.readouterr().out
    assert "budget used: $0.125 of $1.00, 12.5%" in out
    assert "1 call(s) had not ended when the ledger was last written (up to $0.30, not included above)" in out


@pytest.mark.parametrize("create", [True, False])
def test_a_version_1_ledger_cannot_be_joined(v1_ledger: Path, create: bool) -> None:
    before = v1_ledger.read_bytes()
    with pytest.raises(LedgerError) as error:
        SqliteLedger(v1_ledger, D("1.00"), create=create)
    message = str(error.value)
    assert message.startswith(f"{v1_ledger}: a ledger of an earlier pytest-costguard (version 1)")
    assert f"writes version {LEDGER_VERSION}" in message and "\n" not in message
    assert v1_ledger.read_bytes() == before


def test_a_new_run_replaces_a_version_1_ledger(v1_ledger: Path) -> None:
    ledger = SqliteLedger.fresh(v1_ledger, D(2))
    assert (ledger.spent, ledger.records()) == (D(0), [])
    assert rows(v1_ledger, "SELECT value FROM costguard_meta WHERE key = 'version'") == [(str(LEDGER_VERSION),)]
