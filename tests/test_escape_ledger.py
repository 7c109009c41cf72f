"""One ledger, one run: a live run's --llm-ledger is never replaced; a path that cannot hold one is a usage error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.metering.sqlite_ledger import LedgerError, SqliteLedger, read_ledger

HOLDER = """
import sys, time
from decimal import Decimal
from pytest_costguard.metering.sqlite_ledger import SqliteLedger

ledger = SqliteLedger.fresh(sys.argv[1], Decimal(1))
print("ready", flush=True)
time.sleep(120)
"""


def test_a_ledger_held_by_a_live_process_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(LedgerError) as info:
            SqliteLedger.fresh(path, Decimal(1))
        message = str(info.value)
        assert str(path) in message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert read_ledger(path).limit == Decimal(1)  # still there, untouched
        joined = SqliteLedger(path, Decimal(1))  # the run's own workers and children join it
        joined.close()
    finally:
        holder.kill()
        holder.communicate()
    # Its holder gone (killed, so it never let go), the ledger can be started afresh.
    SqliteLedger.fresh(path, Decimal(2)).close()
    assert read_ledger(path).limit == Decimal(2)


def test_a_closed_ledger_can_be_started_afresh_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    code = f"from pytest_costguard.metering.sqlite_ledger import SqliteLedger as L; L.fresh({str(path)!r}).close()"
    subprocess.run([sys.executable, "-c", code], check=True)
    SqliteLedger.fresh(path).close()


def test_a_second_run_on_a_live_runs_ledger_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
import time, pathlib

def test_waits():
    pathlib.Path("started").write_text("")
    for _ in range(600):
        if pathlib.Path("stop").exists():
            return
        time.sleep(0.1)
"""
    )
    ledger = pytester.path / "shared.sqlite3"
    first = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--llm-budget=1", f"--llm-ledger={ledger}"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(1200):
            if (pytester.path / "started").exists():
                break
            time.sleep(0.1)
        second = pytester.runpytest_subprocess("--llm-budget=1", f"--llm-ledger={ledger}")
        assert second.ret == pytest.ExitCode.USAGE_ERROR
        err = second.stderr.str()
        assert str(ledger) in err and f"pid {first.pid}" in err and "in use by a running pytest session" in err
        assert "INTERNALERROR" not in err + second.stdout.str()
    finally:
        (pytester.path / "stop").write_text("")
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert read_ledger(ledger).limit == Decimal(1)


@pytest.mark.parametrize("kind", ["/dev/null", "a directory", "a read-only directory"])
def test_a_path_that_cannot_hold_a_ledger_is_a_usage_error(pytester: pytest.Pytester, kind: str) -> None:
    if kind == "/dev/null":
        target = "/dev/null"
    elif kind == "a directory":
        target = str(pytester.mkdir("adir"))
    else:
        if os.geteuid() == 0:
            target = "/proc/pytest-costguard-ledger.sqlite3"  # root writes into any mode-read-only directory
        else:
            locked = pytester.mkdir("locked")
            locked.chmod(0o500)
            target = str(locked / "ledger.sqlite3")
    pytester.makepyfile("def test_x():\n    pass\n")
    pytester.makeini(f"[pytest]\nllm_ledger = {target}\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert target in err
    assert "INTERNALERROR" not in err + result.stdout.str()
