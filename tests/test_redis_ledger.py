"""The Redis ledger against a real `redis-server` on loopback: admission, settlement, leases, windows, faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_costguard import cli
from pytest_costguard.core.budget import BudgetExceededError
from pytest_costguard.domain.records import CostRecord
from pytest_costguard.metering.redis_ledger import (
    _LIMBS,
    LedgerUnavailableError,
    RedisLedger,
    next_window,
    parse_window,
    read_redis_ledger,
    redact_url,
    window_start,
)
from pytest_costguard.metering.sqlite_ledger import LedgerError

pytest.importorskip("redis")

from redis_support import RedisServer


def record(cost: str, tag: str | None = None) -> CostRecord:
    return CostRecord(model="claude-haiku-4-5", input_tokens=10, output_tokens=5, cost_usd=Decimal(cost), tag=tag)


@pytest.fixture
def open_ledger(redis_server: RedisServer, redis_key: str) -> Callable[..., RedisLedger]:
    opened: list[RedisLedger] = []

    def make(limit: str | None = "1", **kwargs: object) -> RedisLedger:
        kwargs.setdefault("key", redis_key)
        ledger = RedisLedger(redis_server.url, None if limit is None else Decimal(limit), **kwargs)  # type: ignore[arg-type]
        opened.append(ledger)
        return ledger

    yield make  # type: ignore[misc]
    for ledger in opened:
        ledger.close()


def test_a_reservation_is_held_then_settled_to_the_real_cost(open_ledger: Callable[..., RedisLedger]) -> None:
    ledger = open_ledger("1")
    held = ledger.reserve(Decimal("0.4"))
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (0, Decimal("0.4"), Decimal("0.6"))
    ledger.settle(held, record("0.25", "t::a"))
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (Decimal("0.25"), 0, Decimal("0.75"))
    released = ledger.reserve(Decimal("0.5"))
    ledger.release(released)
    assert (ledger.spent, ledger.reserved) == (Decimal("0.25"), 0)
    assert [r.cost_usd for r in ledger.records()] == [Decimal("0.25")]


def test_settle_is_idempotent_by_reservation_id(open_ledger: Callable[..., RedisLedger]) -> None:
    ledger = open_ledger("1")
    held = ledger.reserve(Decimal("0.4"))
    ledger.settle(held, record("0.3"))
    ledger.settle(held, record("0.3"))
    ledger.release(held)
    assert ledger.spent == Decimal("0.3")
    assert len(ledger.records()) == 1
    # Another process settling the same id (a retry after a lost reply) is ignored by the server too.
    other = open_ledger("1")
    other._holds[held.id] = ledger.prefix
    other.settle(held, record("0.3"))
    assert ledger.spent == Decimal("0.3")


def test_a_call_that_does_not_fit_is_refused_and_the_refusal_is_stored(
    open_ledger: Callable[..., RedisLedger], redis_server: RedisServer, redis_key: str
) -> None:
    ledger = open_ledger("1")
    ledger.reserve(Decimal("0.7"))
    with pytest.raises(BudgetExceededError, match=r"\$0.70 held by calls in flight") as refused:
        ledger.reserve(Decimal("0.31"))
    assert not isinstance(refused.value, LedgerUnavailableError)
    assert ledger.reserve(Decimal("0.3")).amount == Decimal("0.3")  # exactly what is left fits
    snapshot = read_redis_ledger(redis_server.url, key=redis_key)
    assert ledger.refused == 1 == len(snapshot.refusals)
    assert snapshot.refusals[0].message == str(refused.value)
    assert (snapshot.in_flight, snapshot.in_flight_usd) == (2, Decimal("1"))


def test_amounts_beyond_what_a_lua_number_holds_exactly_are_compared_exactly(
    open_ledger: Callable[..., RedisLedger],
) -> None:
    # 2**53 picodollars is about $9,007: past it a double cannot tell one picodollar from the next.
    ledger = open_ledger("5000000")
    ledger.reserve(Decimal("4999999.999999999999"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.000000000002"))
    ledger.reserve(Decimal("0.000000000001"))
    assert ledger.reserved == Decimal(5000000)


def test_amounts_are_rounded_up_and_the_limit_down_to_whole_picodollars(
    open_ledger: Callable[..., RedisLedger],
) -> None:
    ledger = open_ledger("0.0000000000019")  # 1.9 picodollars: 1 admitted
    ledger.reserve(Decimal("0.0000000000001"))  # 0.1 picodollar: holds 1
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.0000000000001"))


def test_runs_giving_different_limits_are_each_held_to_their_own_and_the_key_keeps_the_first(
    open_ledger: Callable[..., RedisLedger], redis_server: RedisServer, redis_key: str
) -> None:
    small = open_ledger("1")
    large = open_ledger("3")
    small.settle(small.reserve(Decimal("0.8")), record("0.8"))
    large.reserve(Decimal("2"))  # fits the large run's $3: $2.80 of it used
    with pytest.raises(BudgetExceededError, match=r"of the \$1.00 budget"):
        small.reserve(Decimal("0.1"))  # the small run is over its own $1
    with pytest.raises(BudgetExceededError, match=r"of the \$3.00 budget"):
        large.reserve(Decimal("0.3"))
    assert read_redis_ledger(redis_server.url, key=redis_key).limit == Decimal("1")


def test_separate_keys_are_separate_budgets(open_ledger: Callable[..., RedisLedger], redis_key: str) -> None:
    first = open_ledger("1")
    second = open_ledger("1", key=redis_key + "-other")
    first.reserve(Decimal("1"))
    assert second.reserve(Decimal("1")).amount == Decimal("1")


def test_the_window_starts_the_budget_again_at_its_utc_boundary(
    open_ledger: Callable[..., RedisLedger], redis_server: RedisServer, redis_key: str
) -> None:
    day = parse_window("1d")
    now = [datetime(2026, 12, 1, 23, 59, 59, tzinfo=timezone.utc).timestamp()]
    ledger = open_ledger("1", window=day, clock=lambda: now[0])
    ledger.settle(ledger.reserve(Decimal("0.6")), record("0.6"))
    held_over_midnight = ledger.reserve(Decimal("0.4"))
    with pytest.raises(BudgetExceededError):
        ledger.reserve(Decimal("0.1"))
    now[0] = next_window(day, now[0])  # 2026-12-02T00:00:00Z
    assert ledger.spent == 0 and ledger.reserved == 0
    ledger.settle(ledger.reserve(Decimal("0.9")), record("0.9"))
    # A call counts in the window it was admitted in, whenever it ends.
    ledger.settle(held_over_midnight, record("0.4"))
    first = read_redis_ledger(redis_server.url, key=redis_key, window=day, at=now[0] - 1)
    second = read_redis_ledger(redis_server.url, key=redis_key, window=day, at=now[0])
    assert (first.spent, second.spent) == (Decimal("1.0"), Decimal("0.9"))
    assert first.window == "1d 2026-12-01T00:00:00Z" and second.window == "1d 2026-12-02T00:00:00Z"


def test_windows_align_to_utc_days_hours_and_monday_weeks() -> None:
    at = datetime(2026, 12, 3, 15, 42, tzinfo=timezone.utc).timestamp()  # a Thursday
    assert window_start(parse_window("1h"), at) == datetime(2026, 12, 3, 15, tzinfo=timezone.utc)
    assert window_start(parse_window("1d"), at) == datetime(2026, 12, 3, tzinfo=timezone.utc)
    assert window_start(parse_window("7d"), at) == datetime(2026, 11, 30, tzinfo=timezone.utc)  # Monday
    for bad in ("0d", "7x", "", "5h", "1.5d"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_a_hold_whose_lease_expired_is_charged_at_its_worst_case_by_a_reserve_that_would_be_refused(
    open_ledger: Callable[..., RedisLedger], redis_server: RedisServer, redis_key: str
) -> None:
    holder = open_ledger("1", lease=0.2, run_id="dead-run", machine="ci-7")
    holder._stop.set()  # its renewals stop: as if its process had died
    holder.reserve(Decimal("0.6"))
    time.sleep(0.3)  # past the lease (on the server's clock)
    other = open_ledger("1")
    other.reserve(Decimal("0.3"))  # fits without touching the expired hold
    assert other.reserved == Decimal("0.9") and other.spent == 0
    with pytest.raises(BudgetExceededError):
        other.reserve(Decimal("0.5"))  # charges the dead hold: still does not fit
    assert (other.spent, other.reserved) == (Decimal("0.6"), Decimal("0.3"))
    snapshot = read_redis_ledger(redis_server.url, key=redis_key)
    [charged] = snapshot.entries
    assert (charged.run, charged.machine, charged.reclaimed) == ("dead-run", "ci-7", True)
    assert charged.record.model == "unknown" and charged.record.estimated and charged.record.cost_usd == Decimal("0.6")


def test_a_live_holder_renews_its_leases(open_ledger: Callable[..., RedisLedger]) -> None:
    holder = open_ledger("1", lease=0.3)
    held = holder.reserve(Decimal("0.6"))
    time.sleep(0.6)  # two leases: renewed every 0.1 s
    other = open_ledger("1")
    with pytest.raises(BudgetExceededError):
        other.reserve(Decimal("0.5"))
    assert other.spent == 0  # not charged: its holder lives
    holder.settle(held, record("0.1"))
    assert other.spent == Decimal("0.1")


HOLDER = """
import os, signal, sys
from decimal import Decimal
from pytest_costguard.metering.redis_ledger import RedisLedger
ledger = RedisLedger(sys.argv[1], Decimal("1"), key=sys.argv[2], lease=0.5, run_id="killed-run")
ledger.reserve(Decimal("0.7"))
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_sigkilled_holders_hold_is_charged_at_its_worst_case_once_its_lease_expires(
    open_ledger: Callable[..., RedisLedger], redis_server: RedisServer, redis_key: str
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url, redis_key], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        other = open_ledger("1")
        time.sleep(0.8)  # the live holder renews: not charged
        with pytest.raises(BudgetExceededError):
            other.reserve(Decimal("0.5"))
        assert other.spent == 0
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    time.sleep(0.7)
    with pytest.raises(BudgetExceededError):
        other.reserve(Decimal("0.5"))
    assert (other.spent, other.reserved) == (Decimal("0.7"), 0)
    assert other.reserve(Decimal("0.3")).amount == Decimal("0.3")
    [charged] = read_redis_ledger(redis_server.url, key=redis_key).entries
    assert charged.run == "killed-run" and charged.reclaimed


def test_an_unreachable_server_at_start_up_is_an_error_naming_it_without_its_password() -> None:
    with pytest.raises(LedgerError) as error:
        RedisLedger("redis://me:s3cret-pw@127.0.0.1:1/0", Decimal(1), timeout=1)
    assert "redis://me:***@127.0.0.1:1/0" in str(error.value)
    assert "s3cret-pw" not in str(error.value)
    assert redact_url("rediss://:pw@host:6380/2") == "rediss://:***@host:6380/2"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_a_server_lost_mid_run_refuses_calls_and_settles_raise_nothing(
    redis_servers: Callable[[], RedisServer],
) -> None:
    server = redis_servers()
    ledger = RedisLedger(server.url, Decimal(1), key="lost", timeout=1)
    try:
        held = ledger.reserve(Decimal("0.1"))
        server.stop()
        ledger.settle(held, record("0.1"))  # billed: the caller gets its response
        with pytest.raises(LedgerUnavailableError, match=r"cannot be reached.*the call was not sent") as refused:
            ledger.reserve(Decimal("0.1"))
        assert isinstance(refused.value, BudgetExceededError) and refused.value.scope == "session"
        # It comes back empty (no persistence): the budget is not started again from zero behind our back.
        server.start()
        with pytest.raises(LedgerUnavailableError, match=r"lost this budget's data"):
            ledger.reserve(Decimal("0.1"))
    finally:
        ledger.close()
        server.stop()


def test_concurrent_reservations_from_many_threads_never_hold_more_than_the_limit(
    open_ledger: Callable[..., RedisLedger], redis_server: RedisServer, redis_key: str
) -> None:
    ledgers = [open_ledger("0.5", machine=f"m{i}") for i in range(4)]
    admitted: list[int] = []

    def spend(ledger: RedisLedger) -> None:
        for _ in range(40):
            try:
                held = ledger.reserve(Decimal("0.01"))
            except BudgetExceededError:
                continue
            ledger.settle(held, record("0.007"))
            admitted.append(1)

    threads = [threading.Thread(target=spend, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = read_redis_ledger(redis_server.url, key=redis_key)
    assert snapshot.spent == Decimal("0.007") * len(admitted) <= Decimal("0.5")
    assert snapshot.spent > Decimal("0.5") - Decimal("0.01") - Decimal("0.007")
    assert len(snapshot.refusals) == 160 - len(admitted)
    assert sum(run["calls"] for run in snapshot.runs()) == len(admitted)


def test_the_redis_client_is_imported_only_for_a_redis_ledger() -> None:
    code = textwrap.dedent(
        """
        import sys
        from decimal import Decimal
        from pytest_costguard.metering.ledgers import LedgerRequest, open_session_ledger
        from pytest_costguard.metering import redis_ledger
        open_session_ledger(LedgerRequest(Decimal(1), "single"), lambda: None)
        assert "redis" not in sys.modules, sorted(m for m in sys.modules if m.startswith("redis"))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.integers(0, 2**62), b=st.integers(0, 2**62), c=st.integers(0, 2**62), limit=st.integers(0, 2**63 - 1)
)
def test_the_scripts_two_limb_comparison_is_exact_to_64_bits(
    redis_server: RedisServer, a: int, b: int, c: int, limit: int
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        compare = _LIMBS + "return tostring(le(add(add(big(ARGV[1]), big(ARGV[2])), big(ARGV[3])), big(ARGV[4])))"
        fits = client.eval(compare, 0, str(a), str(b), str(c), str(limit))
    finally:
        client.close()
    assert fits == (b"true" if a + b + c <= limit else b"false")


def test_report_options_for_a_shared_budget_need_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "ledger.sqlite3", "--key", "ci"]) == 2
    assert "--key, --window and --at read a shared budget" in capsys.readouterr().err
    assert cli.main(["report", "redis://127.0.0.1:1/0", "--at", "2026-12-01"]) == 2
    assert "--at picks a window: give --window too" in capsys.readouterr().err
    assert cli.main(["report", "redis://u:pw@127.0.0.1/0"]) == 2
    assert "names no port" in (err := capsys.readouterr().err) and ":pw@" not in err
