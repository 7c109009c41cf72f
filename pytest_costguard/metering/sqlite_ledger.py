"""A ledger in an SQLite file: one budget shared by processes (pytest-xdist workers), durable across crashes.

Admission is atomic across processes: `reserve` reads what is spent and held and inserts its reservation in
one `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock first, so two processes can never both
see room that only one of them fits. Whatever the timing, the money settled by all processes stays within
the limit as long as each call's real cost is within the worst case it reserved.

`settle` stores the call's full `CostRecord` in the transaction that drops its reservation. Every write
commits in WAL mode with `synchronous=NORMAL`: a committed transaction is in the WAL file the moment COMMIT
returns, so a run killed with SIGKILL leaves a file `read_ledger` and `costguard report` can account for to the
last settled call. Only an operating-system crash or a power cut may lose the last commits; syncing every
settlement to the disk (`synchronous=FULL`) would guard against that too, at about five times the cost.
The WAL is copied back into the file (checkpointed) by a thread of the writing process, about as often as
SQLite's automatic checkpoint would, so that no call waits for its syncs (`_Checkpointer`).

Money is exact, never SQLite REAL. Every reservation and every record keeps its amount as Decimal text, as
given. For admission the ledger also counts whole picodollars ($1e-12) in SQLite integers, which add exactly
without being read into Python first: each reservation holds its amount in picodollars, and each record
carries the balance after it (`spent_pico`: the money settled up to and including that call), so what is spent
is the last record's balance and what is held is `sum()` over the reservations. An amount with a part finer
than a picodollar is rounded up (a reservation's and a cost alike) and a limit's is rounded down, so the cap
holds; what rounding added to the balance is carried, exactly, as Decimal text (`spent_excess`), so `spent` is
exact whatever the precision. An SQLite integer overflowing would turn into a float: a CHECK constraint makes
that an error instead, at about $9.2 million. Ledgers of version 1 (totals as Decimal text) can still be read
by `read_ledger` and `costguard report`, and replaced by `SqliteLedger.fresh`, not joined.

A process that dies with calls in flight leaves their reservations behind. Reservations carry the holder's
pid and host; when a call would be refused, reservations of holders that are gone are settled as charges at
their worst case, with a record (model "unknown", estimated) saying so: nothing stays in flight forever, and
the money stays counted, because the dead call may have been billed. Freeing it instead could overspend.
"""

from __future__ import annotations

import decimal
import json
import os
import random
import socket
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..core.budget import BudgetExceededError, refusal_frame
from ..domain.money import MoneyError
from ..domain.records import RECORD_FIELDS, CostRecord, Refusal, record_from_dict, record_to_dict
from .ledger import Reservation

__all__ = [
    "LEDGER_SCHEMA",
    "LEDGER_VERSION",
    "LedgerError",
    "LedgerRefusal",
    "LedgerSnapshot",
    "SqliteLedger",
    "read_ledger",
]

LEDGER_SCHEMA = "pytest-costguard-ledger"
LEDGER_VERSION = 2
"""2: balances in integer picodollars. 1: a total as Decimal text (still read by `read_ledger`)."""
_READABLE_VERSIONS = ("1", "2")
UNKNOWN_MODEL = "unknown"
"""The model of a call charged because its process died in flight (its request is not in the ledger)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"
_PAGE_SIZE = 1024
"""Small pages (SQLite's default is 4096): a commit writes every page it changed to the WAL whole, and each of
the ledger's transactions changes a small row or two."""

_PICO_EXPONENT = 12
_PICOS_PER_DOLLAR = 10**_PICO_EXPONENT
"""Admission counts picodollars: 10**12 to the dollar."""
_MAX_PICO = 2**63 - 1
"""The most an SQLite integer holds: about $9.2 million."""
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow, decimal.DivisionByZero],
)
"""Decimal arithmetic that never rounds (the default context rounds to 28 digits)."""

# No semicolons in the comments: the script is split on them.
_DDL = """
CREATE TABLE IF NOT EXISTS costguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Ids are random 64-bit integers (random() in the INSERT), so a late settle of a dropped reservation cannot
-- hit a newer one: an id comes again with a chance of about 1 in 2**64 for each reservation held at the time.
-- AUTOINCREMENT would guarantee the same but write its sqlite_sequence page with every reservation.
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY,
    amount TEXT NOT NULL,
    amount_pico INTEGER NOT NULL CHECK (typeof(amount_pico) = 'integer'),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    worker TEXT,
    tag TEXT,
    created TEXT NOT NULL
);
-- Never deleted, so ids grow without AUTOINCREMENT and the last id is the last settlement. spent_pico and
-- spent_excess: the balance after this call (see the module's docstring). Spent in dollars, exactly, is
-- spent_pico / 10**12 - spent_excess.
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    reservation_id INTEGER,
    pid INTEGER NOT NULL,
    worker TEXT,
    settled TEXT NOT NULL,
    reclaimed INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd TEXT NOT NULL,
    requested_model TEXT,
    cache_creation_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    web_search_requests INTEGER NOT NULL,
    tag TEXT,
    streamed INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost_at_requested_usd TEXT,
    cost_uncached_usd TEXT,
    reserved_usd TEXT,
    unpriced INTEGER NOT NULL DEFAULT 0,
    replayed INTEGER NOT NULL DEFAULT 0,
    replay_cost_usd TEXT,
    provider TEXT NOT NULL DEFAULT 'anthropic',
    spent_pico INTEGER NOT NULL CHECK (typeof(spent_pico) = 'integer'),
    spent_excess TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    worker TEXT,
    tag TEXT,
    scope TEXT NOT NULL,
    amount TEXT NOT NULL,
    message TEXT NOT NULL,
    created TEXT NOT NULL
);
"""


# The statements of the hot path, prepared once per connection (sqlite3 caches them by text).
# SQLite writes the timestamps itself, in the format of datetime.isoformat(timespec="milliseconds") in UTC.
_SQL_NOW = "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
_LAST_RECORD = "(SELECT {} FROM records ORDER BY id DESC LIMIT 1)"
_SPENT_PICO = f"coalesce({_LAST_RECORD.format('spent_pico')}, 0)"
_READ_BALANCE = f"SELECT {_SPENT_PICO}, (SELECT coalesce(sum(amount_pico), 0) FROM reservations)"
_READ_SPENT = "SELECT spent_pico, spent_excess FROM records ORDER BY id DESC LIMIT 1"
_RESERVE = (
    "INSERT INTO reservations (id, amount, amount_pico, pid, host, worker, tag, created) "
    f"VALUES (random(), ?, ?, ?, ?, ?, ?, {_SQL_NOW})"
)
_DELETE_RESERVATION = "DELETE FROM reservations WHERE id = ?"
_RECORD_COLUMNS = (
    f"reservation_id, pid, worker, reclaimed, {', '.join(RECORD_FIELDS)}, settled, spent_pico, spent_excess"
)
_RECORD_PARAMETERS = f"?, ?, ?, ?, {', '.join('?' for _ in RECORD_FIELDS)}, {_SQL_NOW}, ? + {_SPENT_PICO}"
# The balance is the last record's plus this cost, added by SQLite: no read of it into Python first.
_INSERT_RECORD = (
    f"INSERT INTO records ({_RECORD_COLUMNS}) "
    f"VALUES ({_RECORD_PARAMETERS}, coalesce({_LAST_RECORD.format('spent_excess')}, '0'))"
)
# A cost with a sub-picodollar part: the excess is computed in Python (Decimal) and given.
_INSERT_RECORD_EXCESS = f"INSERT INTO records ({_RECORD_COLUMNS}) VALUES ({_RECORD_PARAMETERS}, ?)"
_INSERT_REFUSAL = (
    f"INSERT INTO refusals (pid, worker, tag, scope, amount, message, created) VALUES (?, ?, ?, ?, ?, ?, {_SQL_NOW})"
)


_BATCHES_DDL = """CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    reservation_id INTEGER NOT NULL,
    amount TEXT NOT NULL,
    details TEXT NOT NULL,
    created TEXT NOT NULL
)"""
"""Message Batches whose results another process may read: the reservation holding for each, by batch id."""


class LedgerError(Exception):
    """A ledger file that cannot be used: missing, not SQLite, not ours, another version, or stuck locked."""


LedgerRefusal = Refusal
"""The name of `domain.records.Refusal` here before 0.2 (its `amount` is now `worst_case_usd`)."""


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    """Everything a ledger file holds, read at one moment."""

    path: str
    """Where the ledger is."""
    limit: Decimal | None
    """The budget it enforced."""
    scope: str
    """The budget's name."""
    created: str
    """When the ledger was started (ISO 8601, UTC)."""
    spent: Decimal
    """Money settled, including calls charged because their process died in flight."""
    records: tuple[CostRecord, ...]
    """Every settled call, in settlement order."""
    refusals: tuple[Refusal, ...]
    """Every refused call."""
    in_flight: int
    """Reservations still held: calls that had not ended when the file was read."""
    in_flight_usd: Decimal
    """Their worst-case total."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _money(text: str | None) -> Decimal:
    try:
        return Decimal(text) if text is not None else Decimal(0)
    except (InvalidOperation, TypeError):
        raise LedgerError(f"corrupt amount {text!r} in the ledger") from None


def _pico_ceil(amount: Decimal) -> tuple[int, bool]:
    """`amount` in whole picodollars, rounded up, and whether that is exact.

    Integer arithmetic on the amount's exact ratio: exact at any precision, and cheaper than Decimal's own
    (`reserve` and `settle` write it out).
    """
    numerator, denominator = amount.as_integer_ratio()
    pico, rest = divmod(numerator * _PICOS_PER_DOLLAR, denominator)
    return (pico + 1, False) if rest else (pico, True)


def _dollars(pico: int) -> Decimal:
    """Whole picodollars as dollars, without the unit's trailing zeros (1500000000 -> Decimal('0.0015'))."""
    amount = Decimal(pico).scaleb(-_PICO_EXPONENT, _EXACT)
    if amount == amount.to_integral_value():
        return amount.quantize(Decimal(1), context=_EXACT)
    return amount.normalize(_EXACT)


def _exact_sum(amounts: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for amount in amounts:
        total = _EXACT.add(total, amount)
    return total


def _record_row(record: CostRecord) -> list[Any]:
    values = record_to_dict(record)
    return [values[name] for name in RECORD_FIELDS]  # bools bind as 0 and 1


def _record_from_row(row: sqlite3.Row) -> CostRecord:
    columns = row.keys()  # a ledger of an earlier release lacks the newer fields: they take their defaults
    try:
        return record_from_dict({name: row[name] for name in RECORD_FIELDS if name in columns})
    except (MoneyError, TypeError, ValueError) as exc:
        raise LedgerError(f"corrupt record in the ledger ({exc})") from None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def pid_alive(pid: int) -> bool:
    """Return whether process `pid` on this host still runs (a zombie counts as gone)."""
    if sys.platform == "win32":
        # os.kill(pid, 0) would terminate the process on Windows: assume it lives (its holds stay held).
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ")".
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class SqliteLedger:
    """A ledger in an SQLite file that processes share: one budget for all of them, safe across crashes.

    `SqliteLedger(path, limit)` joins the ledger at `path`, creating it when the file does not exist
    (`create=False` insists that it does, as xdist workers do). `SqliteLedger.fresh` starts a new one.
    """

    _checkpoint_in_background = True
    """Checkpoint the WAL from a thread (`_checkpoint_soon`); False leaves it to SQLite's automatic one
    (`benchmarks/bench_ledger.py` measures both side by side)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        limit: Decimal | None = None,
        scope: str = "session",
        *,
        create: bool = True,
        worker: str | None = None,
        tag_source: Callable[[], str | None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.limit = limit
        self.scope = scope
        self.worker = worker
        """Names this process in the rows it writes (an xdist worker id such as "gw0")."""
        self.tag_source = tag_source
        """Returns the running test's node id, stored with reservations and refusals."""
        self.timeout = timeout
        # Admission compares whole picodollars: the limit rounded down, every amount rounded up.
        self._limit_pico = None
        if limit is not None:
            numerator, denominator = limit.as_integer_ratio()
            self._limit_pico = numerator * _PICOS_PER_DOLLAR // denominator
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        """Held by every transaction of this process on the ledger, and across a fork (`_hold_for_fork`)."""
        self._checkpointer: _Checkpointer | None = None
        _LEDGERS.add(self)
        self._pid = os.getpid()
        self._holder_pid: int | None = None
        """This process, when it started the ledger (`fresh`) and holds it until `close`."""
        self._conn: sqlite3.Connection | None = None
        with self._lock:  # creating the file writes it
            self._conn = self._open(create=create)
        self._cursor = self._conn.cursor()
        """Runs the writes: one cursor reused rather than a new one per statement."""
        self._commits = 0
        self._left: tuple[sqlite3.Connection, int, Decimal] | None = None
        """What `remaining` last read (the limit less spent and held, not clamped at zero), kept as this
        process's own writes move it: the connection, its `PRAGMA data_version` then, and the amount."""
        self._moved: Decimal | None = None
        """Set by a write that knows how it changed what is left; any other write forgets `_left`."""
        stored = self._meta(self._conn).get("limit_usd", "")
        stored_limit = _money(stored) if stored else None
        if stored_limit != limit:
            self.close()
            raise LedgerError(
                f"{self.path}: this ledger enforces a budget of {stored or 'none'}, not {limit or 'none'}"
            )

    @classmethod
    def fresh(
        cls,
        path: str | os.PathLike[str],
        limit: Decimal | None = None,
        scope: str = "session",
        **kwargs: Any,
    ) -> SqliteLedger:
        """Start a new ledger at `path`, replacing an earlier ledger there (never another kind of file).

        The new ledger names this process as its holder until `close`: another run that would start afresh on
        the same path while this one lives is refused (`LedgerError`) rather than deleting a live ledger.
        """
        target = Path(path)
        if target.exists() and not target.is_file():
            raise LedgerError(f"{target}: not a regular file (a directory or a device cannot hold a ledger)")
        if target.exists() and target.stat().st_size > 0:
            read_ledger(target)  # raises LedgerError for anything that is not one of our ledgers
            _refuse_if_held(target)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        ledger = cls(target, limit, scope, create=True, **kwargs)
        try:
            ledger._claim()
        except BaseException:
            ledger.close()
            raise
        return ledger

    def _claim(self) -> None:
        """Name this process (pid and host) as the ledger's holder, until `close`."""
        try:
            with self._write() as cursor:
                cursor.execute(
                    "INSERT OR REPLACE INTO costguard_meta (key, value) VALUES (?, ?)",
                    (_HOLDER_KEY, f"{os.getpid()}@{self._host}"),
                )
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: cannot write the ledger ({exc})") from None
        self._holder_pid = os.getpid()

    # -- connection ------------------------------------------------------------------------------------------
    def _open(self, *, create: bool) -> sqlite3.Connection:
        if not create and not self.path.exists():
            raise LedgerError(f"{self.path}: no such ledger")
        conn = _connect(self.path, mode="rwc" if create else "rw", timeout=self.timeout)
        try:
            tables = _tables(conn, self.path)
            if not tables:
                if not create:
                    raise LedgerError(f"{self.path}: an empty file, not a pytest-costguard ledger")
                self._initialize(conn)
                tables = _tables(conn, self.path)
            version = _check_schema(conn, self.path, tables)
            if version != str(LEDGER_VERSION):
                raise LedgerError(
                    f"{self.path}: a ledger of an earlier pytest-costguard (version {version}); this one writes "
                    f"version {LEDGER_VERSION}: `costguard report` still reads it, and a new run replaces it"
                )
            _add_missing_columns(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            # A read-only file or place, a full disk: a usage error naming the path, not a traceback.
            raise LedgerError(f"{self.path}: cannot hold a ledger here ({exc})") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialize(self, conn: sqlite3.Connection) -> None:
        # Only a new file takes a page size: before any table exists.
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        # WAL: readers (reports, `spent`) never block the writer, and commits append instead of rewriting.
        conn.execute("PRAGMA journal_mode=WAL")
        with self._transaction(conn):
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            # INSERT OR IGNORE: another process may have initialized the file between our check and our lock.
            conn.executemany(
                "INSERT OR IGNORE INTO costguard_meta (key, value) VALUES (?, ?)",
                [
                    ("schema", LEDGER_SCHEMA),
                    ("version", str(LEDGER_VERSION)),
                    ("limit_usd", "" if self.limit is None else str(self.limit)),
                    ("scope", self.scope),
                    ("created", _now()),
                ],
            )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # A connection must not cross a fork: the child opens its own (the parent's is left alone).
            self._pid = os.getpid()
            self._conn = self._open(create=False)
            self._cursor = self._conn.cursor()
        return self._conn

    def close(self) -> None:
        """Close this process's connection (the file stays; other processes are unaffected)."""
        if self._holder_pid == os.getpid() and self._conn is not None:
            self._holder_pid = None
            try:
                with self._write() as cursor:
                    cursor.execute("DELETE FROM costguard_meta WHERE key = ?", (_HOLDER_KEY,))
            except (sqlite3.Error, LedgerError):
                pass  # a holder that is gone no longer blocks: the next run checks its pid
        with self._lock:
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None and checkpointer.pid == os.getpid():
                checkpointer.stop()
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._left = None

    def _lock_for_writing(self, target: sqlite3.Connection | sqlite3.Cursor) -> None:
        """Take SQLite's write lock (BEGIN IMMEDIATE), waiting for it up to `timeout`."""
        started = time.monotonic()
        while True:
            try:
                target.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # The busy timeout already waited; SQLite still returns BUSY without waiting in some cases
                # (WAL recovery by another connection), so try again until our own deadline.
                if not _is_busy(exc):
                    raise
                if time.monotonic() >= started + self.timeout:
                    raise LedgerError(f"{self.path}: the ledger stayed locked for {self.timeout:g} s ({exc})") from None
                time.sleep(random.uniform(0.001, 0.01))

    def _begin(self) -> sqlite3.Cursor:
        """Start a write transaction on this process's connection and return its cursor.

        The caller holds `_lock` and ends the transaction: COMMIT, or `_rollback` when anything raises (COMMIT
        included). `reserve` and `settle` write this out rather than use the `_write()` context manager: between
        SQLite's system calls, which leave the CPU's caches cold, each layer of Python cost microseconds there.
        """
        if self._conn is None or self._pid != os.getpid():
            self._connection()
        self._lock_for_writing(self._cursor)
        return self._cursor

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Hold SQLite's write lock for the block: commit when it ends, roll back when it raises."""
        self._lock_for_writing(conn)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """This process's lock and a write transaction on its connection, for the block."""
        with self._lock:
            left, self._left, self._moved = self._left, None, None
            cursor = self._begin()
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                _rollback(cursor.connection)
                raise
            if left is not None and self._moved is not None and left[0] is self._conn:
                self._left = (left[0], left[1], _EXACT.add(left[2], self._moved))
            self._commits += 1
            if self._commits % _CHECKPOINT_EVERY == 1:
                self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """Have this process's checkpointer copy the WAL back into the file, on its own thread.

        SQLite would otherwise checkpoint inside whichever commit takes the WAL past 1000 pages: two syncs
        and a copy, milliseconds charged to one call in a few hundred (the ledger's mean was twice its p50).
        The thread does the same work as often, so what a power cut may lose is unchanged; the commit that
        triggers it no longer waits. The connection's own automatic checkpoint stays, ten times further out,
        as a backstop should the thread fall behind or be unable to run.
        """
        checkpointer = self._checkpointer
        if checkpointer is None or not checkpointer.alive:
            if not self._checkpoint_in_background:
                return
            self._cursor.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
            checkpointer = self._checkpointer = _Checkpointer(self.path, self.timeout)
        checkpointer.poke()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # One read transaction, so related figures (spent and held) come from the same moment.
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _meta(conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT key, value FROM costguard_meta").fetchall())

    # -- the Ledger protocol ---------------------------------------------------------------------------------
    def _tag(self) -> str | None:
        try:
            return self.tag_source() if self.tag_source is not None else None
        except Exception:
            return None

    def reserve(self, amount: Decimal) -> Reservation:
        """Hold `amount` or raise `BudgetExceededError` when it does not fit (the refusal is recorded)."""
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        pico, _ = _pico_ceil(amount)
        tag = self._tag() if self.tag_source is not None else None
        refusal: BudgetExceededError | None = None
        reservation_id: int | None = None
        with self._overflow_as_error(f"cannot hold ${amount}"), self._write() as cursor:
            moved: Decimal | None = -amount
            if self._limit_pico is not None:
                spent, held = cursor.execute(_READ_BALANCE).fetchone()
                if spent + held + pico > self._limit_pico:
                    moved = None  # what dead processes held may have been charged: `remaining` reads again
                    refusal = self._refuse_unless_reclaimed(cursor.connection, amount, pico, tag)
            if refusal is None:
                cursor.execute(_RESERVE, (str(amount), pico, self._pid, self._host, self.worker, tag))
                reservation_id = cursor.lastrowid
                self._moved = moved
        if refusal is not None:
            raise refusal  # after the commit: the refusal is recorded
        assert reservation_id is not None
        return Reservation(reservation_id, amount)

    @contextmanager
    def _overflow_as_error(self, what: str) -> Iterator[None]:
        """Turn SQLite's integer overflow (an amount beyond what the ledger holds) into a `LedgerError`."""
        try:
            yield
        except BaseException as exc:
            if _overflowed(exc):
                raise LedgerError(f"{self.path}: {what}: {_BEYOND}") from None
            raise

    def _refuse_unless_reclaimed(
        self, conn: sqlite3.Connection, amount: Decimal, pico: int, tag: str | None
    ) -> BudgetExceededError | None:
        """`amount` does not fit: charge what dead processes left in flight and look again, or record a refusal."""
        assert self._limit_pico is not None and self.limit is not None
        if self._reclaim_dead(conn):
            spent, held = conn.execute(_READ_BALANCE).fetchone()
            if spent + held + pico <= self._limit_pico:
                return None
        # The exact figures (admission compared them in whole picodollars).
        refusal = BudgetExceededError(_spent(conn), self.limit, amount, scope=self.scope, reserved=_held(conn))
        conn.execute(_INSERT_REFUSAL, (self._pid, self.worker, tag, self.scope, str(amount), str(refusal)))
        return refusal

    def settle(self, reservation: Reservation, record: CostRecord) -> None:
        """Replace a reservation by the call's record, durably (once; later calls are ignored)."""
        values = _record_row(record)
        cost = record.cost_usd
        pico, exact = _pico_ceil(cost)
        with self._overflow_as_error(f"cannot settle a call of ${cost}"), self._write() as cursor:
            if cursor.execute(_DELETE_RESERVATION, (reservation.id,)).rowcount:
                if exact:  # whole picodollars: SQLite adds them to the balance
                    cursor.execute(_INSERT_RECORD, (reservation.id, self._pid, self.worker, 0, *values, pico))
                else:
                    self._insert_record(cursor.connection, values, cost, reservation.id, self._pid, self.worker)
                self._moved = _EXACT.subtract(reservation.amount, cost)
            else:
                self._moved = Decimal(0)

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was not billed."""
        with self._write() as cursor:
            released = cursor.execute(_DELETE_RESERVATION, (reservation.id,)).rowcount
            self._moved = reservation.amount if released else Decimal(0)

    # -- Message Batches read in another process -------------------------------------------------------------
    def settle_held(self, reservation: Reservation, record: CostRecord) -> bool:
        """Settle `reservation` as `settle` does; return whether this call did (False: it was not held any more,
        settled or released by this or another process first)."""
        values = _record_row(record)
        with self._overflow_as_error(f"cannot settle a call of ${record.cost_usd}"), self._write() as cursor:
            if not cursor.execute(_DELETE_RESERVATION, (reservation.id,)).rowcount:
                return False
            self._insert_record(cursor.connection, values, record.cost_usd, reservation.id, self._pid, self.worker)
            return True

    def share_batch(self, batch_id: str, reservation: Reservation, details: Mapping[str, Any]) -> None:
        """Say which reservation holds for the Message Batch `batch_id`, and for whom (`details`), so that a
        process sharing the ledger that reads its results can settle it (`shared_batch`, `settle_held`)."""
        with self._write() as cursor:
            cursor.execute(_BATCHES_DDL)  # a ledger started by an earlier release has no such table
            cursor.execute(
                f"INSERT OR REPLACE INTO batches (id, reservation_id, amount, details, created) "
                f"VALUES (?, ?, ?, ?, {_SQL_NOW})",
                (batch_id, reservation.id, str(reservation.amount), json.dumps(details)),
            )

    def shared_batch(self, batch_id: str) -> tuple[Reservation, dict[str, Any]] | None:
        """The reservation and details a process shared for `batch_id` (`share_batch`), or None."""
        with self._read() as conn:
            try:
                row = conn.execute(
                    "SELECT reservation_id, amount, details FROM batches WHERE id = ?", (batch_id,)
                ).fetchone()
            except sqlite3.OperationalError:
                return None  # no batch was ever shared in this ledger: no table
        if row is None:
            return None
        return Reservation(row[0], _money(row[1])), json.loads(row[2])

    @property
    def spent(self) -> Decimal:
        """Money settled so far by every process sharing the ledger."""
        with self._read() as conn:
            return _spent(conn)

    @property
    def reserved(self) -> Decimal:
        """Money held by calls in flight in every process sharing the ledger."""
        with self._read() as conn:
            return _held(conn)

    @property
    def refused(self) -> int:
        """Calls refused so far, by every process sharing the ledger."""
        with self._read() as conn:
            count: int = conn.execute("SELECT count(*) FROM refusals").fetchone()[0]
            return count

    @property
    def remaining(self) -> Decimal | None:
        """Budget not spent nor held, or None without a limit."""
        if self.limit is None:
            return None
        with self._lock:
            conn = self._connection()
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            known = self._left
            if known is not None and known[0] is conn and known[1] == version:
                # Nothing was committed since the last read but this process's own writes, each of which moved
                # the figure by what it changed: the same amount a read would find, without a transaction.
                return max(known[2], Decimal(0))
        with self._read() as conn:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            left = _EXACT.subtract(_EXACT.subtract(self.limit, _spent(conn)), _held(conn))
            self._left = (conn, version, left)
        return max(left, Decimal(0))

    # -- crashes and reports ---------------------------------------------------------------------------------
    def _insert_record(
        self,
        conn: sqlite3.Connection,
        values: list[Any],
        cost: Decimal,
        reservation_id: int | None,
        pid: int,
        worker: str | None,
        *,
        reclaimed: bool = False,
    ) -> None:
        """Store a record, with the balance after it: the last record's plus `cost` (`settle` inlines this)."""
        pico, exact = _pico_ceil(cost)
        head = (reservation_id, pid, worker, int(reclaimed), *values, pico)
        if exact:
            conn.execute(_INSERT_RECORD, head)
        else:
            # A sub-picodollar part: the balance counts the whole picodollar above it, and carries what that
            # added, so that the exact spent can be told.
            row = conn.execute(_READ_SPENT).fetchone()
            added = _EXACT.subtract(Decimal(pico).scaleb(-_PICO_EXPONENT, _EXACT), cost)
            excess = _EXACT.add(_money(row[1]) if row is not None else Decimal(0), added)
            conn.execute(_INSERT_RECORD_EXCESS, (*head, str(excess)))

    def _charge_held(self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> Decimal:
        query = f"SELECT id, amount, pid, worker, tag FROM reservations WHERE {where}"
        rows = conn.execute(query, args).fetchall()
        charged = Decimal(0)
        for reservation_id, amount, pid, worker, tag in rows:
            cost = _money(amount)
            record = CostRecord(
                model=UNKNOWN_MODEL, input_tokens=0, output_tokens=0, cost_usd=cost, tag=tag, estimated=True
            )
            conn.execute(_DELETE_RESERVATION, (reservation_id,))
            self._insert_record(conn, _record_row(record), cost, reservation_id, pid, worker, reclaimed=True)
            charged = _EXACT.add(charged, cost)
        return charged

    def _reclaim_dead(self, conn: sqlite3.Connection) -> bool:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT DISTINCT pid FROM reservations WHERE host = ? AND pid != ?", (self._host, self._pid)
            )
        ]
        reclaimed = False
        for pid in pids:
            if not pid_alive(pid):
                self._charge_held(conn, "host = ? AND pid = ?", (self._host, pid))
                reclaimed = True
        return reclaimed

    def reclaim(self, *, worker: str) -> Decimal:
        """Charge, at their worst case, the calls a process that is known to be gone left in flight.

        For the xdist controller when a worker crashed: the calls may have been billed, so their money is
        counted as spent rather than freed. Return the amount charged.
        """
        try:
            with self._write() as cursor:
                return self._charge_held(cursor.connection, "worker = ?", (worker,))
        except (OverflowError, sqlite3.IntegrityError) as exc:
            if _overflowed(exc):
                raise LedgerError(f"{self.path}: cannot charge what {worker} left in flight: {_BEYOND}") from None
            raise

    def records(self, *, worker: str | None = None) -> list[CostRecord]:
        """Every settled call (of one worker, when given), in settlement order."""
        with self._read() as conn:
            return _records(conn, worker)

    def refusals(self, *, worker: str | None = None) -> list[Refusal]:
        """Every refused call (of one worker, when given)."""
        with self._read() as conn:
            return _refusals(conn, worker)


_CHECKPOINT_EVERY = 256
"""Commits between background checkpoints: a reserve or a settle adds one to three 1 KiB pages to the WAL, so
about as often as SQLite's automatic checkpoint (every 1000 pages) would run."""
_CHECKPOINTER_IDLE = 10.0
"""Seconds a checkpointer waits for a poke before its thread ends."""
_BACKSTOP_PAGES = 10_000
"""The connection's own automatic checkpoint once a background one is running: 10 MiB of WAL at most."""


class _Checkpointer:
    """A thread with its own connection that runs `PRAGMA wal_checkpoint(PASSIVE)` each time it is poked.

    A passive checkpoint never takes the write lock, so commits (of this process or another) go on while it
    copies and syncs; Python's sqlite3 releases the GIL while SQLite works. Busy or failing checkpoints are
    skipped: the next poke, or the connection's automatic backstop, does the work instead.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.pid = os.getpid()
        self._path = path
        self._timeout = timeout
        self._wake = threading.Event()
        self.lock = threading.Lock()
        """Held while a checkpoint runs, and across a fork (`_hold_for_fork`): a precaution, as a checkpoint holds
        SQLite locks too (its effect on a child is not shown, unlike a write's: tests/test_ledger_fork.py)."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="costguard-ledger-checkpoint", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(self._timeout)

    def _run(self) -> None:
        try:
            conn = _connect(self._path, mode="rw", timeout=self._timeout)
        except LedgerError:
            return  # the file went away: the writer's own backstop checkpoints, if anything is left to write
        try:
            # Idle for a while (the ledger closed without `close()`, or the calls stopped): the thread ends, and
            # the next poke starts another.
            while self._wake.wait(_CHECKPOINTER_IDLE) and not self._stopping:
                self._wake.clear()
                with self.lock, suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()


_LEDGERS: weakref.WeakSet[SqliteLedger] = weakref.WeakSet()
"""This process's open ledgers, whose locks a fork waits for."""
_held_for_fork: list[threading.Lock] = []


def _hold_for_fork() -> None:
    """Before `os.fork()`: wait until no thread of this process is inside a ledger transaction or checkpoint.

    SQLite keeps the locks a process holds on a file in memory. A child forked while another thread of its
    parent is inside a write transaction inherits that record of a lock it does not hold, and its own
    connection to the ledger then finds the file locked for good ("the ledger stayed locked ... database is
    locked" once the busy timeout runs out): a `ProcessPoolExecutor` or `multiprocessing` pool (fork is
    their default on Linux before Python 3.14) started while another thread makes a call. Holding every
    ledger's lock across the fork means no transaction is open when the process is copied; the fork waits
    at most for the transactions already running (reserve, settle: microseconds).
    """
    for ledger in sorted(_LEDGERS, key=id):  # one order, whoever forks
        ledger._lock.acquire()
        _held_for_fork.append(ledger._lock)
        checkpointer = ledger._checkpointer
        if checkpointer is not None:
            checkpointer.lock.acquire()
            _held_for_fork.append(checkpointer.lock)


def _release_after_fork() -> None:
    """After `os.fork()`, in the parent and in the child alike: let the ledgers' transactions go on."""
    while _held_for_fork:
        _held_for_fork.pop().release()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_hold_for_fork, after_in_parent=_release_after_fork, after_in_child=_release_after_fork)

_BEYOND = f"more than the ledger counts exactly (${_dollars(_MAX_PICO)})"


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _overflowed(exc: BaseException) -> bool:
    """Whether `exc` says an amount is beyond an SQLite integer: as a parameter, or as a balance (the CHECK)."""
    return isinstance(exc, OverflowError) or (isinstance(exc, sqlite3.IntegrityError) and "spent_pico" in str(exc))


def _connect(path: Path, *, mode: str, timeout: float) -> sqlite3.Connection:
    # A URI with an explicit mode: mode=rw never creates a file, so a typo is an error, not an empty ledger.
    uri = f"file:{quote(str(path.resolve()))}?mode={mode}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger ({exc})") from None
    return conn


def _tables(conn: sqlite3.Connection, path: Path) -> set[str]:
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise LedgerError(
            f"{path}: not a pytest-costguard ledger (not an SQLite database, or a corrupt one: {exc})"
        ) from None


_ADDED_COLUMNS = (
    ("unpriced", "INTEGER NOT NULL DEFAULT 0"),
    ("replayed", "INTEGER NOT NULL DEFAULT 0"),
    ("replay_cost_usd", "TEXT"),
    ("provider", "TEXT NOT NULL DEFAULT 'anthropic'"),
)
"""Record columns added within version 2, with their definitions: a file without them gets them on opening."""


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Give a version-2 ledger written by an earlier release the record columns it lacks (their defaults fill
    its old rows), so this release can write to it; a reader needs none of this."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    for name, definition in _ADDED_COLUMNS:
        if name not in columns:
            try:
                conn.execute(f"ALTER TABLE records ADD COLUMN {name} {definition}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it first
                    raise


def _check_schema(conn: sqlite3.Connection, path: Path, tables: set[str]) -> str:
    """Raise `LedgerError` unless the file is one of our ledgers, of a version we read; return its version."""
    if "costguard_meta" not in tables:
        raise LedgerError(f"{path}: an SQLite database, but not a pytest-costguard ledger (no costguard_meta table)")
    try:
        meta = SqliteLedger._meta(conn)
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path}: a corrupt pytest-costguard ledger ({exc})") from None
    if meta.get("schema") != LEDGER_SCHEMA:
        raise LedgerError(f"{path}: not a pytest-costguard ledger (schema {meta.get('schema')!r})")
    version = meta.get("version")
    if version not in _READABLE_VERSIONS:
        raise LedgerError(
            f"{path}: ledger version {version!r}; "
            f"this pytest-costguard reads versions {' and '.join(_READABLE_VERSIONS)}"
        )
    return version


def _spent(conn: sqlite3.Connection) -> Decimal:
    """Money settled, exactly: the last record's balance, less what rounding to picodollars added to it."""
    row = conn.execute(_READ_SPENT).fetchone()
    if row is None:
        return Decimal(0)
    pico, excess = row
    spent = _dollars(pico)
    return spent if excess == "0" else _EXACT.subtract(spent, _money(excess))


def _spent_v1(conn: sqlite3.Connection) -> Decimal:
    row = conn.execute("SELECT amount FROM totals WHERE name = 'spent'").fetchone()
    return _money(row[0]) if row is not None else Decimal(0)


def _held(conn: sqlite3.Connection) -> Decimal:
    # The exact amounts, summed in Python (SQLite's sum() of text would go through binary floats).
    return _exact_sum(_money(amount) for (amount,) in conn.execute("SELECT amount FROM reservations"))


def _records(conn: sqlite3.Connection, worker: str | None) -> list[CostRecord]:
    where, args = ("WHERE worker = ?", (worker,)) if worker is not None else ("", ())
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return [_record_from_row(row) for row in cursor.execute(f"SELECT * FROM records {where} ORDER BY id", args)]


def _refusals(conn: sqlite3.Connection, worker: str | None) -> list[Refusal]:
    where, args = ("WHERE worker = ?", (worker,)) if worker is not None else ("", ())
    query = f"SELECT tag, scope, amount, message, worker FROM refusals {where} ORDER BY id"
    return [
        Refusal(tag, scope, _money(amount), message, worker)
        for tag, scope, amount, message, worker in conn.execute(query, args)
    ]


_HOLDER_KEY = "holder"
"""`costguard_meta` key: "pid@host" of the run that started the ledger, while it runs."""


def _refuse_if_held(target: Path) -> None:
    """Raise `LedgerError` when the run that started the ledger at `target` still runs."""
    conn = _connect(target, mode="ro", timeout=30.0)
    try:
        row = conn.execute("SELECT value FROM costguard_meta WHERE key = ?", (_HOLDER_KEY,)).fetchone()
    except sqlite3.Error:
        row = None
    finally:
        conn.close()
    if row is None:
        return
    pid_text, _, host = str(row[0]).partition("@")
    try:
        pid = int(pid_text)
    except ValueError:
        return
    if host == socket.gethostname() and (pid == os.getpid() or not pid_alive(pid)):
        return  # its holder is gone (killed before it could let go): the ledger can be replaced
    raise LedgerError(
        f"{target}: in use by a running pytest session (pid {pid} on host {host}); starting afresh would delete "
        "its ledger: wait for it to finish, or give this run another --llm-ledger path"
        + ("" if host == socket.gethostname() else " (if that run is gone, delete the file)")
    )


def read_ledger(path: str | os.PathLike[str]) -> LedgerSnapshot:
    """Read a ledger file (also one a killed run left, or one of version 1); raise `LedgerError` for anything else."""
    target = Path(path)
    if not target.is_file():
        raise LedgerError(f"{target}: no such ledger")
    with target.open("rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if not head:
        raise LedgerError(f"{target}: an empty file, not a pytest-costguard ledger")
    if head != _SQLITE_MAGIC:
        raise LedgerError(f"{target}: not a pytest-costguard ledger (not an SQLite database)")
    conn = _connect(target, mode="rw", timeout=30.0)
    try:
        version = _check_schema(conn, target, _tables(conn, target))
        try:
            conn.execute("BEGIN")
            meta = SqliteLedger._meta(conn)
            limit_text = meta.get("limit_usd", "")
            held = [_money(amount) for (amount,) in conn.execute("SELECT amount FROM reservations")]
            snapshot = LedgerSnapshot(
                path=str(target),
                limit=_money(limit_text) if limit_text else None,
                scope=meta.get("scope", "session"),
                created=meta.get("created", ""),
                spent=_spent_v1(conn) if version == "1" else _spent(conn),
                records=tuple(_records(conn, None)),
                refusals=tuple(_refusals(conn, None)),
                in_flight=len(held),
                in_flight_usd=_exact_sum(held),
            )
            conn.execute("COMMIT")
        except (sqlite3.DatabaseError, KeyError, IndexError, TypeError) as exc:
            raise LedgerError(f"{target}: a corrupt pytest-costguard ledger ({exc})") from None
    finally:
        conn.close()
    return snapshot
