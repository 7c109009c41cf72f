"""A ledger in Redis: one budget shared by every run, on every machine, that names the same server and key.

Admission is atomic across machines because it is one Lua script: Redis runs a script to its end before it
runs any other command, so `reserve` reads what is spent and held and adds its hold with no other client in
between. `reserve`, `settle` and `release` are one round trip each (`EVALSHA`; redis-py loads a script with
`SCRIPT LOAD` when the server does not know it yet, after a restart for instance).

Money is counted in whole picodollars ($1e-12), in Redis's 64-bit integers (`HINCRBY`, exact, an error rather
than a wrap-around past about $9.2 million), as the SQLite ledger counts it: an amount is rounded up, the limit
down, so the cap holds. Lua's numbers are doubles, exact only to 2**53 picodollars (about $9,007), so the
scripts compare amounts as two limbs of nine digits each, never as one Lua number. Every record keeps its cost
as exact Decimal text: the report's totals are exact; `spent` is the picodollar balance (each call's cost
rounded up to a whole picodollar).

Keys, for a budget named NAME (`--llm-ledger-key`), and a window when one is set (`--llm-budget-window`):

    pytest-costguard:{NAME}[:1d:2026-12-01T00:00:00Z]:meta      hash: spent_pico, held_pico, the first limit
    ...:holds     hash: reservation id -> its amount in picodollars
    ...:leases    sorted set: reservation id, scored by its lease's expiry (server time, ms)
    ...:charges   hash: reservation id -> the record charged if its holder dies (JSON)
    ...:records   list: every settled call, JSON (the record codec, plus run, machine, worker, pid)
    ...:refusals  list: every refused call, JSON
    pytest-costguard:{NAME}:ids                                 the reservation id counter (all windows)

The braces are a Redis Cluster hash tag: every key of a budget lives on one shard, as a script needs.

Each hold carries a lease: its expiry, on the server's clock (so machines' clocks need not agree), which a
background thread of the holding process renews while the process lives. When a call would be refused, holds
whose lease expired are first charged at their worst case, with a record (model "unknown", estimated): their
holder died, and the API may have billed the call; freeing the money instead could overspend.

Runs that share a key may give different `--llm-budget` values: each admission is checked against the limit
of the run asking (a run never spends past its own cap, and the total never passes the largest), and the key
keeps the first limit it was given, which the report shows.

Fail closed: an unreachable server when the ledger opens is a `LedgerError`; a server lost later refuses every
call (`LedgerUnavailableError`, a `BudgetExceededError`), and a server that comes back without the budget's
data (restarted without persistence, a failover to a replica that had not received it) refuses too, rather than
start the budget again from zero. Messages name the server without its password.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..core.budget import BudgetExceededError, refusal_frame
from ..domain.money import MoneyError, usd_from_json
from ..domain.records import CostRecord, Refusal, record_from_dict, record_to_dict
from .ledger import Reservation
from .sqlite_ledger import UNKNOWN_MODEL, LedgerError, _dollars, _pico_ceil

if TYPE_CHECKING:
    import redis

__all__ = [
    "DEFAULT_KEY",
    "LedgerUnavailableError",
    "RedisLedger",
    "RedisSnapshot",
    "is_redis_url",
    "parse_window",
    "read_redis_ledger",
    "redact_url",
    "window_start",
]

DEFAULT_KEY = "pytest-costguard"
"""The budget's name when `--llm-ledger-key` is not given."""
DEFAULT_LEASE = 30.0
"""Seconds a hold stays alive without renewal; the holder renews it every third of that."""
_PICOS_PER_DOLLAR = 10**12
_MONDAY = 4 * 86400
"""1970-01-05, a Monday, is 4 days after the Unix epoch: week windows start on Mondays."""

_LIMBS = """
local BASE = 1000000000
local function big(s)
  s = tostring(s or '0')
  local n = string.len(s)
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function add(a, b)
  local lo, hi = a[2] + b[2], a[1] + b[1]
  if lo >= BASE then lo, hi = lo - BASE, hi + 1 end
  return {hi, lo}
end
local function le(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] <= b[2]) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function expire(at, ...)
  if at ~= '' then for _, key in ipairs({...}) do redis.call('EXPIREAT', key, at) end end
end
"""

# KEYS: meta holds leases charges records refusals ids
# ARGV: amount_pico limit_pico('' = none) lease_ms charge_json refusal_json limit_usd created window
#       expire_at('' = never) known('1': this process has seen the budget's data, so it must be there)
_RESERVE = _LIMBS + """
if ARGV[10] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
if redis.call('HSETNX', KEYS[1], 'created', ARGV[7]) == 1 then
  redis.call('HSET', KEYS[1], 'limit_usd', ARGV[6], 'window', ARGV[8], 'spent_pico', 0, 'held_pico', 0)
end
local amount = ARGV[1]
if ARGV[2] ~= '' then
  local function fits()
    local state = redis.call('HMGET', KEYS[1], 'spent_pico', 'held_pico')
    return le(add(add(big(state[1]), big(state[2])), big(amount)), big(ARGV[2])), state
  end
  local ok, state = fits()
  if not ok then
    -- Holds whose holder stopped renewing them: charged at their worst case, then look again.
    local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms())
    for _, id in ipairs(expired) do
      local pico = redis.call('HGET', KEYS[2], id)
      if pico then
        redis.call('HINCRBY', KEYS[1], 'held_pico', '-' .. pico)
        redis.call('HINCRBY', KEYS[1], 'spent_pico', pico)
        redis.call('RPUSH', KEYS[5], redis.call('HGET', KEYS[4], id))
      end
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('ZREM', KEYS[3], id)
    end
    if #expired > 0 then ok, state = fits() end
    if not ok then
      local refusal = cjson.decode(ARGV[5])
      refusal['spent_pico'] = state[1]
      refusal['held_pico'] = state[2]
      redis.call('RPUSH', KEYS[6], cjson.encode(refusal))
      expire(ARGV[9], KEYS[1], KEYS[5], KEYS[6])
      return {0, state[1], state[2]}
    end
  end
end
local id = tostring(redis.call('INCR', KEYS[7]))
redis.call('HSET', KEYS[2], id, amount)
redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[3]), id)
redis.call('HSET', KEYS[4], id, (string.gsub(ARGV[4], '"reservation": 0', '"reservation": ' .. id, 1)))
redis.call('HINCRBY', KEYS[1], 'held_pico', amount)
expire(ARGV[9], KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {1, id}
"""

# KEYS: meta holds leases charges records. ARGV: id cost_pico record_json ('' = a release: no record)
_SETTLE = """
local pico = redis.call('HGET', KEYS[2], ARGV[1])
if not pico then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held_pico', '-' .. pico)
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'spent_pico', ARGV[2])
  redis.call('RPUSH', KEYS[5], ARGV[3])
end
return 1
"""

# KEYS: leases. ARGV: lease_ms id... (XX: a hold already charged or settled is not brought back)
_RENEW = _LIMBS + """
local expiry = now_ms() + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i]) end
return renewed
"""

# KEYS: meta holds leases charges records. ARGV: run worker. Charge that worker's holds (it crashed).
_RECLAIM = """
local charged = 0
for _, id in ipairs(redis.call('HKEYS', KEYS[4])) do
  local charge = redis.call('HGET', KEYS[4], id)
  local fields = cjson.decode(charge)
  local pico = redis.call('HGET', KEYS[2], id)
  if pico and fields['run'] == ARGV[1] and fields['worker'] == ARGV[2] then
    redis.call('HINCRBY', KEYS[1], 'held_pico', '-' .. pico)
    redis.call('HINCRBY', KEYS[1], 'spent_pico', pico)
    redis.call('RPUSH', KEYS[5], charge)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('ZREM', KEYS[3], id)
    charged = charged + 1
  end
end
return charged
"""


class LedgerUnavailableError(BudgetExceededError):
    """A call refused because the shared ledger cannot be reached: its budget cannot be checked."""

    def __init__(
        self, where: str, reason: str, requested: Decimal | None, limit: Decimal | None, *, scope: str = "session"
    ) -> None:
        self.where = where
        self.reason = reason
        super().__init__(0, limit if limit is not None else 0, requested, scope=scope)

    def _message(self) -> str:
        return (
            f"LLM {self.scope} budget cannot be checked: the shared ledger {self.where} {self.reason}; "
            "the call was not sent"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unavailable, (self.where, self.reason, self.requested, self.limit, self.scope))


def _rebuild_unavailable(
    where: str, reason: str, requested: Decimal | None, limit: Decimal, scope: str
) -> LedgerUnavailableError:
    return LedgerUnavailableError(where, reason, requested, limit, scope=scope)


# -- URLs, names and windows ---------------------------------------------------------------------------------
def is_redis_url(text: str) -> bool:
    """Return whether a `--llm-ledger` value names a Redis server rather than a file."""
    return text.strip().lower().startswith(("redis://", "rediss://"))


def redact_url(url: str) -> str:
    """The URL without its password (`redis://user:***@host:6379/0`), fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_redis_url(url: str) -> str | None:
    """Return what is wrong with a Redis URL, or None when it names a host, a port and a database number."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a redis://[user:password@]host:port/db URL ({exc})"
    if not parts.hostname:
        return "names no host (redis://[user:password@]host:port/db)"
    if port is None:
        return "names no port (redis://host:6379/0)"
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return f"database {db!r} is not a number (redis://host:port/0)"
    if parts.query or parts.fragment:
        return "takes no query or fragment (redis://[user:password@]host:port/db)"
    return None


_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> int:
    """Seconds in a window written as `30m`, `1h`, `1d`, `7d`; raise ValueError otherwise."""
    match = _DURATION.match(text.lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 1h, 1d or 7d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if 86400 % seconds and seconds % 86400:
        raise ValueError(f"{text!r} does not divide a day into whole windows, nor is it whole days")
    return seconds


def window_label(seconds: int) -> str:
    """`86400` -> `1d`, `3600` -> `1h`, `1800` -> `30m`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def window_start(seconds: int, at: float) -> datetime:
    """The UTC-aligned window holding time `at`: days from midnight, weeks (7d, 14d...) from Monday midnight."""
    offset = _MONDAY if seconds % (7 * 86400) == 0 else 0
    start = (int(at) - offset) // seconds * seconds + offset
    return datetime.fromtimestamp(start, timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_prefix(key: str, window: int | None, at: float) -> str:
    """The prefix of a budget's keys: its name, and the window holding `at` when it has one."""
    base = f"pytest-costguard:{{{key}}}"
    return base if window is None else f"{base}:{window_label(window)}:{_iso(window_start(window, at))}"


def _keys(prefix: str) -> list[str]:
    return [f"{prefix}:{name}" for name in ("meta", "holds", "leases", "charges", "records", "refusals")]


def _connect(url: str, timeout: float) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One retry, at once: a connection the server closed while idle is normal. More would keep a call waiting
    # on a server that is gone; a retried `reserve` that had reached the server holds twice, which only errs on
    # the safe side (the extra hold is charged when its lease runs out).
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
    )


def _scrub(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def _dollars_text(pico: int) -> str:
    return str(_dollars(pico))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RedisLedger:
    """A ledger in Redis that runs on many machines share: one budget for all of them, safe across crashes.

    `RedisLedger(url, limit, key=...)` joins (or starts) the budget named `key` on the server at `url`; with
    `window` (seconds) the budget starts again at each UTC-aligned window. `clock` gives the time that picks
    the window (injectable for tests); leases run on the server's clock.
    """

    def __init__(
        self,
        url: str,
        limit: Decimal | None = None,
        scope: str = "session",
        *,
        key: str = DEFAULT_KEY,
        window: int | None = None,
        run_id: str | None = None,
        machine: str | None = None,
        worker: str | None = None,
        tag_source: Callable[[], str | None] | None = None,
        lease: float = DEFAULT_LEASE,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.where = redact_url(url)
        """The server as messages name it (no password)."""
        self.limit = limit
        self.scope = scope
        self.key = key
        self.window = window
        self.run_id = run_id or new_run_id()
        """Names this run in the records: every process of one run (xdist workers) shares it."""
        self.machine = machine or socket.gethostname()
        self.worker = worker
        self.tag_source = tag_source
        self.lease = lease
        self.clock = clock
        self._limit_pico: int | None = None
        if limit is not None:
            numerator, denominator = limit.as_integer_ratio()
            self._limit_pico = numerator * _PICOS_PER_DOLLAR // denominator
        self._lease_ms = max(1, int(lease * 1000))
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._holds: dict[int, str] = {}
        """This process's holds in flight: reservation id -> its budget's key prefix (the window it began in)."""
        self._known: set[str] = set()
        """Prefixes this process has seen hold data: a server that lost them is not trusted to start afresh."""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._client = _connect(url, timeout)
        try:
            self._client.ping()
            self._reserve_script = self._client.register_script(_RESERVE)
            self._settle_script = self._client.register_script(_SETTLE)
            self._renew_script = self._client.register_script(_RENEW)
            self._reclaim_script = self._client.register_script(_RECLAIM)
            self._client.script_load(_RESERVE)
            self._client.script_load(_SETTLE)
            self._client.script_load(_RENEW)
        except Exception as exc:
            self._client.close()
            raise LedgerError(f"{self.where}: cannot use the Redis server ({self._reason(exc)})") from None

    def _reason(self, exc: BaseException) -> str:
        return _scrub(f"{type(exc).__name__}: {exc}", self.url)

    @property
    def prefix(self) -> str:
        """The key prefix of the budget (and window) calls are admitted to now."""
        return budget_prefix(self.key, self.window, self.clock())

    def _expire_at(self, now: float) -> str:
        if self.window is None:
            return ""
        # A window's keys outlive it by a week (or one more window, if longer), for `costguard report --window`.
        start = window_start(self.window, now).timestamp()
        return str(int(start) + self.window + max(self.window, 7 * 86400))

    def _tag(self) -> str | None:
        try:
            return self.tag_source() if self.tag_source is not None else None
        except Exception:
            return None

    def _fields(self) -> dict[str, Any]:
        return {"run": self.run_id, "machine": self.machine, "worker": self.worker, "pid": os.getpid()}

    # -- the Ledger protocol ---------------------------------------------------------------------------------
    def reserve(self, amount: Decimal) -> Reservation:
        """Hold `amount` or raise `BudgetExceededError` (refused) or `LedgerUnavailableError` (no server)."""
        __tracebackhide__ = refusal_frame  # pytest: a refusal's traceback leaves this frame out
        pico, _ = _pico_ceil(amount)
        tag = self._tag()
        now = self.clock()
        prefix = budget_prefix(self.key, self.window, now)
        stamp = _now_iso()
        fields = self._fields()
        charge = CostRecord(
            model=UNKNOWN_MODEL, input_tokens=0, output_tokens=0, cost_usd=amount, tag=tag, estimated=True
        )
        # The record charged if this process dies holding it; the script writes the reservation id in.
        charge_json = json.dumps(
            {"reservation": 0, **record_to_dict(charge), **fields, "reclaimed": True, "settled": stamp}
        )
        refusal_json = json.dumps(
            {"nodeid": tag, "scope": self.scope, "worst_case_usd": str(amount), **fields,
             "limit_usd": None if self.limit is None else str(self.limit), "created": stamp}
        )
        args = [
            str(pico),
            "" if self._limit_pico is None else str(self._limit_pico),
            str(self._lease_ms),
            charge_json,
            refusal_json,
            "" if self.limit is None else str(self.limit),
            stamp,
            "" if self.window is None else window_label(self.window),
            self._expire_at(now),
            "1" if prefix in self._known else "0",
        ]
        try:
            result = self._reserve_script(keys=[*_keys(prefix), f"pytest-costguard:{{{self.key}}}:ids"], args=args)
        except Exception as exc:
            raise LedgerUnavailableError(
                self.where, f"cannot be reached ({self._reason(exc)})", amount, self.limit, scope=self.scope
            ) from None
        status = int(result[0])
        if status == -1:
            raise LedgerUnavailableError(
                self.where,
                "lost this budget's data (the server restarted without persistence or failed over to a replica "
                "that had not received it)",
                amount,
                self.limit,
                scope=self.scope,
            )
        self._known.add(prefix)
        if status == 0:
            assert self.limit is not None
            spent, held = _dollars(int(result[1])), _dollars(int(result[2]))
            raise BudgetExceededError(spent, self.limit, amount, scope=self.scope, reserved=held)
        reservation_id = int(result[1])
        with self._lock:
            self._holds[reservation_id] = prefix
            self._start_renewing()
        return Reservation(reservation_id, amount)

    def settle(self, reservation: Reservation, record: CostRecord) -> None:
        """Replace a reservation by the call's record (once; later calls, or a hold already charged, are ignored).

        A server lost meanwhile raises nothing: the call was billed and its response must reach the caller.
        The hold stays on the server and is charged at its worst case when its lease runs out.
        """
        with self._lock:
            prefix = self._holds.pop(reservation.id, None)
        if prefix is None:
            return
        pico, _ = _pico_ceil(record.cost_usd)
        entry = {
            **record_to_dict(record), **self._fields(), "reservation": reservation.id, "reclaimed": False,
            "settled": _now_iso(),
        }
        self._end(prefix, reservation.id, str(pico), json.dumps(entry))

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call was not billed."""
        with self._lock:
            prefix = self._holds.pop(reservation.id, None)
        if prefix is not None:
            self._end(prefix, reservation.id, "0", "")

    def _end(self, prefix: str, reservation_id: int, pico: str, entry: str) -> None:
        # A server out of reach: the hold stays held, then charged at its worst case (the safe side).
        with contextlib.suppress(Exception):
            self._settle_script(keys=_keys(prefix)[:5], args=[str(reservation_id), pico, entry])

    def _meta(self, *names: str) -> list[Any]:
        try:
            return list(self._client.hmget(f"{self.prefix}:meta", list(names)))
        except Exception as exc:
            raise LedgerError(f"{self.where}: cannot be reached ({self._reason(exc)})") from None

    @property
    def spent(self) -> Decimal:
        """Money settled by every run sharing the budget (each call rounded up to a whole picodollar)."""
        return _dollars(int(self._meta("spent_pico")[0] or 0))

    @property
    def reserved(self) -> Decimal:
        """Money held by calls in flight in every run sharing the budget."""
        return _dollars(int(self._meta("held_pico")[0] or 0))

    @property
    def refused(self) -> int:
        """Calls refused so far, by every run sharing the budget."""
        try:
            return int(self._client.llen(f"{self.prefix}:refusals"))
        except Exception as exc:
            raise LedgerError(f"{self.where}: cannot be reached ({self._reason(exc)})") from None

    @property
    def remaining(self) -> Decimal | None:
        """Budget not spent nor held, or None without a limit."""
        if self._limit_pico is None:
            return None
        spent, held = (int(v or 0) for v in self._meta("spent_pico", "held_pico"))
        return _dollars(max(self._limit_pico - spent - held, 0))

    # -- leases ----------------------------------------------------------------------------------------------
    def _start_renewing(self) -> None:
        """Start the thread that renews this process's leases (the caller holds `_lock`)."""
        if self._renewer is not None and self._renewer.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()  # a forked child renews its own holds
        self._renewer = threading.Thread(target=self._renew_loop, name="costguard-lease", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            self.renew()

    def renew(self) -> int:
        """Extend the lease of every hold this process has in flight; return how many were renewed."""
        with self._lock:
            by_prefix: dict[str, list[str]] = {}
            for reservation_id, prefix in self._holds.items():
                by_prefix.setdefault(prefix, []).append(str(reservation_id))
        renewed = 0
        for prefix, ids in by_prefix.items():
            # A server out of reach: the holds may expire and be charged (the safe side).
            with contextlib.suppress(Exception):
                renewed += int(self._renew_script(keys=[f"{prefix}:leases"], args=[str(self._lease_ms), *ids]))
        return renewed

    def close(self) -> None:
        """Stop renewing leases and close the connections (the budget stays on the server)."""
        self._stop.set()
        renewer = self._renewer
        if renewer is not None and renewer.is_alive() and renewer is not threading.current_thread():
            renewer.join(timeout=5)
        self._client.close()

    # -- crashes and reports ---------------------------------------------------------------------------------
    def reclaim(self, *, worker: str) -> int:
        """Charge, at their worst case, the holds an xdist worker of this run left when it crashed."""
        try:
            return int(self._reclaim_script(keys=_keys(self.prefix)[:5], args=[self.run_id, worker]))
        except Exception as exc:
            raise LedgerError(f"{self.where}: cannot be reached ({self._reason(exc)})") from None

    def records(self, *, worker: str | None = None, run: str | None = None) -> list[CostRecord]:
        """Settled calls of this run (of one worker, when given), in settlement order, in the current window."""
        snapshot = read_redis_ledger(self.url, key=self.key, window=self.window, at=self.clock())
        run = run or self.run_id
        return [
            entry.record for entry in snapshot.entries
            if entry.run == run and (worker is None or entry.worker == worker)
        ]

    def refusals(self, *, worker: str | None = None, run: str | None = None) -> list[Refusal]:
        """Refused calls of this run (of one worker, when given), in the current window."""
        snapshot = read_redis_ledger(self.url, key=self.key, window=self.window, at=self.clock())
        run = run or self.run_id
        return [
            refusal for refusal, refusal_run, _ in snapshot.refusal_runs
            if refusal_run == run and (worker is None or refusal.worker == worker)
        ]


def new_run_id() -> str:
    """A run id: unique enough across the machines of one pipeline."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One settled call as the shared ledger keeps it: its record and who made it."""

    record: CostRecord
    """The call."""
    run: str
    """The run id."""
    machine: str
    """The host (or `COSTGUARD_MACHINE`) that made it."""
    worker: str | None
    """The xdist worker, if any."""
    reclaimed: bool
    """Charged at its worst case because its holder died."""


@dataclass(frozen=True, slots=True)
class RedisSnapshot:
    """Everything a shared budget (one window of it) holds, read at one moment."""

    where: str
    """The server, without password."""
    key: str
    """The budget's name."""
    window: str | None
    """The window (`1d 2026-12-01T00:00:00Z`), or None."""
    limit: Decimal | None
    """The first limit the budget was given."""
    created: str
    """When its first call was admitted (ISO 8601), or "" when it holds nothing."""
    spent: Decimal
    """Money settled (exact: the sum of the records)."""
    entries: tuple[RecordEntry, ...]
    """Every settled call, in settlement order."""
    refusal_runs: tuple[tuple[Refusal, str, str], ...]
    """Every refused call, with its run id and machine."""
    in_flight: int
    """Holds still held."""
    in_flight_usd: Decimal
    """Their worst-case total."""

    @property
    def records(self) -> tuple[CostRecord, ...]:
        """The settled calls' records."""
        return tuple(entry.record for entry in self.entries)

    @property
    def refusals(self) -> tuple[Refusal, ...]:
        """The refused calls."""
        return tuple(refusal for refusal, _, _ in self.refusal_runs)

    def runs(self) -> list[dict[str, Any]]:
        """Per-run figures: run id, machines, workers, calls, cost, refusals, in settlement order."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.entries:
            row = out.setdefault(entry.run, _blank_run(entry.run))
            row["machines"].add(entry.machine)
            row["calls"] += 1
            row["cost_usd"] += entry.record.cost_usd
            row["charged_dead_holds"] += int(entry.reclaimed)
        for _, run, machine in self.refusal_runs:
            row = out.setdefault(run, _blank_run(run))
            row["machines"].add(machine)
            row["refused_calls"] += 1
        return [{**row, "machines": sorted(row["machines"])} for row in out.values()]


def _blank_run(run: str) -> dict[str, Any]:
    return {"run": run, "machines": set(), "calls": 0, "cost_usd": Decimal(0), "refused_calls": 0,
            "charged_dead_holds": 0}


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _entry(raw: bytes) -> RecordEntry:
    data = json.loads(raw)
    return RecordEntry(
        record_from_dict(data),
        str(data.get("run", "")),
        str(data.get("machine", "")),
        data.get("worker"),
        bool(data.get("reclaimed")),
    )


def _refusal(raw: bytes, limit: Decimal | None) -> tuple[Refusal, str, str]:
    data: Mapping[str, Any] = json.loads(raw)
    amount = usd_from_json(data["worst_case_usd"])
    own_limit = data.get("limit_usd")
    cap = usd_from_json(own_limit) if own_limit is not None else limit
    message = str(
        BudgetExceededError(
            _dollars(int(data.get("spent_pico", 0))),
            cap if cap is not None else 0,
            amount,
            scope=str(data.get("scope", "session")),
            reserved=_dollars(int(data.get("held_pico", 0))),
        )
    )
    refusal = Refusal(data.get("nodeid"), str(data.get("scope", "session")), amount, message, data.get("worker"))
    return refusal, str(data.get("run", "")), str(data.get("machine", ""))


def read_redis_ledger(
    url: str, *, key: str = DEFAULT_KEY, window: int | None = None, at: float | None = None, timeout: float = 5.0
) -> RedisSnapshot:
    """Read a shared budget (the window holding `at`, now by default); raise `LedgerError` when it cannot."""
    where = redact_url(url)
    moment = time.time() if at is None else at
    prefix = budget_prefix(key, window, moment)
    meta_key, holds_key, _, _, records_key, refusals_key = _keys(prefix)
    client = _connect(url, timeout)
    try:
        pipe = client.pipeline(transaction=True)  # MULTI/EXEC: every figure from the same moment
        pipe.hgetall(meta_key)
        pipe.hvals(holds_key)
        pipe.lrange(records_key, 0, -1)
        pipe.lrange(refusals_key, 0, -1)
        meta, held, raw_records, raw_refusals = pipe.execute()
    except Exception as exc:
        raise LedgerError(f"{where}: cannot read the budget ({_scrub(f'{type(exc).__name__}: {exc}', url)})") from None
    finally:
        client.close()
    fields = {_text(k): _text(v) for k, v in meta.items()}
    try:
        limit_text = fields.get("limit_usd") or ""
        limit = usd_from_json(limit_text) if limit_text else None
        entries = tuple(_entry(raw) for raw in raw_records)
        refusals = tuple(_refusal(raw, limit) for raw in raw_refusals)
    except (MoneyError, ValueError, KeyError, TypeError) as exc:
        raise LedgerError(f"{where}: a corrupt entry in budget {key!r} ({exc})") from None
    spent = Decimal(0)
    for entry in entries:
        spent += entry.record.cost_usd
    return RedisSnapshot(
        where=where,
        key=key,
        window=None if window is None else f"{window_label(window)} {_iso(window_start(window, moment))}",
        limit=limit,
        created=fields.get("created") or "",
        spent=spent,
        entries=entries,
        refusal_runs=refusals,
        in_flight=len(held),
        in_flight_usd=_dollars(sum(int(v) for v in held)),
    )


def next_window(seconds: int, at: float) -> float:
    """The start of the window after the one holding `at` (a timestamp), for clocks in tests."""
    return (window_start(seconds, at) + timedelta(seconds=seconds)).timestamp()
