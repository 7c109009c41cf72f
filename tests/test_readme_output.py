"""The output quoted in README.md and examples/support_triage/README.md is what the commands print today.

Each quoted block sits between `<!-- costguard-output: ARGS -->` and `<!-- /costguard-output -->`; this test
runs `pytest examples/support_triage -p no:cacheprovider ARGS` (offline, against the emulator, 80 columns wide)
and finds the block's lines in its output, in order. A `...` line stands for lines left out; the run's time and
the `=` padding around pytest's final line are the only figures allowed to differ.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# It runs the whole example suite once per quoted command (five runs): `.ci/run` runs it in its `-m slow` step.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
READMES = (ROOT / "README.md", ROOT / "examples" / "support_triage" / "README.md")
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)<!-- costguard-output: (?P<args>.*?) -->\n[ \t]*```text\n(?P<body>.*?)\n[ \t]*```\n"
    r"[ \t]*<!-- /costguard-output -->",
    re.M | re.S,
)
_TIME = re.compile(r" in [0-9.]+s( \([0-9:]+\))?")


def quoted_blocks() -> list[tuple[str, str, list[str]]]:
    """Every quoted output: (README name, the arguments it was run with, its lines)."""
    found = []
    for readme in READMES:
        for match in _BLOCK.finditer(readme.read_text(encoding="utf-8")):
            indent = len(match["indent"])
            lines = [line[indent:] for line in match["body"].splitlines()]
            found.append((readme.relative_to(ROOT).as_posix(), match["args"], lines))
    return found


def pattern(line: str) -> str:
    """A regular expression matching `line` as printed today: its time and its `=` padding may differ."""
    sep = re.fullmatch(r"=+ (.*) =+", line)
    inner = sep[1] if sep else line
    parts = _TIME.split(inner)[::2] if _TIME.search(inner) else [inner]
    body = r" in [0-9.]+s(?: \([0-9:]+\))?".join(re.escape(part or "") for part in parts[:2])
    return rf"=+ {body} =+$" if sep else body + "$"


_RUNS: dict[str, str] = {}


def run_example(args: str) -> str:
    """The output of the example suite run with `args`; every quoted run is started at once, side by side."""
    if not _RUNS:
        command = [sys.executable, "-m", "pytest", "examples/support_triage", "-p", "no:cacheprovider"]
        env = {**os.environ, "COLUMNS": "80", "PYTEST_ADDOPTS": ""}
        env.pop("COSTGUARD_LIVE", None)
        # As a newcomer's terminal prints it: under CI (`CI` set) pytest adds each failure's message to the
        # short summary's FAILED lines, which the quoted output does not show.
        env.pop("CI", None)
        env.pop("BUILD_NUMBER", None)
        runs = {
            quoted: subprocess.Popen(
                [*command, *shlex.split(quoted)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
            )
            for quoted in sorted({quoted for _, quoted, _ in quoted_blocks()})
        }
        _RUNS.update((quoted, run.communicate(timeout=300)[0]) for quoted, run in runs.items())
    return _RUNS[args]


def test_the_readmes_quote_output() -> None:
    names = {name for name, _, _ in quoted_blocks()}
    assert names == {"README.md", "examples/support_triage/README.md"}


@pytest.mark.parametrize(("readme", "args", "lines"), quoted_blocks(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_quoted_output_is_what_the_command_prints(readme: str, args: str, lines: list[str]) -> None:
    output = run_example(args)
    wanted = [pattern(line) for line in lines if line.strip() != "..."]
    assert wanted
    pytest.LineMatcher(output.splitlines()).re_match_lines(wanted)
