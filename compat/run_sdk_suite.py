#!/usr/bin/env python3
"""Run the Anthropic SDK's own test suite with and without pytest-costguard and compare outcomes test by test.

The sdist of the anthropic version installed beside this plugin is downloaded from the package index, unpacked
and given a virtual environment of its own (the SDK, the test dependencies of its `dev` group pinned by its
`requirements-dev.lock`, and this repository's plugin). Its `tests/` then run three ways:

- `off`: `-p no:costguard`, the reference;
- `inactive`: the plugin installed and loaded, nothing asking for it: must be identical to `off`;
- `metered`: `--llm-budget=1000`, with the suite's made-up model names priced (`suite_prices.py`): may differ
  from `off` only by the tests listed, each with its reason, in `known_differences.json`.

Each outcome is read from JUnit XML. A test whose outcome differs is rerun, under `-p no:costguard` and in the
mode where it differed: if its outcome also changes between runs without the plugin, it is the SDK suite's own
flakiness and reported as such, never as the plugin's; if a rerun in that mode gives the outcome it has without
the plugin, the difference did not reproduce and is listed apart, not counted. The exit status is 1 on any
unexplained difference.

Usage: python compat/run_sdk_suite.py [--workdir DIR] [--workers 2] [--include-api-resources]
       python compat/run_sdk_suite.py --ratio-only tests/test_streaming.py ... [--ratio-rounds 3]
Everything downloaded or built goes under --workdir (default: $TMPDIR/costguard-compat), never the repository.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KNOWN = HERE / "known_differences.json"

# Of the SDK's `dev` dependency group, what only its type checking and linting need.
NOT_FOR_TESTS = {"pyright", "ruff", "boto3-stubs"}
BUDGET = "1000"


@dataclass(frozen=True)
class Run:
    """One run of the suite: its outcomes by test id, how long it took, the load around it."""

    name: str
    outcomes: dict[str, str]
    wall: float
    exit_code: int
    load: tuple[str, str]
    cpu: float | None = None
    """User + system CPU seconds of the run's processes (pytest and its xdist workers): what the load of other
    jobs on the machine changes far less than the wall time."""


def log(message: str) -> None:
    print(f"[compat] {message}", flush=True)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def sh(cmd: list[str], **kwargs: object) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


# -- preparing the suite --------------------------------------------------------------------------------------
def prepare(workdir: Path, sdk_version: str, fresh: bool) -> tuple[Path, Path]:
    """Download and unpack the sdist and build its venv (reused when already there); return (suite, python)."""
    suite = workdir / f"anthropic-{sdk_version}"
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    marker = venv / "costguard-compat-ready"
    if fresh:
        shutil.rmtree(suite, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
    if not suite.is_dir():
        downloads = workdir / "sdist"
        sh(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"anthropic=={sdk_version}",
                "-d",
                str(downloads),
            ]
        )
        (archive,) = downloads.glob(f"anthropic-{sdk_version}.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(workdir, filter="data")
    if not (marker.is_file() and marker.read_text() == sdk_version):
        shutil.rmtree(venv, ignore_errors=True)
        sh([sys.executable, "-m", "venv", str(venv)])
        constraints = workdir / "constraints.txt"
        lock = (suite / "requirements-dev.lock").read_text().splitlines()
        constraints.write_text(
            "\n".join(line for line in lock if line.strip() and not line.lstrip().startswith(("#", "-e"))) + "\n"
        )
        project = tomllib.loads((suite / "pyproject.toml").read_text())
        test_deps = [
            dep
            for dep in project["dependency-groups"]["dev"]
            if dep.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() not in NOT_FOR_TESTS
        ]
        # Editable: a fix to the plugin is seen by the next run without reinstalling.
        sh(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                str(constraints),
                f"anthropic=={sdk_version}",
                *test_deps,
                "-e",
                str(REPO),
            ]
        )
        marker.write_text(sdk_version)
    return suite, python


def model_names(suite: Path) -> list[str]:
    """The model names the suite may send, sorted: what its tests pass as a model, and every Claude model id
    written in its tests or in the SDK's model lists (tests loop over `DEPRECATED_MODELS` and the `Model` type)."""
    names: set[str] = set()
    sources = [*(suite / "tests").rglob("*.py"), *(suite / "src" / "anthropic").rglob("*.py")]
    for path in sources:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        in_tests = path.is_relative_to(suite / "tests")
        for node in ast.walk(tree):
            if in_tests and isinstance(node, ast.keyword) and node.arg == "model":
                _add_name(names, node.value)
            elif in_tests and isinstance(node, ast.Dict):
                for key, item in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "model":
                        _add_name(names, item)
            elif (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and _may_be_a_model(node.value, in_tests)
            ):
                names.add(node.value)
    return sorted(names)


# Run once by the suite's own python, so that each pytest process of a metered run (the xdist controller and every
# worker) reads a ready list: asking genai-prices about ~4,500 names took each of them ~1 s of CPU at start-up.
UNPRICED = """
import sys
from pathlib import Path
from pytest_costguard.core.pricing import default_price_book
book = default_price_book()
names = Path(sys.argv[1]).read_text(encoding="utf-8").splitlines()
unknown = [name for name in names if name and not book.knows(name)]
Path(sys.argv[2]).write_text("".join(name + "\\n" for name in unknown), encoding="utf-8")
print(len(unknown))
"""


def unpriced_names(python: Path, found: Path, listing: Path) -> int:
    """Write to `listing` the names of `found` that genai-prices does not price (as the suite's venv has it)."""
    done = subprocess.run(
        [str(python), "-c", UNPRICED, str(found), str(listing)], check=True, capture_output=True, text=True
    )
    return int(done.stdout.strip())


CLAUDE_ID = re.compile(r"^[\w.:@/-]*claude[\w.:@/-]*$")


def _may_be_a_model(text: str, in_tests: bool) -> bool:
    # The tests also build model ids from parametrized fragments (`..;x`, `a%2Fb`, ``): price every short one-word
    # string they hold; of the SDK's sources only the Claude ids.
    if CLAUDE_ID.match(text):
        return True
    return in_tests and len(text) <= 80 and text.isprintable() and not any(c.isspace() for c in text)


def _add_name(names: set[str], node: ast.expr) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value and "\n" not in node.value:
        names.add(node.value)


# -- running it -------------------------------------------------------------------------------------------------
MODES: dict[str, list[str]] = {
    "off": ["-p", "no:costguard"],
    "inactive": [],
    # The suite sends requests to made-up endpoints (`/foo`, ...) of its mock servers: unknown to the meter, they
    # would be refused under a budget. `/*` declares free only what the meter does not know: Messages calls and
    # batch creations are metered all the same.
    "metered": ["-p", "suite_prices", f"--llm-budget={BUDGET}", "--llm-free-endpoint=/*"],
}


def run_suite(
    python: Path,
    suite: Path,
    out: Path,
    mode: str,
    targets: list[str],
    workers: int,
    timeout: float,
    tag: str,
    reuse: bool = False,
) -> Run:
    """Run the suite once in `mode` (or `reuse` the results of the last such run); return each test's outcome."""
    xml, meta = out / f"{tag}.xml", out / f"{tag}.json"
    if reuse and xml.is_file() and meta.is_file():
        saved = json.loads(meta.read_text())
        log(f"{tag}: reusing the run of {saved['finished']} ({saved['wall']:.0f} s)")
        return Run(tag, read_junit(xml, suite), saved["wall"], saved["exit"], tuple(saved["load"]), saved.get("cpu"))
    xml.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
    cmd = [
        str(python),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-n",
        str(workers),
        f"--junitxml={xml}",
        *MODES[mode],
    ]
    env = dict(os.environ)
    if mode == "metered":
        cmd.append(f"--llm-report={out / f'{tag}-costguard.json'}")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        env["COSTGUARD_COMPAT_MODELS"] = str(out / "models.txt")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    logfile = out / f"{tag}.log"
    log(f"{tag}: {' '.join(cmd[1:])} {' '.join(targets) if len(targets) < 6 else f'<{len(targets)} targets>'}")
    before = load_average()
    cpu_before = children_cpu()
    start = time.monotonic()
    with logfile.open("w") as sink:
        proc = subprocess.Popen(
            [*cmd, *targets], cwd=suite, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{tag}: still running after {timeout:.0f} s, stopped (the tests it did not finish count as missing)")
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    wall = time.monotonic() - start
    cpu_after = children_cpu()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    outcomes = read_junit(xml, suite) if xml.is_file() else {}
    tail = logfile.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    spent = "" if cpu is None else f" ({cpu:.0f} s CPU)"
    log(f"{tag}: exit {code}, {wall:.0f} s{spent}, {len(outcomes)} tests; {tail[0]}")
    load = (before, load_average())
    if outcomes:
        finished = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        saved = {"wall": wall, "cpu": cpu, "exit": code, "load": load, "finished": finished}
        meta.write_text(json.dumps(saved) + "\n")
    return Run(tag, outcomes, wall, code, load, cpu)


def children_cpu() -> float | None:
    """User + system CPU seconds of this script's finished child processes so far, theirs included (each pytest
    run waits for its xdist workers, and the script for the run), or None where `resource` does not exist."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def node_id(classname: str, name: str, root: Path) -> str:
    """Turn a JUnit (classname, name) back into the pytest node id."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        if (root / Path(*parts[:cut])).with_suffix(".py").is_file():
            return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])
    return f"{classname}::{name}"


def read_junit(xml: Path, root: Path) -> dict[str, str]:
    """Each test's outcome: passed, failed, error, skipped, xfailed, or a combination (`failed+error`)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = set()
        for child in case:
            if child.tag == "skipped":
                kinds.add("xfailed" if child.get("type") == "pytest.xfail" else "skipped")
            elif child.tag in ("failure", "error"):
                kinds.add("failed" if child.tag == "failure" else "error")
        key = node_id(case.get("classname", ""), case.get("name", ""), root)
        outcome = "+".join(sorted(kinds)) or "passed"
        # A test reported twice (a teardown error after its call) keeps both parts.
        outcomes[key] = outcome if key not in outcomes else "+".join(sorted({*outcomes[key].split("+"), outcome}))
    return outcomes


def differences(reference: dict[str, str], other: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Tests whose outcome differs: {id: (reference outcome, other outcome)}, `missing` where absent."""
    return {
        test: (reference.get(test, "missing"), other.get(test, "missing"))
        for test in sorted(reference.keys() | other.keys())
        if reference.get(test, "missing") != other.get(test, "missing")
    }


def counts(outcomes: dict[str, str]) -> str:
    tally = Counter(outcomes.values())
    return ", ".join(f"{n} {kind}" for kind, n in sorted(tally.items(), key=lambda kv: -kv[1]))


# -- the comparison ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "costguard-compat",
        help="where the sdist, its venv and the results go (default: $TMPDIR/costguard-compat)",
    )
    parser.add_argument("--anthropic-version", default=None, help="default: the installed anthropic's version")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (-n), default 2")
    parser.add_argument(
        "--include-api-resources",
        action="store_true",
        help="also run tests/api_resources (they need the SDK's Prism mock server on :4010)",
    )
    parser.add_argument("--modes", default="off,inactive,metered", help="which runs, comma-separated")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take before it is stopped")
    parser.add_argument("--reruns", type=int, default=2, help="reruns of each differing test, each way (default 2)")
    parser.add_argument("--fresh", action="store_true", help="download and build everything again")
    parser.add_argument(
        "--reuse",
        default="",
        metavar="MODES",
        help="reuse the last results of these runs (comma-separated) instead of running them again",
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=None,
        help="also fail when metered wall time / off wall time exceeds this (default: report only)",
    )
    parser.add_argument(
        "--ratio-only",
        nargs="+",
        default=None,
        metavar="TARGET",
        help="only measure the metered/off wall ratio on these test files (paths in the suite): alternating "
        "off and metered runs, --ratio-rounds of each, medians compared; outcomes are not compared",
    )
    parser.add_argument("--ratio-rounds", type=int, default=3, help="rounds of --ratio-only (default 3)")
    args = parser.parse_args(argv)

    sdk_version = args.anthropic_version or installed_version("anthropic")
    workdir: Path = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        parser.error(f"--workdir {workdir}: inside the repository; the sdist and its venv must not be committed")
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"anthropic {sdk_version}, workdir {workdir}, load average {load_average()}")
    suite, python = prepare(workdir, sdk_version, args.fresh)
    out = workdir / "results"
    out.mkdir(exist_ok=True)
    names = model_names(suite)
    (out / "models-found.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    unpriced = unpriced_names(python, out / "models-found.txt", out / "models.txt")
    log(f"{len(names)} model names found in the suite's sources, {unpriced} of them unknown to genai-prices")

    if args.ratio_only:
        return measure_ratio(python, suite, out, args.ratio_only, args.workers, args.timeout, args.ratio_rounds)
    targets = ["tests"] if args.include_api_resources else ["tests", "--ignore=tests/api_resources"]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown_modes = set(modes) - MODES.keys()
    if unknown_modes or "off" not in modes:
        parser.error(f"--modes: {args.modes!r} must include off and name only {', '.join(MODES)}")
    reuse = {m.strip() for m in args.reuse.split(",") if m.strip()}
    runs = {
        mode: run_suite(python, suite, out, mode, targets, args.workers, args.timeout, mode, reuse=mode in reuse)
        for mode in modes
    }
    reference = runs["off"]
    if not reference.outcomes:
        log("the reference run reported no test: see its log")
        return 2

    known: dict[str, str] = json.loads(KNOWN.read_text(encoding="utf-8")) if KNOWN.is_file() else {}
    unexplained: dict[str, dict[str, tuple[str, str]]] = {}
    flaky: dict[str, set[str]] = {}
    unreproduced: dict[str, dict[str, tuple[str, str]]] = {}
    explained: dict[str, tuple[str, str]] = {}
    for mode, run in runs.items():
        if mode == "off":
            continue
        diff = differences(reference.outcomes, run.outcomes)
        if diff:
            came_and_went = unreproduced.setdefault(mode, {})
            diff = settle_by_rerun(
                python, suite, out, mode, diff, args.workers, args.timeout, flaky, came_and_went, args.reruns
            )
        for test, pair in diff.items():
            if mode == "metered" and test in known:
                explained[test] = pair
            else:
                unexplained.setdefault(mode, {})[test] = pair

    print()
    print(f"anthropic {sdk_version} test suite ({' '.join(targets)}), -n {args.workers}")
    for mode, run in runs.items():
        print(
            f"  {mode:<9} {run.wall:7.1f} s  exit {run.exit_code}  {len(run.outcomes)} tests: {counts(run.outcomes)}"
            f"   (load {run.load[0]} -> {run.load[1]})"
        )
    if "metered" in runs:
        ratio = runs["metered"].wall / reference.wall
        within = "within" if ratio <= 1.2 else "ABOVE"
        print(f"  metered / off wall time: {ratio:.2f}x ({within} the 1.2x target)")
        metered_cpu, off_cpu = runs["metered"].cpu, reference.cpu
        if metered_cpu is not None and off_cpu:
            print(f"  metered / off CPU time: {metered_cpu / off_cpu:.2f}x")
        if "inactive" in runs:
            print(f"  inactive / off wall time: {runs['inactive'].wall / reference.wall:.2f}x")
        summarize_metering(out / "metered-costguard.json")
    if flaky:
        print(f"  flaky in the SDK suite itself (outcome changes without the plugin), not counted: {len(flaky)}")
        for test, seen in sorted(flaky.items()):
            print(f"    {test}: {' / '.join(sorted(seen))}")
    for mode, gone in unreproduced.items():
        if gone:
            print(f"  differed once between off and {mode}, not reproduced by the reruns, not counted: {len(gone)}")
        for test, (off_seen, mode_seen) in gone.items():
            print(f"    {test}: off {off_seen}; {mode} {mode_seen}")
    for test, (was, now) in explained.items():
        print(f"  known difference: {test}: {was} -> {now}: {known[test]}")
    stale = sorted(set(known) - set(explained)) if "metered" in runs else []  # only a metered run can tell
    for test in stale:
        print(f"  known_differences.json lists {test}, which no longer differs: remove it")
    failed = False
    for mode, diff in unexplained.items():
        failed = True
        print(f"  UNEXPLAINED: {len(diff)} tests differ between off and {mode}:")
        for test, (was, now) in diff.items():
            print(f"    {test}: {was} -> {now}")
    if args.max_ratio is not None and "metered" in runs and runs["metered"].wall / reference.wall > args.max_ratio:
        print(f"  metered / off wall time is above --max-ratio {args.max_ratio}")
        failed = True
    print("  result: " + ("DIFFERENCES (see above)" if failed else "identical outcomes (apart from the known list)"))
    summary = {
        "anthropic": sdk_version,
        "runs": {
            m: {
                "wall_s": round(r.wall, 1),
                "cpu_s": None if r.cpu is None else round(r.cpu, 1),
                "exit": r.exit_code,
                "counts": dict(Counter(r.outcomes.values())),
                "load": r.load,
            }
            for m, r in runs.items()
        },
        "unexplained": {m: {t: list(p) for t, p in d.items()} for m, d in unexplained.items()},
        "explained": {t: list(p) for t, p in explained.items()},
        "flaky": {t: sorted(s) for t, s in flaky.items()},
        "unreproduced": {m: {t: list(p) for t, p in d.items()} for m, d in unreproduced.items() if d},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"  details: {out}/ (JUnit XML, logs, summary.json)")
    return 1 if failed else 0


def settle_by_rerun(
    python: Path,
    suite: Path,
    out: Path,
    mode: str,
    diff: dict[str, tuple[str, str]],
    workers: int,
    timeout: float,
    flaky: dict[str, set[str]],
    unreproduced: dict[str, tuple[str, str]],
    reruns: int,
) -> dict[str, tuple[str, str]]:
    """Rerun the differing tests without the plugin and in `mode`; keep only the differences that reproduce.

    A test whose outcome changes without the plugin goes to `flaky`; one that also gave `off`'s outcome when
    rerun in `mode` goes to `unreproduced` (see `classify`)."""
    tests = [test for test in diff if "::" in test]
    if not tests or len(tests) > 500:
        return diff  # a broad breakage: reruns would not tell anything more
    seen_off: dict[str, list[str]] = {test: [diff[test][0]] for test in tests}
    seen_mode: dict[str, list[str]] = {test: [diff[test][1]] for test in tests}
    for attempt in range(1, reruns + 1):
        for rerun_mode, seen in (("off", seen_off), (mode, seen_mode)):
            run = run_suite(
                python,
                suite,
                out,
                rerun_mode,
                tests,
                min(workers, len(tests)),
                timeout,
                f"rerun-{mode}-{rerun_mode}-{attempt}",
            )
            for test in tests:
                seen[test].append(run.outcomes.get(test, "missing"))
    remaining = dict(diff)
    for test in tests:
        verdict = classify(seen_off[test], seen_mode[test])
        if verdict == "flaky":
            flaky[test] = set(seen_off[test]) | set(seen_mode[test])
            del remaining[test]
        elif verdict == "unreproduced":
            unreproduced[test] = (" / ".join(seen_off[test]), " / ".join(seen_mode[test]))
            del remaining[test]
    return remaining


def classify(seen_off: list[str], seen_mode: list[str]) -> str:
    """Say what a test that differed is, from its outcomes without the plugin and in the mode where it differed
    (each list: the full run's outcome first, then the reruns').

    - `flaky`: its outcome changes without the plugin: the SDK suite's own flakiness;
    - `unreproduced`: stable without the plugin, but a rerun in the mode gave that same outcome: the difference
      came and went (the suite's timing under load, most often); listed, not counted;
    - `differs`: every run in the mode gave another outcome than every run without the plugin.

    A rerun that did not report the test (`missing`: that run was stopped) tells nothing and is left out. The
    verdict depends only on the outcomes seen, so a flaky test never fails the check whichever run it strikes.
    """
    off = [seen_off[0], *(outcome for outcome in seen_off[1:] if outcome != "missing")]
    in_mode = [seen_mode[0], *(outcome for outcome in seen_mode[1:] if outcome != "missing")]
    if len(set(off)) > 1:
        return "flaky"
    if off[0] in in_mode:
        return "unreproduced"
    return "differs"


def measure_ratio(
    python: Path, suite: Path, out: Path, targets: list[str], workers: int, timeout: float, rounds: int
) -> int:
    """Time `off` and `metered` runs of `targets` side by side, alternating (so both meet the same load), and
    print each run, the medians and their ratio. Exit status 1 when a run reported no test."""
    import statistics

    walls: dict[str, list[float]] = {"off": [], "metered": []}
    cpus: dict[str, list[float]] = {"off": [], "metered": []}
    for attempt in range(1, rounds + 1):
        for mode in ("off", "metered") if attempt % 2 else ("metered", "off"):
            run = run_suite(python, suite, out, mode, targets, workers, timeout, f"ratio-{mode}-{attempt}")
            if not run.outcomes:
                log(f"ratio-{mode}-{attempt}: no test reported, see its log")
                return 1
            walls[mode].append(run.wall)
            if run.cpu is not None:
                cpus[mode].append(run.cpu)
            spent = "" if run.cpu is None else f" ({run.cpu:.1f} s CPU)"
            print(
                f"  round {attempt} {mode:<8} {run.wall:6.1f} s{spent}  {counts(run.outcomes)}"
                f"  (load {run.load[0]} -> {run.load[1]})"
            )
    off, metered = statistics.median(walls["off"]), statistics.median(walls["metered"])
    print(f"  medians: off {off:.1f} s, metered {metered:.1f} s: metered / off {metered / off:.2f}x (target <= 1.2x)")
    if cpus["off"] and cpus["metered"]:
        off_cpu, metered_cpu = statistics.median(cpus["off"]), statistics.median(cpus["metered"])
        print(
            f"  CPU medians: off {off_cpu:.1f} s, metered {metered_cpu:.1f} s: metered / off "
            f"{metered_cpu / off_cpu:.2f}x (what the machine's other jobs change least)"
        )
    return 0


def summarize_metering(report: Path) -> None:
    """Show that the metered run metered: calls, cost, refusals, from its cost report."""
    if not report.is_file():
        print("  metered run: no cost report written")
        return
    data = json.loads(report.read_text())
    refusals = data.get("refusals", [])
    unknown = sorted({str(r.get("message")) for r in refusals if "price" in str(r.get("message", "")).lower()})
    print(
        f"  metered run: {len(data.get('calls', []))} calls metered, total {data.get('total_cost_usd')} USD, "
        f"{len(refusals)} refusals"
    )
    if unknown:
        print(f"    {len(unknown)} refused for an unknown price (a name the source scan missed), e.g. {unknown[0]}")


if __name__ == "__main__":
    sys.exit(main())
