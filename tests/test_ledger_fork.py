"""A process forked while another of its threads is inside a ledger transaction can still use the ledger.

SQLite keeps a process's file locks in memory, so a child forked during a parent thread's write transaction
would inherit a lock it does not hold and find the ledger locked for good. The ledger holds its locks across
`os.fork()` (`sqlite_ledger._hold_for_fork`); without that, this test's child fails with "the ledger stayed
locked for 2 s (database is locked)". Each case runs in a fresh interpreter: forking the test process
itself (pytest's and xdist's threads) is what the scenario is about, not what the test should do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX only")

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    from decimal import Decimal
    from pytest_costguard.metering.sqlite_ledger import SqliteLedger
    from pytest_costguard.metering import sqlite_ledger
    from pytest_costguard.domain.records import CostRecord

    path = sys.argv[1]
    ledger = SqliteLedger.fresh(path, Decimal(1), timeout=3.0)
    inside, done = threading.Event(), threading.Event()

    def write():  # a call's settlement that is still running when the main thread forks
        with ledger._write() as cursor:
            cursor.execute("UPDATE costguard_meta SET value = value WHERE key = 'schema'")
            inside.set()
            time.sleep(0.3)
        done.set()

    threading.Thread(target=write).start()
    inside.wait()
    pid = os.fork()
    if pid == 0:
        try:
            child = SqliteLedger(path, Decimal(1), create=False, timeout=2.0)
            record = CostRecord(model="m", input_tokens=1, output_tokens=1, cost_usd=Decimal("0.001"))
            child.settle(child.reserve(Decimal("0.002")), record)
        except BaseException as exc:
            print(f"child: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    print("forked after the transaction ended:", done.is_set(), flush=True)
    _, status = os.waitpid(pid, 0)
    print("spent:", ledger.spent, flush=True)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_child_forked_during_a_write_of_another_thread_can_write_the_ledger(tmp_path: Path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ledger.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "forked after the transaction ended: True" in run.stdout  # the fork waited for it
    assert "spent: 0.001" in run.stdout  # the child's settlement is in the parent's ledger
