"""A ledger in an SQLite file: one budget shared by processes (pytest-xdist workers), durable across crashes.

Admission is atomic across processes: `reserve` reads what is spent and held and inserts its reservation in
one `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock first, so two processes can never both
see room that only one of them fits. Whatever the timing, the money settled by all processes stays within
the limit as long as each call's real cost is within the worst case it reserved.

`settle` stores the call's full `CostRecord` in the transaction that drops its reservation. Every write
commits in WAL mode with `synchronous=NORMAL`: a committed transaction is in the WAL file the moment COMMIT
returns, so a run killed with SIGKILL leaves a file `read_ledger` and `costguard report` can account for to the
last settled call. Only an operating-system crash or a power cut may lose the last commits; syncing every
settlement to the disk (`synchronous=FULL`) would guard against that too, at about five times the cost. Money is
stored as Decimal text, never as SQLite REAL, so sums are exact.

A process that dies with calls in flight leaves their reservations behind. Reservations carry the holder's
pid and host; when a call would be refused, reservations of holders that are gone are settled as charges at
their worst case, with a record (model "unknown", estimated) saying so: nothing stays in flight forever, and
the money stays counted, because the dead call may have been billed. Freeing it instead could overspend.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .budget import BudgetExceededError
from .ledger import Reservation
from .tracking import MONEY_FIELDS, RECORD_FIELDS, CostRecord

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
LEDGER_VERSION = 1
UNKNOWN_MODEL = "unknown"
"""The model of a call charged because its process died in flight (its request is not in the ledger)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"

_DDL = """
CREATE TABLE IF NOT EXISTS costguard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, amount TEXT NOT NULL);
-- AUTOINCREMENT: ids are never reused, so a late settle of a dropped reservation cannot hit a newer one.
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    amount TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    worker TEXT,
    tag TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    reserved_usd TEXT
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    worker TEXT,
    tag TEXT,
    scope TEXT NOT NULL,
    amount TEXT NOT NULL,
    message TEXT NOT NULL,
    created TEXT NOT NULL
);
"""

_RECORD_FIELDS = RECORD_FIELDS
_MONEY_FIELDS = MONEY_FIELDS
_BOOL_FIELDS = frozenset({"streamed", "estimated"})


class LedgerError(Exception):
    """A ledger file that cannot be used: missing, not SQLite, not ours, another version, or stuck locked."""


@dataclass(frozen=True, slots=True)
class LedgerRefusal:
    """A call a ledger refused."""

    tag: str | None
    """The test that made it, when the ledger knew."""
    scope: str
    """The budget that refused it."""
    amount: Decimal
    """Its worst-case cost."""
    message: str
    """What the caller was told."""
    worker: str | None
    """The process that made it (an xdist worker id), when it had one."""


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
    refusals: tuple[LedgerRefusal, ...]
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


def _record_row(record: CostRecord) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in _RECORD_FIELDS:
        value = getattr(record, name)
        if name in _MONEY_FIELDS and value is not None:
            value = str(value)
        elif name in _BOOL_FIELDS:
            value = int(value)
        values.append(value)
    return tuple(values)


def _record_from_row(row: sqlite3.Row) -> CostRecord:
    values: dict[str, Any] = {}
    for name in _RECORD_FIELDS:
        value = row[name]
        if name in _MONEY_FIELDS and value is not None:
            value = _money(value)
        elif name in _BOOL_FIELDS:
            value = bool(value)
        values[name] = value
    return CostRecord(**values)


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
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._conn = self._open(create=create)
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
        """Start a new ledger at `path`, replacing an earlier ledger there (never another kind of file)."""
        target = Path(path)
        if target.exists() and target.stat().st_size > 0:
            read_ledger(target)  # raises LedgerError for anything that is not one of our ledgers
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        return cls(target, limit, scope, create=True, **kwargs)

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
            _check_schema(conn, self.path, tables)
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialize(self, conn: sqlite3.Connection) -> None:
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
            conn.execute("INSERT OR IGNORE INTO totals (name, amount) VALUES ('spent', '0')")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            # A connection must not cross a fork: the child opens its own (the parent's is left alone).
            self._pid = os.getpid()
            self._conn = self._open(create=False)
        return self._conn

    def close(self) -> None:
        """Close this process's connection (the file stays; other processes are unaffected)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Hold SQLite's write lock for the block: commit when it ends, roll back when it raises."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                # The busy timeout already waited; SQLite still returns BUSY without waiting in some cases
                # (WAL recovery by another connection), so try again until our own deadline.
                if not _is_busy(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise LedgerError(
                        f"{self.path}: the ledger stayed locked for {self.timeout:g} s ({exc})"
                    ) from None
                time.sleep(random.uniform(0.001, 0.01))
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            with self._transaction(conn):
                yield conn

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
        tag = self._tag()
        refusal: BudgetExceededError | None = None
        with self._write() as conn:
            spent, held = _spent(conn), _held(conn)
            if self.limit is not None and spent + held + amount > self.limit and self._reclaim_dead(conn):
                spent, held = _spent(conn), _held(conn)
            if self.limit is not None and spent + held + amount > self.limit:
                refusal = BudgetExceededError(spent, self.limit, amount, scope=self.scope, reserved=held)
                conn.execute(
                    "INSERT INTO refusals (pid, worker, tag, scope, amount, message, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (os.getpid(), self.worker, tag, self.scope, str(amount), str(refusal), _now()),
                )
            else:
                cursor = conn.execute(
                    "INSERT INTO reservations (amount, pid, host, worker, tag, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (str(amount), os.getpid(), self._host, self.worker, tag, _now()),
                )
                assert cursor.lastrowid is not None
                reservation_id = cursor.lastrowid
        if refusal is not None:
            raise refusal
        return Reservation(reservation_id, amount)

    def settle(self, reservation: Reservation, record: CostRecord) -> None:
        """Replace a reservation by the call's record, durably (once; later calls are ignored)."""
        with self._write() as conn:
            if conn.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,)).rowcount == 0:
                return
            self._insert_record(conn, record, reservation.id, os.getpid(), self.worker)

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was not billed."""
        with self._write() as conn:
            conn.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))

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
        with self._read() as conn:
            return max(self.limit - _spent(conn) - _held(conn), Decimal(0))

    # -- crashes and reports ---------------------------------------------------------------------------------
    def _insert_record(
        self,
        conn: sqlite3.Connection,
        record: CostRecord,
        reservation_id: int | None,
        pid: int,
        worker: str | None,
        *,
        reclaimed: bool = False,
    ) -> None:
        conn.execute(
            f"INSERT INTO records (reservation_id, pid, worker, settled, reclaimed, "
            f"{', '.join(_RECORD_FIELDS)}) VALUES (?, ?, ?, ?, ?, {', '.join('?' for _ in _RECORD_FIELDS)})",
            (reservation_id, pid, worker, _now(), int(reclaimed), *_record_row(record)),
        )
        spent = _spent(conn) + record.cost_usd
        conn.execute("UPDATE totals SET amount = ? WHERE name = 'spent'", (str(spent),))

    def _charge_held(self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> Decimal:
        query = f"SELECT id, amount, pid, worker, tag FROM reservations WHERE {where}"
        rows = conn.execute(query, args).fetchall()
        charged = Decimal(0)
        for reservation_id, amount, pid, worker, tag in rows:
            cost = _money(amount)
            record = CostRecord(model=UNKNOWN_MODEL, input_tokens=0, output_tokens=0, cost_usd=cost, tag=tag,
                                estimated=True)
            conn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            self._insert_record(conn, record, reservation_id, pid, worker, reclaimed=True)
            charged += cost
        return charged

    def _reclaim_dead(self, conn: sqlite3.Connection) -> bool:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT DISTINCT pid FROM reservations WHERE host = ? AND pid != ?", (self._host, os.getpid())
            )
        ]
        charged = Decimal(0)
        for pid in pids:
            if not pid_alive(pid):
                charged += self._charge_held(conn, "host = ? AND pid = ?", (self._host, pid))
        return charged > 0

    def reclaim(self, *, worker: str) -> Decimal:
        """Charge, at their worst case, the calls a process that is known to be gone left in flight.

        For the xdist controller when a worker crashed: the calls may have been billed, so their money is
        counted as spent rather than freed. Return the amount charged.
        """
        with self._write() as conn:
            return self._charge_held(conn, "worker = ?", (worker,))

    def records(self, *, worker: str | None = None) -> list[CostRecord]:
        """Every settled call (of one worker, when given), in settlement order."""
        with self._read() as conn:
            return _records(conn, worker)

    def refusals(self, *, worker: str | None = None) -> list[LedgerRefusal]:
        """Every refused call (of one worker, when given)."""
        with self._read() as conn:
            return _refusals(conn, worker)


def _connect(path: Path, *, mode: str, timeout: float) -> sqlite3.Connection:
    # A URI with an explicit mode: mode=rw never creates a file, so a typo is an error, not an empty ledger.
    uri = f"file:{quote(str(path.resolve()))}?mode={mode}"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: cannot open the ledger ({exc})") from None
    conn.row_factory = sqlite3.Row
    return conn


def _tables(conn: sqlite3.Connection, path: Path) -> set[str]:
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise LedgerError(
            f"{path}: not a pytest-costguard ledger (not an SQLite database, or a corrupt one: {exc})"
        ) from None


def _check_schema(conn: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    if "costguard_meta" not in tables:
        raise LedgerError(
            f"{path}: an SQLite database, but not a pytest-costguard ledger (no costguard_meta table)"
        )
    try:
        meta = SqliteLedger._meta(conn)
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path}: a corrupt pytest-costguard ledger ({exc})") from None
    if meta.get("schema") != LEDGER_SCHEMA:
        raise LedgerError(f"{path}: not a pytest-costguard ledger (schema {meta.get('schema')!r})")
    if meta.get("version") != str(LEDGER_VERSION):
        raise LedgerError(
            f"{path}: ledger version {meta.get('version')!r}; "
            f"this pytest-costguard reads version {LEDGER_VERSION}"
        )


def _spent(conn: sqlite3.Connection) -> Decimal:
    row = conn.execute("SELECT amount FROM totals WHERE name = 'spent'").fetchone()
    return _money(row[0]) if row is not None else Decimal(0)


def _held(conn: sqlite3.Connection) -> Decimal:
    # Summed in Python: SQLite's sum() would go through binary floats. Few rows: one per call in flight.
    return sum((_money(amount) for (amount,) in conn.execute("SELECT amount FROM reservations")), Decimal(0))


def _records(conn: sqlite3.Connection, worker: str | None) -> list[CostRecord]:
    where, args = ("WHERE worker = ?", (worker,)) if worker is not None else ("", ())
    return [_record_from_row(row) for row in conn.execute(f"SELECT * FROM records {where} ORDER BY id", args)]


def _refusals(conn: sqlite3.Connection, worker: str | None) -> list[LedgerRefusal]:
    where, args = ("WHERE worker = ?", (worker,)) if worker is not None else ("", ())
    return [
        LedgerRefusal(row["tag"], row["scope"], _money(row["amount"]), row["message"], row["worker"])
        for row in conn.execute(f"SELECT * FROM refusals {where} ORDER BY id", args)
    ]


def read_ledger(path: str | os.PathLike[str]) -> LedgerSnapshot:
    """Read a ledger file (also one a killed run left behind); raise `LedgerError` for anything else."""
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
        _check_schema(conn, target, _tables(conn, target))
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
                spent=_spent(conn),
                records=tuple(_records(conn, None)),
                refusals=tuple(_refusals(conn, None)),
                in_flight=len(held),
                in_flight_usd=sum(held, Decimal(0)),
            )
            conn.execute("COMMIT")
        except (sqlite3.DatabaseError, KeyError, IndexError, TypeError) as exc:
            raise LedgerError(f"{target}: a corrupt pytest-costguard ledger ({exc})") from None
    finally:
        conn.close()
    return snapshot
