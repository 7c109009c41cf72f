"""Run every benchmark, each in its own process, and print their figures under a header naming the machine.

Each script runs in a fresh interpreter because some patch process-wide state (the SDK's client
constructors) or must not find pytest_costguard imported. Exits non-zero only if a script crashed; a missed
target is information, never a failure.

`bench_peers.py` is optional: it is skipped, with a line saying so, when no peer package is installed.

Run: python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _bench import make_parser
from bench_peers import PEERS, installed_peers

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "bench_pricing.py",
    "bench_tracking.py",
    "bench_ledger.py",
    "bench_report.py",
    "bench_overhead.py",
    "bench_stream.py",
    "bench_pertest.py",
    "bench_memory.py",
    "bench_idle.py",
    "bench_money.py",
    "bench_instructions.py",
    "bench_peers.py",
)
OPTIONAL = {"bench_peers.py"}
"""Scripts skipped, not failed, when what they compare against is not installed."""


def cpu_model() -> str:
    """Return the CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    extra = ["--quick"] if args.quick else []
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}; "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        + ("; --quick (smoke mode: figures indicative only)" if args.quick else ""),
        flush=True,
    )
    failed = []
    for script in SCRIPTS:
        if script in OPTIONAL and not installed_peers():
            print(
                f"== {script}: skipped: none of its peers is installed ({', '.join(p.key for p in PEERS)}; "
                "pip install -e '.[peers]' to measure them)",
                flush=True,
            )
            continue
        print(f"== {script}", flush=True)
        start = time.perf_counter()
        # Inherit stdout/stderr: figures stream as they are measured.
        code = subprocess.call([sys.executable, str(HERE / script), *extra])
        print(f"== {script}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(script)
    if failed:
        print(f"crashed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
