"""Choose and open the ledger that holds a session's budget: in memory, an SQLite file shared or kept, or Redis.

A single process keeps its budget in memory unless `--llm-ledger` asks for a durable file. A pytest-xdist
controller with a budget starts an SQLite ledger (in a scratch directory unless `--llm-ledger` names one) and
its workers join it, so the budget caps the whole run rather than each worker. With `--llm-ledger=redis://...`
every process of every run (controller, workers, other machines) joins the budget named by its key on that
server instead.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from .ledger import InMemoryLedger, Ledger

__all__ = ["LedgerChoiceError", "LedgerRequest", "open_session_ledger"]

Role = Literal["single", "controller", "worker"]


class LedgerChoiceError(Exception):
    """The ledger asked for cannot be opened; the message names the option to fix."""


@dataclass(frozen=True, slots=True)
class LedgerRequest:
    """What a session asks of its ledger."""

    budget: Decimal | None
    """The session's cap."""
    role: Role
    """A process on its own, an xdist controller, or one of its workers."""
    path: Path | None = None
    """`--llm-ledger`, resolved (a controller's or single process's file)."""
    shared: str | None = None
    """For a worker: the file its controller started; None when the controller shares none."""
    shared_host: str | None = None
    """For a worker: the host its controller runs on."""
    worker: str | None = None
    """For a worker: its xdist id."""
    url: str | None = None
    """`--llm-ledger=redis://...`: the Redis server holding the shared budget (for every role)."""
    key: str = "pytest-costguard"
    """`--llm-ledger-key`: the shared budget's name on that server."""
    window: int | None = None
    """`--llm-budget-window` in seconds: the shared budget starts again at each UTC-aligned window."""
    run_id: str | None = None
    """Names the run in the shared ledger's records (a worker gets its controller's)."""
    machine: str | None = None
    """Names the machine in the shared ledger's records (default: the host name)."""
    join: bool = False
    """`path` is the session's own new file (its child processes may have created it first): join it rather
    than start it afresh, and leave it to the session to remove."""


def open_session_ledger(
    request: LedgerRequest, tag_source: Callable[[], str | None]
) -> tuple[Ledger, list[Callable[[], None]]]:
    """Open the session's ledger; return it and what to call, in order, when the session ends."""
    if request.url is not None:
        return _open_redis(request, tag_source)
    if request.role == "worker" and not request.shared and request.path is None:
        return InMemoryLedger(limit=request.budget, scope="session"), []
    if request.role != "worker" and request.path is None and not (
        request.role == "controller" and request.budget is not None
    ):
        return InMemoryLedger(limit=request.budget, scope="session"), []
    from .sqlite_ledger import LedgerError, SqliteLedger  # sqlite3 is not free to import

    if request.role == "worker" and request.shared:
        if request.shared_host != socket.gethostname():
            # Separate files would multiply the budget by the number of hosts: refuse rather than overspend.
            raise LedgerChoiceError(
                "--llm-budget: pytest-costguard shares the budget through a local file; "
                f"worker {request.worker} runs on another host than the controller"
            )
        try:
            ledger = SqliteLedger(
                request.shared, request.budget, "session", create=False, worker=request.worker, tag_source=tag_source
            )
        except LedgerError as exc:
            raise LedgerChoiceError(f"--llm-ledger: {exc}") from None
        return ledger, [ledger.close]

    scratch = None if request.path is not None else tempfile.mkdtemp(prefix="pytest-costguard-")
    path = request.path if request.path is not None else Path(str(scratch)) / "ledger.sqlite3"
    worker = {"controller": "controller", "worker": request.worker}.get(request.role)
    try:
        if request.join and request.path is not None:
            ledger = SqliteLedger(path, request.budget, "session", worker=worker, tag_source=tag_source)
        else:
            ledger = SqliteLedger.fresh(path, request.budget, "session", worker=worker, tag_source=tag_source)
    except (LedgerError, OSError) as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise LedgerChoiceError(f"{'--llm-ledger' if request.path is not None else '--llm-budget'}: {exc}") from None
    cleanups: list[Callable[[], None]] = [ledger.close]
    if scratch is not None:
        cleanups.append(lambda: shutil.rmtree(scratch, ignore_errors=True))
    return ledger, cleanups


def _open_redis(
    request: LedgerRequest, tag_source: Callable[[], str | None]
) -> tuple[Ledger, list[Callable[[], None]]]:
    from .redis_ledger import RedisLedger, redact_url

    assert request.url is not None
    try:
        import redis  # noqa: F401
    except ImportError:
        raise LedgerChoiceError(
            f"--llm-ledger: {redact_url(request.url)} needs the redis package: pip install 'pytest-costguard[redis]'"
        ) from None
    from .sqlite_ledger import LedgerError

    try:
        ledger = RedisLedger(
            request.url,
            request.budget,
            "session",
            key=request.key,
            window=request.window,
            run_id=request.run_id,
            machine=request.machine,
            worker={"worker": request.worker, "controller": "controller"}.get(request.role),
            tag_source=tag_source,
        )
    except LedgerError as exc:
        raise LedgerChoiceError(f"--llm-ledger: {exc}") from None
    return ledger, [ledger.close]
