"""The SDK-suite comparison's own logic (`compat/run_sdk_suite.py`): how a differing test is judged from its reruns."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "compat" / "run_sdk_suite.py"


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    """The comparison script, imported as a module (it is a script in `compat/`, not part of the package)."""
    spec = importlib.util.spec_from_file_location("run_sdk_suite", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_sdk_suite", module)
    spec.loader.exec_module(module)
    return module


def test_a_test_whose_outcome_changes_without_the_plugin_is_the_suites_flakiness(harness: ModuleType) -> None:
    assert harness.classify(["passed", "failed", "passed"], ["failed", "failed", "failed"]) == "flaky"
    # A flaky reference run (it failed once, passes when rerun) never counts against the plugin.
    assert harness.classify(["failed", "passed", "passed"], ["passed", "passed", "passed"]) == "flaky"


def test_a_difference_the_reruns_in_its_mode_do_not_repeat_is_unreproduced(harness: ModuleType) -> None:
    # The flake struck the plugin's run once: stable without the plugin, and the same outcome with it on a rerun.
    assert harness.classify(["passed", "passed", "passed"], ["failed", "passed", "passed"]) == "unreproduced"
    assert harness.classify(["passed", "passed", "passed"], ["failed", "failed", "passed"]) == "unreproduced"


def test_a_difference_every_run_repeats_is_a_difference(harness: ModuleType) -> None:
    assert harness.classify(["passed", "passed", "passed"], ["failed", "failed", "failed"]) == "differs"
    # Another outcome than off's in every run of the mode, even if not the same one each time.
    assert harness.classify(["passed", "passed", "passed"], ["failed", "error+failed", "failed"]) == "differs"
    assert harness.classify(["failed", "failed", "failed"], ["passed", "passed", "passed"]) == "differs"


def test_a_test_missing_from_a_rerun_does_not_make_a_difference_vanish(harness: ModuleType) -> None:
    assert harness.classify(["passed", "passed", "passed"], ["failed", "missing", "failed"]) == "differs"


def test_the_differences_of_two_runs_name_each_side_and_a_missing_test(harness: ModuleType) -> None:
    reference = {"t.py::a": "passed", "t.py::b": "failed", "t.py::c": "passed"}
    other = {"t.py::a": "passed", "t.py::b": "passed", "t.py::d": "skipped"}
    assert harness.differences(reference, other) == {
        "t.py::b": ("failed", "passed"),
        "t.py::c": ("passed", "missing"),
        "t.py::d": ("missing", "skipped"),
    }


def test_a_rerun_that_did_not_report_the_test_is_no_evidence(harness: ModuleType) -> None:
    # An `off` rerun stopped before the test ran does not make a stable test flaky.
    assert harness.classify(["passed", "missing", "passed"], ["failed", "failed", "failed"]) == "differs"
    # The full run's own `missing` (the test vanished with the plugin) is a difference like any other.
    assert harness.classify(["passed", "passed"], ["missing", "missing"]) == "differs"


@pytest.mark.skipif(sys.platform == "win32", reason="the resource module is POSIX only")
def test_the_cpu_a_run_used_is_its_processes_and_their_childrens(harness: ModuleType) -> None:
    import subprocess

    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    before = harness.children_cpu()
    # A child that burns 0.3 s itself and waits for a grandchild that burns 0.3 s more, as pytest does its workers.
    subprocess.run(
        [sys.executable, "-c", f"import subprocess, sys\n{burn}subprocess.run([sys.executable, '-c', {burn!r}])"]
    )
    used = harness.children_cpu() - before
    assert 0.6 <= used < 5
