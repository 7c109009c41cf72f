"""A Message Batch created in one process and read in another (xdist workers sharing the SQLite ledger) is
settled at its real cost, charged to the test that created it (issue 11, docs/budgets.md).

The creating process publishes which reservation holds for the batch in the shared ledger; the process that
reads the results settles that reservation. Whichever settles it first wins (the creator at its session's end,
at the worst case, if nobody read the results by then): it is never charged twice, never below the bill. A
ledger that cannot share (in memory, Redis) leaves the batch charged at its worst case, estimated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest

from pytest_costguard import CostGuard, GuardConfig, InMemoryLedger, PriceBook
from pytest_costguard.core.budget import bound_request
from pytest_costguard.core.pricing import usage_from_response
from pytest_costguard.emulator import Emulator
from pytest_costguard.metering.ledger import Ledger
from pytest_costguard.metering.scope import Scope, running
from pytest_costguard.metering.sqlite_ledger import SqliteLedger, read_ledger
from pytest_costguard.providers.anthropic.middleware import middleware_for

pytest_plugins = "pytester"

MODEL = "claude-haiku-4-5"
PARAMS = {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": "a question " * 30}]}

SUITE = """
import json, os, time
from pathlib import Path

import anthropic

HANDOFF = Path(os.environ["BATCH_HANDOFF"])
DONE = HANDOFF.with_name("read.json")
PARAMS = json.loads(os.environ["BATCH_PARAMS"])


def client():
    return anthropic.Anthropic(base_url=os.environ["EMULATOR_URL"], api_key="k", max_retries=0)


def wait_for(path):
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path.name} never came"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_creates():
    with client() as sdk:
        batch = sdk.messages.batches.create(requests=[{"custom_id": "a", "params": PARAMS}])
    HANDOFF.write_text(json.dumps({"id": batch.id, "worker": os.environ.get("PYTEST_XDIST_WORKER")}))
    # Stay in the session until the other worker has read the results (else this worker's session could end
    # first, charging the worst case: see test_a_creator_whose_session_ends_first_...).
    wait_for(DONE)


def test_reads():
    handoff = wait_for(HANDOFF)
    assert handoff["worker"] != os.environ.get("PYTEST_XDIST_WORKER")  # created on the other worker
    with client() as sdk:
        assert [r.result.type for r in sdk.messages.batches.results(handoff["id"])] == ["succeeded"]
    DONE.write_text("{}")
"""


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def billed(emulator: Emulator) -> Decimal:
    book = PriceBook()
    return sum((book.cost(usage_from_response(e["usage"]), e["model"]) for e in emulator.billed), Decimal(0))


def worst() -> Decimal:
    return bound_request(PARAMS, PriceBook().rates(MODEL, batch=True)).cost


class Process:
    """One process's guard and client, on the ledger it is given (a shared file, or its own memory)."""

    def __init__(self, emulator: Emulator, ledger: Ledger) -> None:
        self.guard = CostGuard(GuardConfig(), ledger)
        self.sdk = anthropic.Anthropic(
            base_url=emulator.base_url, api_key="k", max_retries=0, middleware=[middleware_for(self.guard)]
        )

    def create(self) -> str:
        with running(self.guard, Scope("test_a.py::test_creates")):
            batch = self.sdk.messages.batches.create(requests=[{"custom_id": "a", "params": PARAMS}])  # type: ignore[arg-type,list-item]
        return batch.id

    def read(self, batch_id: str) -> list[str]:
        with running(self.guard, Scope("test_b.py::test_reads")):
            return [r.result.type for r in self.sdk.messages.batches.results(batch_id)]


@pytest.fixture
def two_processes(emulator: Emulator, tmp_path: Path) -> Iterator[tuple[Process, Process, Path]]:
    emulator.reset()
    path = tmp_path / "ledger.sqlite3"
    shared = SqliteLedger.fresh(path, Decimal(1), "session", worker="gw0")
    joined = SqliteLedger(path, Decimal(1), "session", create=False, worker="gw1")
    creator, reader = Process(emulator, shared), Process(emulator, joined)
    yield creator, reader, path
    for process in (creator, reader):
        process.sdk.close()
    joined.close()
    shared.close()


def test_results_read_by_another_process_settle_the_batch_at_its_real_cost_for_the_creating_test(
    emulator: Emulator, two_processes: tuple[Process, Process, Path]
) -> None:
    creator, reader, path = two_processes
    batch_id = creator.create()
    assert creator.guard.ledger.reserved == worst()

    assert reader.read(batch_id) == ["succeeded"]

    [record] = reader.guard.records
    assert (record.tag, record.estimated) == ("test_a.py::test_creates", False)
    assert record.cost_usd == billed(emulator) > 0
    assert creator.guard.ledger.reserved == 0 and creator.guard.ledger.spent == record.cost_usd
    creator.guard.settle_open()  # the creating process's session ends: nothing left to charge
    assert creator.guard.records == []
    reader.read(batch_id)  # read again: settles nothing twice
    reader.guard.settle_open()
    assert len(reader.guard.records) == 1
    assert [r.cost_usd for r in read_ledger(path).records] == [record.cost_usd]


def test_a_creator_whose_session_ends_first_charges_the_worst_case_and_a_later_reader_settles_nothing(
    emulator: Emulator, two_processes: tuple[Process, Process, Path]
) -> None:
    creator, reader, path = two_processes
    batch_id = creator.create()
    creator.guard.settle_open()
    [record] = creator.guard.records
    assert record.estimated and record.cost_usd == worst()

    assert reader.read(batch_id) == ["succeeded"]
    reader.guard.settle_open()

    assert reader.guard.records == []
    assert read_ledger(path).spent == worst() > billed(emulator)  # fails closed: never below the bill


def test_without_a_shared_ledger_results_read_elsewhere_leave_the_batch_at_its_worst_case(emulator: Emulator) -> None:
    emulator.reset()
    creator = Process(emulator, InMemoryLedger(limit=Decimal(1)))
    reader = Process(emulator, InMemoryLedger(limit=Decimal(1)))
    try:
        batch_id = creator.create()
        assert reader.read(batch_id) == ["succeeded"]
        assert reader.guard.records == []
        creator.guard.settle_open()
        [record] = creator.guard.records
        assert record.estimated and record.cost_usd == worst() > billed(emulator)
    finally:
        creator.sdk.close()
        reader.sdk.close()


@pytest.mark.slow
def test_under_xdist_a_batch_read_on_another_worker_is_settled_at_its_real_cost_for_its_creator(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    emulator.reset()
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio", prepend=" ")
    monkeypatch.setenv("EMULATOR_URL", emulator.base_url)
    monkeypatch.setenv("BATCH_HANDOFF", str(pytester.path / "handoff.json"))
    monkeypatch.setenv("BATCH_PARAMS", json.dumps(PARAMS))
    pytester.makepyfile(test_suite=SUITE)

    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--llm-budget=1", "--llm-report=r.json")

    result.assert_outcomes(passed=2)
    assert len(emulator.billed) == 1
    report = json.loads((pytester.path / "r.json").read_text())
    [call] = report["calls"]  # settled once, by the reading worker, for the creating test
    assert call["nodeid"] == "test_suite.py::test_creates"
    assert call["estimated"] is False
    assert Decimal(str(call["cost_usd"])) == Decimal(str(report["total_cost_usd"])) == billed(emulator) > 0
    assert Decimal(str(call["reserved_usd"])) == worst()
    assert "estimated" not in result.stdout.str()


def test_a_creator_reading_its_own_results_on_a_shared_ledger_settles_once(
    emulator: Emulator, two_processes: tuple[Process, Process, Path]
) -> None:
    creator, _, path = two_processes
    batch_id = creator.create()
    assert creator.read(batch_id) == ["succeeded"]
    creator.guard.settle_open()
    [record] = creator.guard.records
    assert not record.estimated and record.cost_usd == billed(emulator)
    assert [r.cost_usd for r in read_ledger(path).records] == [record.cost_usd]
    assert creator.guard.ledger.reserved == 0
