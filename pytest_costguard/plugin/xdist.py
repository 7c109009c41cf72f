"""pytest-xdist glue: moves data between the controller and its workers, nothing more.

The controller tells each worker, through `node.workerinput`, where the shared ledger is (so `--llm-budget`
caps the whole run, not each worker); each worker sends its run's `output()` back through
`config.workeroutput`, and the controller merges it. A worker that crashes sends nothing: what it settled is
read back from the shared ledger instead, its calls in flight charged at their worst case.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import user_path

if TYPE_CHECKING:
    from ..metering.ledgers import LedgerRequest, Role
    from . import CostguardSession
    from .settings import Settings

__all__ = [
    "XdistHooks",
    "is_xdist_controller",
    "is_xdist_worker",
    "ledger_request",
    "register_xdist_hooks",
]

LEDGER_KEY = "costguard_ledger"
"""`workerinput` key: the shared ledger's absolute path (absent when workers keep their own ledgers)."""
HOST_KEY = "costguard_host"
"""`workerinput` key: the controller's host name; a worker elsewhere cannot share its file."""
RUN_KEY = "costguard_run"
"""`workerinput` key: the run id a shared (Redis) ledger's records carry, the same in every worker."""
OUTPUT_KEY = "costguard"
"""`workeroutput` key: what a worker spent, for the controller's report."""
REPLAY_KEY = "costguard_replay"
"""`workeroutput` key: the cassettes a worker wrote and the recordings it left unused."""



def __getattr__(name: str) -> Any:
    # The names of `domain.records.record_to_dict` / `record_from_dict` before 0.2, loaded on use.
    if name in ("record_to_json", "record_from_json"):
        from ..domain import records

        return getattr(records, name.replace("json", "dict"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def ledger_request(config: pytest.Config, settings: Settings, shared_file: str | None = None) -> LedgerRequest:
    """What this process's role asks of the session ledger (see `metering.ledgers`).

    `shared_file` is the file the session told its child processes to join (`metering.children`): without
    `--llm-ledger` the session keeps its ledger there, so they share its budget.
    """
    from ..metering.ledgers import LedgerRequest

    workerinput: Mapping[str, Any] | None = getattr(config, "workerinput", None)
    if settings.redis_url is not None:
        # Every process joins the shared budget on its own; the run id comes from the controller.
        role: Role = (
            "worker" if workerinput is not None else "controller" if is_xdist_controller(config) else "single"
        )
        return LedgerRequest(
            settings.budget,
            role,
            worker=workerinput.get("workerid") if workerinput is not None else None,
            url=settings.redis_url,
            key=settings.ledger_key,
            window=settings.budget_window,
            run_id=(workerinput or {}).get(RUN_KEY) or os.environ.get("COSTGUARD_RUN_ID") or None,
            machine=os.environ.get("COSTGUARD_MACHINE") or None,
        )
    if workerinput is not None:
        shared = workerinput.get(LEDGER_KEY)
        return LedgerRequest(
            settings.budget,
            "worker",
            shared=shared,
            shared_host=workerinput.get(HOST_KEY),
            worker=workerinput.get("workerid"),
            # A worker of a controller that shares no file keeps its own, which its children join.
            path=Path(shared_file) if shared is None and shared_file is not None else None,
            join=True,
        )
    role = "controller" if is_xdist_controller(config) else "single"
    if settings.ledger is not None:
        return LedgerRequest(settings.budget, role, path=user_path(config, "llm_ledger", settings.ledger))
    # The session's own file, which its children may have opened first: joined, never started afresh.
    path = Path(shared_file) if shared_file is not None else None
    return LedgerRequest(settings.budget, role, path=path, join=True)


class XdistHooks:
    """Hooks that exist only under pytest-xdist (registered only when it is installed and active)."""

    def __init__(self, session: CostguardSession) -> None:
        self.session = session

    # -- controller ------------------------------------------------------------------------------------------
    def pytest_configure_node(self, node: Any) -> None:
        if not self.session.active:
            return  # inert: no ledger to share (workers that meter, asked by a marker, keep their own)
        from ..metering.sqlite_ledger import SqliteLedger

        ledger = self.session.run.guard.ledger
        run_id = getattr(ledger, "run_id", None)
        if isinstance(run_id, str):  # a shared (Redis) ledger: workers join it themselves, as this run
            node.workerinput[RUN_KEY] = run_id
        if isinstance(ledger, SqliteLedger):
            node.workerinput[LEDGER_KEY] = str(ledger.path.resolve())
            node.workerinput[HOST_KEY] = socket.gethostname()

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        replayed = getattr(node, "workeroutput", {}).get(REPLAY_KEY)
        if replayed is not None:
            self.session.replay.merge(replayed)
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if output is not None:
            self.session.run.merge(output)
        else:
            self._recover(node.workerinput["workerid"])

    def _recover(self, worker: str) -> None:
        """Add what a crashed worker spent, as far as the shared ledger knows."""
        from ..metering.sqlite_ledger import SqliteLedger

        guard = self.session.run.guard_if_started()
        ledger = guard.ledger if guard is not None else None
        if isinstance(ledger, SqliteLedger):
            # Its calls in flight may have been billed: charge them at their worst case rather than free them.
            ledger.reclaim(worker=worker)
            self.session.run.add_remote(ledger.records(worker=worker), ledger.refusals(worker=worker))
        elif getattr(ledger, "run_id", None) is not None:
            from ..metering.redis_ledger import RedisLedger
            from ..metering.sqlite_ledger import LedgerError

            if isinstance(ledger, RedisLedger):
                try:
                    ledger.reclaim(worker=worker)
                    self.session.run.add_remote(ledger.records(worker=worker), ledger.refusals(worker=worker))
                except LedgerError:
                    pass  # the server is gone: the worker's holds are charged when their leases run out

    # -- worker ----------------------------------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if is_xdist_worker(config) and self.session.active:
            self.session.collect_children()  # the worker's children reach the controller in its output
            config.workeroutput[OUTPUT_KEY] = self.session.run.output()  # type: ignore[attr-defined]
            config.workeroutput[REPLAY_KEY] = self.session.replay.output()  # type: ignore[attr-defined]


def register_xdist_hooks(config: pytest.Config, session: CostguardSession) -> None:
    """Register `XdistHooks` when pytest-xdist is installed and this process is its controller or a worker."""
    if config.pluginmanager.hasplugin("xdist") and (is_xdist_worker(config) or is_xdist_controller(config)):
        config.pluginmanager.register(XdistHooks(session), "costguard-xdist")
