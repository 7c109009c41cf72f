"""pytest-xdist glue: one budget for all workers, and every worker's costs back on the controller.

The controller starts an SQLite ledger (`sqlite_ledger.SqliteLedger`) and hands its path to each worker
through `node.workerinput`; the workers join it, so `--llm-budget` caps the whole run, not each worker. Each
worker sends its records, refusals, failed attempts and outcomes back through `config.workeroutput` (plain
JSON: money as Decimal text), and the controller adds them to its session, so the terminal summary and the
report read exactly as in a single-process run. A worker that crashes sends nothing: its settled calls are
read back from the shared ledger instead.

This module also decides which ledger a session uses, since that depends on the process's xdist role.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..core.tracking import MONEY_FIELDS, RECORD_FIELDS, CostRecord
from ..metering.ledger import InMemoryLedger, Ledger
from ..reports.model import RefusalInfo
from .settings import Settings

if TYPE_CHECKING:
    from . import CostguardSession

__all__ = [
    "XdistHooks",
    "is_xdist_controller",
    "is_xdist_worker",
    "record_from_json",
    "record_to_json",
    "register_xdist_hooks",
    "session_ledger",
]

LEDGER_KEY = "costguard_ledger"
"""`workerinput` key: the shared ledger's absolute path (absent when workers keep their own ledgers)."""
HOST_KEY = "costguard_host"
"""`workerinput` key: the controller's host name; a worker elsewhere cannot share its file."""
OUTPUT_KEY = "costguard"
"""`workeroutput` key: what a worker spent, for the controller's report."""



def is_xdist_worker(config: pytest.Config) -> bool:
    """Return whether this process is a pytest-xdist worker."""
    return hasattr(config, "workerinput")


def is_xdist_controller(config: pytest.Config) -> bool:
    """Return whether this process distributes tests to pytest-xdist workers."""
    return (
        not is_xdist_worker(config)
        and config.pluginmanager.hasplugin("xdist")
        and config.getoption("dist", "no") != "no"
    )


def _usage_error(option: str, exc: Exception) -> pytest.UsageError:
    return pytest.UsageError(f"{option}: {exc}")


def session_ledger(config: pytest.Config, settings: Settings, tag_source: Callable[[], str | None]) -> Ledger:
    """Return the ledger that holds the session budget in this process.

    An xdist worker joins the ledger its controller started. The controller starts one (in a temporary
    directory unless `--llm-ledger` names a file) when there is a budget to share or a ledger to keep; a
    single process uses an SQLite ledger only when `--llm-ledger` asks for a durable one. Otherwise the
    budget lives in memory.
    """
    workerinput: Mapping[str, Any] | None = getattr(config, "workerinput", None)
    shared: str | None = workerinput.get(LEDGER_KEY) if workerinput is not None else None
    if workerinput is not None and not shared:
        return InMemoryLedger(limit=settings.budget, scope="session")
    controller = is_xdist_controller(config)
    if workerinput is None and settings.ledger is None and not (controller and settings.budget is not None):
        return InMemoryLedger(limit=settings.budget, scope="session")
    # Only now: sqlite3 is not free to import, and most runs keep their budget in memory.
    from ..metering.sqlite_ledger import LedgerError, SqliteLedger

    if workerinput is not None and shared:
        if workerinput.get(HOST_KEY) != socket.gethostname():
            # Separate files would multiply the budget by the number of hosts: refuse rather than overspend.
            raise pytest.UsageError(
                "--llm-budget: pytest-costguard shares the budget through a local file; "
                f"worker {workerinput.get('workerid')} runs on another host than the controller"
            )
        try:
            ledger = SqliteLedger(
                shared, settings.budget, "session", create=False, worker=workerinput.get("workerid"),
                tag_source=tag_source,
            )
        except LedgerError as exc:
            raise _usage_error("--llm-ledger", exc) from None
        config.add_cleanup(ledger.close)
        return ledger

    if settings.ledger is not None:
        from . import user_path

        path = user_path(config, "llm_ledger", settings.ledger)
        scratch = None
    else:
        scratch = tempfile.mkdtemp(prefix="pytest-costguard-")
        path = Path(scratch) / "ledger.sqlite3"
    try:
        ledger = SqliteLedger.fresh(
            path, settings.budget, "session", worker="controller" if controller else None,
            tag_source=tag_source,
        )
    except (LedgerError, OSError) as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise _usage_error("--llm-ledger" if settings.ledger is not None else "--llm-budget", exc) from None
    if scratch is not None:
        # Cleanups run last in, first out: the directory goes after the ledger is closed.
        config.add_cleanup(lambda: shutil.rmtree(scratch, ignore_errors=True))
    config.add_cleanup(ledger.close)
    return ledger


def record_to_json(record: CostRecord) -> dict[str, Any]:
    """Return a record as plain JSON values (money as Decimal text, so nothing is rounded in transit)."""
    out: dict[str, Any] = {name: getattr(record, name) for name in RECORD_FIELDS}
    for name in MONEY_FIELDS:
        if out[name] is not None:
            out[name] = str(out[name])
    return out


def record_from_json(data: Mapping[str, Any]) -> CostRecord:
    """Rebuild a record sent by `record_to_json`."""
    values = {name: data[name] for name in RECORD_FIELDS if name in data}
    for name in MONEY_FIELDS:
        if values.get(name) is not None:
            values[name] = Decimal(values[name])
    return CostRecord(**values)


def worker_output(session: CostguardSession) -> dict[str, Any]:
    """Return what a worker spent, for `config.workeroutput`."""
    guard = session.guard
    # Streams the tests never closed are charged here, before the records leave the worker.
    guard.settle_open()
    return {
        "pid": os.getpid(),
        "records": [record_to_json(r) for r in guard.records],
        "refusals": [
            {"nodeid": r.tag, "scope": r.scope, "worst_case_usd": str(r.amount), "message": r.message}
            for r in guard.refusals
        ],
        "failed_attempts": guard.failed_attempts,
        "outcomes": dict(session.outcomes),
    }


def merge_worker_output(session: CostguardSession, output: Mapping[str, Any]) -> None:
    """Add what a worker spent to the controller's session."""
    session.extra_records.extend(record_from_json(r) for r in output["records"])
    session.extra_refusals.extend(
        RefusalInfo(r["nodeid"], r["scope"], Decimal(r["worst_case_usd"]), r["message"])
        for r in output["refusals"]
    )
    session.extra_failed_attempts += int(output["failed_attempts"])
    # Outcomes normally arrive first, through the test reports xdist forwards; those win.
    for nodeid, outcome in output["outcomes"].items():
        session.outcomes.setdefault(nodeid, outcome)


def recover_crashed_worker(session: CostguardSession, worker: str) -> None:
    """Add what a crashed worker spent, as far as the shared ledger knows, to the controller's session."""
    from ..metering.sqlite_ledger import SqliteLedger

    ledger = session.guard.ledger
    if not isinstance(ledger, SqliteLedger):
        return
    # Its calls in flight may have been billed: charge them at their worst case rather than free them.
    ledger.reclaim(worker=worker)
    session.extra_records.extend(ledger.records(worker=worker))
    session.extra_refusals.extend(
        RefusalInfo(r.tag, r.scope, r.amount, r.message) for r in ledger.refusals(worker=worker)
    )


class XdistHooks:
    """Hooks that exist only under pytest-xdist (registered only when it is installed and active)."""

    def __init__(self, session: CostguardSession) -> None:
        self.session = session

    # -- controller ------------------------------------------------------------------------------------------
    def pytest_configure_node(self, node: Any) -> None:
        from ..metering.sqlite_ledger import SqliteLedger

        ledger = self.session.guard.ledger
        if isinstance(ledger, SqliteLedger):
            node.workerinput[LEDGER_KEY] = str(ledger.path.resolve())
            node.workerinput[HOST_KEY] = socket.gethostname()

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if output is not None:
            merge_worker_output(self.session, output)
        else:
            recover_crashed_worker(self.session, node.workerinput["workerid"])

    # -- worker ----------------------------------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if is_xdist_worker(config):
            config.workeroutput[OUTPUT_KEY] = worker_output(self.session)  # type: ignore[attr-defined]


def register_xdist_hooks(config: pytest.Config, session: CostguardSession) -> None:
    """Register `XdistHooks` when pytest-xdist is installed and this process is its controller or a worker."""
    if config.pluginmanager.hasplugin("xdist") and (is_xdist_worker(config) or is_xdist_controller(config)):
        config.pluginmanager.register(XdistHooks(session), "costguard-xdist")
