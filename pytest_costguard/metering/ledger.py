"""Ledgers: where reservations are held and settled against a budget.

A call reserves its worst-case cost before it is sent; when the response arrives the reservation is settled
to the real cost (or released when the attempt failed). The budget is never exceeded as long as every
call's real cost is within its worst case, whatever the interleaving of threads and tasks, because admission
checks `spent + reserved + amount <= limit` under one lock.

`InMemoryLedger` serves one process; `sqlite_ledger.SqliteLedger` keeps the same promise across processes
(pytest-xdist workers) and on disk; `redis_ledger.RedisLedger` across machines, on a Redis server.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..core.budget import BudgetExceededError, refusal_frame
from ..domain.records import CostRecord

__all__ = ["BatchSharing", "InMemoryLedger", "Ledger", "Reservation"]


class Reservation(NamedTuple):
    """Money held for one call in flight (a tuple: one is made for every call)."""

    id: int
    """Identifies the reservation within its ledger."""
    amount: Decimal
    """The worst-case cost held."""


class Ledger(Protocol):
    """What the guard needs from a budget's bookkeeping."""

    limit: Decimal | None

    def reserve(self, amount: Decimal) -> Reservation:
        """Hold `amount` or raise `BudgetExceededError` when it does not fit."""
        ...

    def settle(self, reservation: Reservation, record: CostRecord) -> None:
        """Replace a reservation by the real cost of the call it held for."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was not billed."""
        ...

    @property
    def spent(self) -> Decimal:
        """Money settled so far."""
        ...

    @property
    def reserved(self) -> Decimal:
        """Money held by calls in flight."""
        ...

    @property
    def refused(self) -> int:
        """Calls refused so far."""
        ...

    @property
    def remaining(self) -> Decimal | None:
        """Budget not spent nor held, or None without a limit."""
        ...


@runtime_checkable
class BatchSharing(Protocol):
    """A ledger shared by processes that can also tell them which reservation holds for a Message Batch, so that
    the process reading its results settles it, whichever process created it (`sqlite_ledger.SqliteLedger`)."""

    def settle_held(self, reservation: Reservation, record: CostRecord) -> bool:
        """Settle `reservation` unless it is not held any more; return whether this call settled it."""
        ...

    def share_batch(self, batch_id: str, reservation: Reservation, details: Mapping[str, Any]) -> None:
        """Publish the reservation holding for `batch_id`, with what settling it needs."""
        ...

    def shared_batch(self, batch_id: str) -> tuple[Reservation, dict[str, Any]] | None:
        """The reservation and details published for `batch_id`, or None."""
        ...


@dataclass(eq=False)
class InMemoryLedger:
    """A thread-safe ledger for one process."""

    limit: Decimal | None = None
    """The budget in USD; None admits every call."""
    scope: str = "session"
    """Names the budget in refusal messages ("session", "test tests/test_x.py::test_y")."""
    spent_before: Decimal = Decimal(0)
    """Money already spent against `limit` before this ledger opened (a tracker's total, for the pipeline)."""
    _spent: Decimal = field(default=Decimal(0), init=False)
    _held: dict[int, Decimal] = field(default_factory=dict, init=False)
    _held_total: Decimal = field(default=Decimal(0), init=False)
    _refused: int = field(default=0, init=False)
    _ids: itertools.count[int] = field(default_factory=itertools.count, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._spent = self.spent_before

    def reserve(self, amount: Decimal) -> Reservation:
        """Hold `amount` or raise `BudgetExceededError` when it does not fit."""
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        with self._lock:
            if self.limit is not None and self._spent + self._held_total + amount > self.limit:
                self._refused += 1
                raise BudgetExceededError(self._spent, self.limit, amount, scope=self.scope, reserved=self._held_total)
            reservation_id = next(self._ids)
            self._held[reservation_id] = amount
            self._held_total += amount
        return Reservation(reservation_id, amount)

    def _drop(self, reservation: Reservation) -> bool:
        amount = self._held.pop(reservation.id, None)
        if amount is None:
            return False
        self._held_total -= amount
        return True

    def settle(self, reservation: Reservation, record: CostRecord) -> None:
        """Replace a reservation by the real cost of the call it held for (once; later calls are ignored)."""
        with self._lock:
            amount = self._held.pop(reservation.id, None)
            if amount is not None:
                self._held_total -= amount
                self._spent += record.cost_usd

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was not billed."""
        with self._lock:
            self._drop(reservation)

    @property
    def spent(self) -> Decimal:
        """Money settled so far."""
        return self._spent

    @property
    def reserved(self) -> Decimal:
        """Money held by calls in flight."""
        return self._held_total

    @property
    def refused(self) -> int:
        """Calls refused so far."""
        return self._refused

    @property
    def remaining(self) -> Decimal | None:
        """Budget not spent nor held, or None without a limit."""
        if self.limit is None:
            return None
        return max(self.limit - self._spent - self._held_total, Decimal(0))
