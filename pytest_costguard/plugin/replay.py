"""The pytest side of record and replay: a tape per test, a failed test per unrecorded call, stale recordings.

The session (`plugin/__init__.py`) hands it pytest's events; the cassettes, matching and redaction live in
`pytest_costguard.replay`, the SDK's side in `providers/anthropic/replay.py`.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import user_path

if TYPE_CHECKING:
    from ..replay.store import Recorder, Tape
    from .settings import Settings

__all__ = ["ReplaySession"]


class ReplaySession:
    """One run's record/replay: which mode each test runs in, and what the run's tapes did."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.recorder: Recorder | None = None
        """Built at once when the run records or replays (calls at module import go to the session cassette),
        else when the first marked test does: a run without `--llm-record` never imports the replay package."""
        self._remote: list[dict[str, Any]] = []
        self._deselected: list[str] = []
        if settings.record != "off":
            self._recorder()

    def mode_of(self, marked: str | None) -> str:
        """The mode a test runs in: its marker's, else the run's."""
        return marked or self.settings.record

    def _recorder(self) -> Recorder:
        if self.recorder is None:
            from ..replay.matching import DEFAULT_IGNORED
            from ..replay.store import Recorder

            cassettes = self.settings.cassettes
            directory = user_path(self.config, "llm_cassettes", cassettes) if cassettes is not None else None
            ignored = self.settings.record_ignore
            self.recorder = Recorder(
                self.settings.record,
                rootdir=self.config.rootpath,
                directory=directory,
                ignored=DEFAULT_IGNORED if ignored is None else ignored,
            )
            self.config.pluginmanager.register(_SharedFixtures(self), _SHARED_FIXTURES)
        return self.recorder

    # -- collection ------------------------------------------------------------------------------------------
    def check_cassettes(self, modes: Mapping[str, str]) -> list[str]:
        """Read the cassette of every test that replays: a corrupt one is a usage error before any test runs."""
        replaying = [nodeid for nodeid, mode in modes.items() if mode in ("none", "once", "new")]
        if not replaying:
            return []
        from ..replay.cassette import Cassette, CassetteError

        recorder = self._recorder()
        errors = []
        for nodeid in replaying:
            path = recorder.path_of(nodeid)
            if path.is_file():
                try:
                    Cassette.load(path)
                except CassetteError as exc:
                    errors.append(f"{nodeid}: {exc}")
        return errors

    def deselected(self, nodeids: Iterable[str]) -> None:
        """Remember tests `-k`/`-m` left out: their cassettes are not stale."""
        self._deselected.extend(nodeids)

    def collected(self, nodeids: Iterable[str]) -> None:
        """List the cassettes beside the collected tests' modules that belong to none of them."""
        if self.recorder is None or self.settings.record not in ("none", "once", "new"):
            return
        self.recorder.stale.extend(self.recorder.orphans([*nodeids, *self._deselected]))

    # -- a test ----------------------------------------------------------------------------------------------
    def open(self, nodeid: str, marked: str | None) -> Tape | None:
        """Start the tape of a test about to run (None when it neither records nor replays)."""
        mode = self.mode_of(marked)
        if mode == "off":
            return None
        return self._recorder().open(nodeid, mode)

    def close(self, nodeid: str) -> None:
        """End a test's tape: write its recordings."""
        if self.recorder is not None:
            self.recorder.close(nodeid)

    def fixture_setup(self, scope: str) -> AbstractContextManager[None]:
        """Where the calls of a fixture setting up are taped: a fixture broader than a function is shared by
        several tests (whichever runs first sets it up), so its calls go to the session cassette. Called only once
        the run has a recorder (`_SharedFixtures` is registered with it)."""
        if scope == "function":
            return nullcontext()
        from ..replay.store import shared

        return shared()

    def unregister(self) -> None:
        """Stop taping fixtures' calls (the run ends)."""
        if self.config.pluginmanager.has_plugin(_SHARED_FIXTURES):
            self.config.pluginmanager.unregister(name=_SHARED_FIXTURES)

    def finish(self) -> list[str]:
        """End the session cassette (calls made outside tests); return why calls it had no recording for were
        refused, here and in the workers (each fails the run)."""
        local: list[str] = []
        if self.recorder is not None:
            self.recorder.finish()
            local = self.recorder.session_misses
        return [*local, *(m for o in self._remote for m in o.get("session_misses", ()))]

    def verdict(self, nodeid: str) -> str | None:
        """Why a test that passed fails anyway: a call it made had no recording (whatever the code caught)."""
        tape = self.recorder.tape_for(nodeid) if self.recorder is not None else None
        if tape is None or not tape.misses:
            return None
        misses = tape.misses
        more = f" (and {len(misses) - 1} more)" if len(misses) > 1 else ""
        return misses[0].removeprefix("pytest-costguard: ") + more  # the report adds the prefix

    # -- the run ---------------------------------------------------------------------------------------------
    def output(self) -> dict[str, Any]:
        """What this process's tapes did, as plain JSON for the controller."""
        recorder = self.recorder
        if recorder is None:
            return {"saved": [], "stale": []}
        recorder.finish()
        return {
            "session_misses": list(recorder.session_misses),
            "saved": [str(p) for p in recorder.saved],
            "stale": [{"path": str(s.path), "unused": s.unused, "reason": s.reason} for s in recorder.stale],
        }

    def merge(self, output: Mapping[str, Any]) -> None:
        """Add what a worker's tapes did."""
        self._remote.append(dict(output))

    def _totals(self) -> tuple[list[str], list[dict[str, Any]]]:
        outputs = [self.output(), *self._remote]
        saved = sorted({p for o in outputs for p in o.get("saved", ())})
        stale: dict[str, dict[str, Any]] = {}
        for o in outputs:
            for entry in o.get("stale", ()):
                stale.setdefault(entry["path"], entry)  # every worker lists the same orphans: once each
        return saved, [stale[p] for p in sorted(stale)]

    def labels(self) -> dict[str, Any] | None:
        """The report's `replay` section: the mode, the cassettes written and the stale recordings."""
        if self.recorder is None and not self._remote:
            return None
        saved, stale = self._totals()
        return {"replay": {"mode": self.settings.record, "cassettes_written": saved, "stale": stale}}

    def summary_lines(self) -> list[str]:
        """Lines for the terminal summary: calls outside tests refused, cassettes written, stale recordings."""
        if self.recorder is None and not self._remote:
            return []
        saved, stale = self._totals()
        root = self.config.rootpath
        lines = []
        misses = sorted(set(self.finish()))  # every worker refuses the same session-level call: once each
        if misses:
            lines.append(f"replay: {len(misses)} call(s) outside tests were refused (this fails the run):")
            lines += [f"  {m.removeprefix('pytest-costguard: ')}" for m in misses]
        if saved:
            lines.append(f"replay: wrote {len(saved)} cassette(s)")
        if stale:
            lines.append(f"replay: {len(stale)} stale recording(s), used by no test in this run:")
            lines += [f"  {_relative(Path(e['path']), root)}: {e['reason']}" for e in stale]
        return lines


_SHARED_FIXTURES = "costguard-replay-fixtures"


class _SharedFixtures:
    """The fixture-setup hook, registered with the run's recorder: without one it would do nothing, for every
    fixture of every test (a wrapper costs each fixture a generator and two resumptions)."""

    def __init__(self, replay: ReplaySession) -> None:
        self.replay = replay

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        with self.replay.fixture_setup(fixturedef.scope):  # a shared fixture's calls: the session cassette
            return (yield)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
