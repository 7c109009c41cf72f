"""Every CostRecord field crosses process and disk boundaries intact (xdist workeroutput, the SQLite ledger)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from decimal import Decimal
from pathlib import Path

from pytest_costguard.domain.records import RECORD_FIELDS, CostRecord
from pytest_costguard.domain.records import record_from_dict as record_from_json
from pytest_costguard.domain.records import record_to_dict as record_to_json
from pytest_costguard.metering.sqlite_ledger import SqliteLedger

FULL = CostRecord(
    model="claude-haiku-4-5",
    input_tokens=1,
    output_tokens=2,
    cost_usd=Decimal("0.000123456789"),
    requested_model="claude-opus-4-7",
    cache_creation_input_tokens=3,
    cache_read_input_tokens=4,
    web_search_requests=5,
    tag="t.py::test_x",
    streamed=True,
    retries=6,
    estimated=True,
    cost_at_requested_usd=Decimal("0.1"),
    cost_uncached_usd=Decimal("0.2"),
    reserved_usd=Decimal("0.3"),
    unpriced=True,
    replayed=True,
    replay_cost_usd=Decimal("0.4"),
    provider="openai",
)


def test_the_full_record_is_set_in_every_field() -> None:
    defaults = CostRecord("m", 0, 0, Decimal(0))
    assert all(getattr(FULL, f.name) != getattr(defaults, f.name) for f in fields(CostRecord))


def test_a_record_survives_xdist_serialization_exactly() -> None:
    wire = json.loads(json.dumps(record_to_json(FULL)))  # xdist's channel carries JSON-like values only
    assert record_from_json(wire) == FULL


def test_a_record_survives_the_sqlite_ledger_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SqliteLedger(path, Decimal(1))
    ledger.settle(ledger.reserve(Decimal("0.5")), FULL)
    assert ledger.records() == [FULL]
    ledger.close()
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(records)")}
    assert set(RECORD_FIELDS) <= columns


def test_a_record_written_before_providers_were_recorded_reads_as_an_anthropic_call() -> None:
    old = record_to_json(FULL)
    del old["provider"]
    assert record_from_json(old).provider == "anthropic"
    assert record_from_json({**old, "provider": None}).provider == "anthropic"


def test_a_ledger_written_before_the_provider_column_gains_it_and_reads_its_rows_as_anthropic(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = SqliteLedger(path, Decimal(1))
    ledger.settle(ledger.reserve(Decimal("0.5")), FULL)
    ledger.close()
    # An earlier release's file: the same table without the provider column.
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE records DROP COLUMN provider")
    conn.commit()
    conn.close()
    reopened = SqliteLedger(path, Decimal(1))
    reopened.settle(reopened.reserve(Decimal("0.1")), FULL)
    old_row, new_row = reopened.records()
    reopened.close()
    assert (old_row.provider, new_row.provider) == ("anthropic", "openai")
