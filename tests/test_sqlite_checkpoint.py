"""The SQLite ledger checkpoints its WAL from a thread of its own, and stops that thread when it closes."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.domain.records import CostRecord
from pytest_costguard.metering import sqlite_ledger
from pytest_costguard.metering.sqlite_ledger import SqliteLedger, read_ledger

RECORD = CostRecord(model="claude-haiku-4-5", input_tokens=10, output_tokens=5, cost_usd=Decimal("0.0001"))


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "costguard-ledger-checkpoint"]


def _wal_frames(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return (wal.stat().st_size - 32) // (24 + 1024) if wal.exists() and wal.stat().st_size > 32 else 0


def test_the_wal_is_checkpointed_off_the_call_path_and_the_thread_stops_on_close(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    before = len(_checkpointers())
    ledger = SqliteLedger.fresh(path, Decimal(100))
    pairs = 3 * sqlite_ledger._CHECKPOINT_EVERY
    for _ in range(pairs):
        ledger.settle(ledger.reserve(Decimal("0.001")), RECORD)
    assert len(_checkpointers()) == before + 1
    # The writer's own automatic checkpoint is pushed out to the backstop: the thread does the work.
    (pages,) = ledger._cursor.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert pages == sqlite_ledger._BACKSTOP_PAGES
    # Frames the thread checkpointed are in the main file: a reader of the file alone (WAL ignored) sees rows.
    deadline = time.monotonic() + 30
    copied = 0
    while time.monotonic() < deadline:
        copy = tmp_path / "copy.sqlite3"
        copy.write_bytes(path.read_bytes())  # the main file without its WAL
        try:
            with contextlib.closing(sqlite3.connect(copy)) as conn:
                copied = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        except sqlite3.DatabaseError:
            # Copied while the thread was writing pages back: a torn copy proves nothing either way, take another.
            copied = 0
        if copied:
            break
        time.sleep(0.2)
    assert copied > 0, f"nothing checkpointed into the file after {pairs} pairs ({_wal_frames(path)} WAL frames)"
    ledger.close()
    assert len(_checkpointers()) == before
    snapshot = read_ledger(path)
    assert len(snapshot.records) == pairs and snapshot.spent == Decimal("0.0001") * pairs


def test_without_the_thread_sqlite_checkpoints_inside_a_commit_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = len(_checkpointers())
    # Off before the file is made: making it commits (the holder's name), which may already ask for a checkpoint.
    monkeypatch.setattr(SqliteLedger, "_checkpoint_in_background", False)
    ledger = SqliteLedger.fresh(tmp_path / "ledger.sqlite3", Decimal(100))
    for _ in range(sqlite_ledger._CHECKPOINT_EVERY + 2):
        ledger.settle(ledger.reserve(Decimal("0.001")), RECORD)
    (pages,) = ledger._cursor.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert pages == 1000 and len(_checkpointers()) == before
    ledger.close()
