"""Tapes: one test's cassette while it runs (what it replays, in order, and what it records) and the run's set.

Modes (`--llm-record`): `off` (no cassettes), `none` (replay only: a call with no recording is refused before
it is sent), `once` (a test with a cassette replays it; a test without one records it), `new` (replay what
matches, record what does not), `all` (record everything again).

Calls made outside any test's own code (in a fixture broader than a function, at module import, in a session
hook) go to the session cassette, `_session.json` at the top of the cassettes folder, in the run's mode.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from .cassette import Cassette, CassetteError, Interaction, cassette_files, cassette_path, now
from .matching import DEFAULT_IGNORED, first_difference, normalized_body, request_key

__all__ = [
    "MODES",
    "SESSION_CASSETTE",
    "SESSION_TEST",
    "NotRecordedError",
    "Recorder",
    "StaleRecording",
    "Tape",
    "shared",
]

MODES = ("off", "none", "once", "new", "all")
"""Every `--llm-record` mode, `off` (the default) first."""


SESSION_CASSETTE = "_session.json"
"""The file, at the top of the cassettes folder, that tapes the calls made outside any test's own code."""
SESSION_TEST = "<session>"
"""What the session cassette names as its test."""

_shared: ContextVar[bool] = ContextVar("pytest_costguard_shared_fixture", default=False)
"""Set while a fixture broader than a function sets up: its calls are the session's to tape, not the test's."""


@contextmanager
def shared() -> Iterator[None]:
    """Tape the calls made in this context (a module- or session-scoped fixture's setup) in the session cassette."""
    token = _shared.set(True)
    try:
        yield
    finally:
        _shared.reset(token)


class NotRecordedError(Exception):
    """A call with no recording to answer it, under a mode that does not record: nothing was sent."""


@dataclass(frozen=True, slots=True)
class StaleRecording:
    """A recording no test used in this run."""

    path: Path
    """The cassette."""
    unused: int
    """How many of its interactions went unused (all of them for a cassette whose test no longer exists)."""
    reason: str
    """Why it is stale, for the summary."""


def _shared_prefix(a: str, b: str) -> int:
    """How many leading characters two texts share."""
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    return shared


class Tape:
    """One test's cassette while the test runs: a queue of recordings per request, and the new recordings."""

    def __init__(self, test: str, path: Path, mode: str, *, ignored: Sequence[str] = DEFAULT_IGNORED) -> None:
        self.test = test
        self.path = path
        self.mode = mode
        self.ignored = tuple(ignored)
        self._lock = threading.Lock()
        self.existing: Cassette | None = None
        if mode != "all" and path.is_file():
            self.existing = Cassette.load(path)  # CassetteError: a corrupt file stops the test, named
        self._queues: dict[str, deque[int]] = {}
        for index, interaction in enumerate(self.existing.interactions if self.existing else ()):
            self._queues.setdefault(self._key(interaction.method, interaction.path, interaction.body), deque()).append(
                index
            )
        self._used: set[int] = set()
        self.recorded: list[Interaction] = []
        """What this run recorded, in the order the attempts ended."""
        self.misses: list[str] = []
        """Why calls were refused for want of a recording (each fails the test)."""
        self.replayed = 0
        """Attempts answered from the cassette."""

    def _key(self, method: str, path: str, body: object) -> str:
        return request_key(method, path, body, self.ignored)

    @property
    def replays(self) -> bool:
        """Whether calls are answered from the cassette."""
        return self.mode in ("none", "new") or (self.mode == "once" and self.existing is not None)

    @property
    def records(self) -> bool:
        """Whether a call with no recording is sent, and recorded."""
        return self.mode in ("all", "new") or (self.mode == "once" and self.existing is None)

    def take(self, method: str, path: str, body: object) -> Interaction | None:
        """The next unused recording matching this request (identical requests in recorded order), or None."""
        if not self.replays or self.existing is None:
            return None
        with self._lock:
            queue = self._queues.get(self._key(method, path, body))
            if not queue:
                return None
            index = queue.popleft()
            self._used.add(index)
            self.replayed += 1
        return self.existing.interactions[index]

    def refuse(self, what: str, request: tuple[str, str, object] | None = None) -> NotRecordedError:
        """Note a call that has no recording and may not be recorded; return the error to raise.

        `request` (method, path, body) lets the message say where the closest recording differs.
        """
        where = self._closest(*request) if request is not None else None
        closest = f"; the closest recording differs at {where}" if where is not None else ""
        if self.mode == "once":
            how = "the cassette exists, so --llm-record=once only replays it; delete it or run --llm-record=new"
        else:
            how = "record it with --llm-record=new (or once, all) against the API, then commit the cassette"
        message = (
            f"pytest-costguard: {self.test}: {what} was not recorded in {self.path} "
            f"(--llm-record={self.mode}, nothing was sent){closest}; {how}"
        )
        with self._lock:
            self.misses.append(message)
        return NotRecordedError(message)

    def _closest(self, method: str, path: str, body: object) -> str | None:
        """Where the body differs from the most similar recording of the same method and path (None: none)."""
        if self.existing is None:
            return None
        mine = normalized_body(body, self.ignored)
        best: tuple[int, str] | None = None
        for recorded in self.existing.interactions:
            if recorded.method != method or recorded.path != path:
                continue
            theirs = normalized_body(recorded.body, self.ignored)
            where = first_difference(mine, theirs)
            if where is None:
                return "nothing: every recording of this very request was used already"
            shared = _shared_prefix(json.dumps(mine, sort_keys=True), json.dumps(theirs, sort_keys=True))
            if best is None or shared > best[0]:
                best = (shared, where)
        return None if best is None else best[1]

    def add(self, interaction: Interaction) -> None:
        """Keep an attempt this run made, to be written when the test ends."""
        with self._lock:
            self.recorded.append(interaction)

    def unused(self) -> int:
        """Recordings of the cassette this run did not replay."""
        if self.existing is None or not self.replays:
            return 0
        return len(self.existing.interactions) - len(self._used)

    def save(self) -> Path | None:
        """Write the cassette if this run recorded anything (`new` keeps the old recordings first)."""
        with self._lock:
            recorded = list(self.recorded)
        if not recorded:
            return None
        kept = self.existing.interactions if self.existing is not None and self.mode == "new" else ()
        Cassette(self.test, (*kept, *recorded), now()).save(self.path)
        return self.path


class Recorder:
    """The run's record/replay state: the default mode, where cassettes live, and each running test's tape."""

    def __init__(
        self,
        mode: str,
        *,
        rootdir: Path,
        directory: Path | None = None,
        ignored: Sequence[str] = DEFAULT_IGNORED,
    ) -> None:
        self.mode = mode
        self.rootdir = rootdir
        self.directory = directory
        self.ignored = tuple(ignored)
        self._tapes: dict[str, Tape] = {}
        self._lock = threading.Lock()
        self.stale: list[StaleRecording] = []
        self.saved: list[Path] = []
        self.replayed = 0
        """Attempts answered from cassettes in this process."""
        self._session: Tape | None = None
        self._finished = False
        self.session_misses: list[str] = []
        """Why calls outside tests were refused for want of a recording (each fails the run), once finished."""

    def session_path(self) -> Path:
        """The session cassette: at the top of `--llm-cassettes`, else in `<rootdir>/cassettes`."""
        return (self.directory if self.directory is not None else self.rootdir / "cassettes") / SESSION_CASSETTE

    def session_tape(self) -> Tape | None:
        """The tape of calls made outside tests (opened on the first one); None when off or once the run ended."""
        if self.mode == "off" or self._finished:
            return None
        with self._lock:
            if self._session is None:
                self._session = Tape(SESSION_TEST, self.session_path(), self.mode, ignored=self.ignored)
            return self._session

    def finish(self) -> None:
        """End the session tape (once): write what it recorded, keep what it refused (`session_misses`)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            tape, self._session = self._session, None
        if tape is not None:
            self.replayed += tape.replayed
            self.session_misses = list(tape.misses)
            saved = tape.save()
            if saved is not None:
                self.saved.append(saved)

    def path_of(self, nodeid: str) -> Path:
        """The cassette of test `nodeid`."""
        return cassette_path(nodeid, rootdir=self.rootdir, directory=self.directory)

    def open(self, nodeid: str, mode: str | None = None) -> Tape | None:
        """Start test `nodeid`'s tape in `mode` (the run's by default); None when that mode is `off`."""
        mode = mode or self.mode
        if mode == "off":
            return None
        tape = Tape(nodeid, self.path_of(nodeid), mode, ignored=self.ignored)
        with self._lock:
            self._tapes[nodeid] = tape
        return tape

    def tape_for(self, tag: str | None) -> Tape | None:
        """The tape a call made now goes to: the running test's (`tag`; None when its mode is `off`), or the
        session's outside tests and in the setup of fixtures broader than a function."""
        if tag is None or _shared.get():
            return self.session_tape()
        return self._tapes.get(tag)

    def close(self, nodeid: str) -> Tape | None:
        """End test `nodeid`'s tape: write what it recorded, note what it left unused."""
        with self._lock:
            tape = self._tapes.pop(nodeid, None)
        if tape is None:
            return None
        self.replayed += tape.replayed
        saved = tape.save()
        if saved is not None:
            self.saved.append(saved)
        unused = tape.unused()
        if unused and not tape.misses:
            self.stale.append(StaleRecording(tape.path, unused, f"{unused} recording(s) {nodeid} did not use"))
        return tape

    def orphans(self, nodeids: Iterable[str]) -> list[StaleRecording]:
        """Cassettes in the folders of these tests' modules that belong to no test among them."""
        nodeids = list(nodeids)
        expected = {self.path_of(n) for n in nodeids}
        found: list[StaleRecording] = []
        for folder in sorted({p.parent for p in expected}):
            if not folder.is_dir():
                continue
            for path in cassette_files(folder):
                if path in expected:
                    continue
                try:
                    count = len(Cassette.load(path).interactions)
                except CassetteError:
                    count = 0
                found.append(StaleRecording(path, count, "no collected test records here"))
        return found
