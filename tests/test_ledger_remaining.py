"""SqliteLedger.remaining: kept as this process's own writes move it, read again once anyone else commits.

The preflight decision (`CostGuard._wants_preflight`) reads `remaining` before every call under a budget; it is
served without a read transaction while nothing but this process's own reserve/settle/release changed the file,
and must always equal what a fresh read of the file says.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.core.budget import BudgetExceededError
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.metering.sqlite_ledger import SqliteLedger

D = Decimal


def record(cost: Decimal) -> CostRecord:
    return CostRecord(model="claude-haiku-4-5", input_tokens=10, output_tokens=5, cost_usd=cost)


def fresh_remaining(path: Path, limit: Decimal) -> Decimal | None:
    """What a new connection reads from the file (no cache of its own yet)."""
    reader = SqliteLedger(path, limit, create=False)
    try:
        return reader.remaining
    finally:
        reader.close()


def read_transactions(ledger: SqliteLedger) -> list[str]:
    """Record the read transactions (`BEGIN`, not `BEGIN IMMEDIATE`) the ledger's connection starts from now on."""
    seen: list[str] = []
    conn = ledger._connection()
    conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "BEGIN" else None)
    return seen


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


def test_own_writes_keep_remaining_exact_without_reading(path: Path) -> None:
    limit = D("5")
    ledger = SqliteLedger.fresh(path, limit)
    try:
        assert ledger.remaining == limit  # the first read fills what is kept
        begins = read_transactions(ledger)
        rng = random.Random(19)
        held = []
        refused = 0
        for _ in range(60):
            action = rng.choice(("reserve", "reserve", "settle", "release"))
            # Sub-picodollar amounts too: the ledger rounds its balance but `remaining` stays exact.
            amount = D(rng.randint(1, 10**9)).scaleb(-rng.choice((6, 9, 15)))
            if action == "reserve":
                try:
                    held.append(ledger.reserve(amount))
                except BudgetExceededError:
                    refused += 1  # the refusal path may charge dead processes' holds: `remaining` reads again
            elif held:
                reservation = held.pop(rng.randrange(len(held)))
                if action == "settle":
                    ledger.settle(reservation, record(min(amount, reservation.amount)))
                    ledger.settle(reservation, record(amount))  # a second settle is ignored: nothing moves
                else:
                    ledger.release(reservation)
            kept = ledger.remaining
            assert kept == fresh_remaining(path, limit), action
        # Every figure above came from what was kept, but those after a refusal.
        assert len(begins) == refused
    finally:
        ledger.close()


def test_another_connections_commit_is_seen(path: Path) -> None:
    limit = D("1")
    ledger = SqliteLedger.fresh(path, limit)
    other = SqliteLedger(path, limit, create=False)
    try:
        ledger.settle(ledger.reserve(D("0.1")), record(D("0.1")))
        assert ledger.remaining == D("0.9")
        begins = read_transactions(ledger)
        held = other.reserve(D("0.25"))  # another process (here: connection) holds money
        assert ledger.remaining == D("0.65")
        assert begins == ["BEGIN"]  # read again, once
        other.settle(held, record(D("0.05")))
        assert ledger.remaining == D("0.85")
        assert ledger.remaining == D("0.85")
        assert begins == ["BEGIN", "BEGIN"]
    finally:
        other.close()
        ledger.close()


def test_a_refused_reservation_reads_again(path: Path) -> None:
    limit = D("1")
    ledger = SqliteLedger.fresh(path, limit)
    try:
        ledger.reserve(D("0.75"))
        assert ledger.remaining == D("0.25")
        begins = read_transactions(ledger)
        with pytest.raises(BudgetExceededError):
            ledger.reserve(D("0.5"))
        assert ledger.remaining == D("0.25") == fresh_remaining(path, limit)
        assert begins == ["BEGIN"]  # the refusal path may charge dead processes' holds: not assumed, read
    finally:
        ledger.close()
