"""The pytest adapter: wires pytest's hooks, options, markers and fixtures to the run (`metering.run.CostRun`).

Thin by design. What a call costs, whether it fits and what the report says live in the layers below; this
package only turns pytest events into run events and the run's verdict into pytest's exit status and output.
Heavy libraries (anthropic, genai-prices, sqlite3) are imported only when a call is made.

Inert until asked: installed in an environment, the plugin loads in every pytest run there, so it patches
nothing and prints nothing until the run asks for it (an option or ini setting, a marker or a fixture; see
docs/configuration.md). `CostguardSession.activate` is the one place that turns metering on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..domain.money import MoneyError
from ..metering.scope import SESSION, Scope, current_scope, running
from .fixtures import (
    LlmCost,
    SessionBudget,
    SessionPipeline,
    TestCost,
    llm_async_client,
    llm_budget,
    llm_client,
    llm_cost,
    llm_emulator,
    llm_pipeline,
)
from .marks import MARKERS, LlmMarks, read_marks
from .options import add_options, asked_for, option_getter, user_path
from .replay import ReplaySession
from .settings import Settings, SettingsError, describe, resolve_settings
from .xdist import is_xdist_controller

if TYPE_CHECKING:
    from _pytest.nodes import Node

    from ..core.pricing import PriceBook
    from ..metering.children import ChildSession
    from ..metering.guard import CostGuard, GuardConfig
    from ..metering.run import CostRun
    from ..reports.baseline import BaselineComparison

__all__ = [
    "CostguardSession",
    "LlmCost",
    "SessionBudget",
    "SessionPipeline",
    "TestCost",
    "llm_async_client",
    "llm_budget",
    "llm_client",
    "llm_cost",
    "llm_emulator",
    "llm_pipeline",
    "session_of",
    "user_path",
]

_SESSION_KEY = pytest.StashKey["CostguardSession"]()
_PREPARED_KEY = pytest.StashKey[bool]()
"""Set when options asked for metering before conftests were loaded, so the SDK was patched then."""

FIXTURES = frozenset({"llm_async_client", "llm_budget", "llm_client", "llm_cost", "llm_emulator", "llm_pipeline"})
"""The plugin's fixtures: a test that uses one asks for metering."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if asked_for(early_config) is None:
        return  # nothing asks for metering (yet): the SDK is left as it is
    # Hook the SDK before conftests import app code, so clients built at import time are metered too.
    from ..providers.anthropic import patch

    patch.prepare()
    early_config.stash[_PREPARED_KEY] = True


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    try:
        settings = resolve_settings(option_getter(config), extra_prices=_hooked_prices(config))
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    worker = hasattr(config, "workerinput")
    # Loaded first, so a bad baseline stops the run before anything is set up; only the controller compares.
    baseline = _load_baseline(config, settings.baseline) if settings.baseline is not None and not worker else None
    session = CostguardSession(config, settings, baseline)
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(session, "costguard-session")
    from .xdist import register_xdist_hooks

    asked = asked_for(config)
    if asked is not None:
        session.activate(asked)
        if worker or is_xdist_controller(config) or settings.ledger is not None:
            # A shared or durable ledger is opened now, so a bad --llm-ledger is a usage error before any test.
            session.run.guard  # noqa: B018
    register_xdist_hooks(config, session)


def _hooked_prices(config: pytest.Config) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for found in config.hook.pytest_costguard_prices(config=config):
        overrides.update(found or {})
    return overrides


def _load_baseline(config: pytest.Config, path: str) -> dict[str, Any]:
    from ..reports.model import ReportError, load_report

    source = option_getter(config)("llm_baseline")[1]
    try:
        return load_report(user_path(config, "llm_baseline", path))
    except ReportError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> Iterator[None]:
    """Say that a report could not be written last, right above pytest's final line, and in that line.

    Outermost, so it comes after the short test summary. The final line counts it as pytest counts warnings and
    pytest-rerunfailures its reruns, through the reporter's stats ("1 passed, 1 cost report failed"): a run that
    exits non-zero (status 4) must not end on a line that reads as a pass.
    """
    try:
        return (yield)
    finally:
        session = config.stash.get(_SESSION_KEY, None)
        if session is not None and session.write_errors:
            for error in session.write_errors:
                terminalreporter.write_line(f"pytest-costguard: {error}; the run fails", red=True, bold=True)
            terminalreporter.stats.setdefault("cost report failed", []).append(session.write_errors)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION_KEY, None)
    if session is not None:
        session.close()
        session.replay.unregister()
        config.pluginmanager.unregister(session)
        del config.stash[_SESSION_KEY]
    if config.stash.get(_PREPARED_KEY, False):
        del config.stash[_PREPARED_KEY]
        from ..providers.anthropic import patch

        if not patch.is_installed():  # patched early, but the run stopped before metering (a usage error)
            patch.restore()


def _what_asks(item: pytest.Item, marks: LlmMarks) -> str | None:
    """Name what in a collected test asks for metering (a marker, a fixture), or None."""
    if marks.marked:
        return f"a costguard marker on {item.nodeid}"
    used = FIXTURES.intersection(getattr(item, "fixturenames", ()))
    return f"fixture {min(used)} in {item.nodeid}" if used else None


def session_of(config: pytest.Config) -> CostguardSession:
    """The costguard session of a pytest run."""
    return config.stash[_SESSION_KEY]


class CostguardSession:
    """The pytest side of one run: hands pytest's events to the run and its verdict back to pytest."""

    def __init__(self, config: pytest.Config, settings: Settings, baseline: dict[str, Any] | None = None) -> None:
        from ..metering.run import CostRun

        self.config = config
        self.settings = settings
        self.baseline = baseline
        self.baseline_comparison: BaselineComparison | None = None
        self.marks: dict[str, LlmMarks] = {}
        self._broke_budget: set[str] = set()
        self.report: dict[str, Any] | None = None
        self.write_errors: list[str] = []
        self.warnings: list[str] = []
        """Problems that do not fail the run (a history line skipped), shown in the terminal summary."""
        self.simulated = False
        """Costs come from the emulator (the `llm_emulator` fixture was used)."""
        self._prices: PriceBook | None = settings.prices
        self.run: CostRun = CostRun(
            self._build_guard,
            budget=settings.budget,
            budget_per_test=settings.budget_per_test,
            # An xdist worker hands every record to its controller, which keeps the first ones and tallies the rest.
            max_records=None if hasattr(config, "workerinput") else settings.max_records,
        )
        self._scope = SESSION
        self.replay = ReplaySession(config, settings)
        """Record and replay (`--llm-record`, `@pytest.mark.llm_record`)."""
        self.active_because: str | None = None
        """What turned metering on (an option, a marker, a fixture); None while the plugin is inert."""
        self._enclosing: Callable[[], CostGuard | None] | None = None
        """The guard of the run this one runs inside (`pytest.main` in a test), or None."""
        self._children: ChildSession | None = None
        self._scratch: str | None = None
        self._finished = False
        """Set once the report is written: later calls are refused, never sent unmetered."""

    @property
    def active(self) -> bool:
        """Whether metering is on for this run."""
        return self.active_because is not None

    def activate(self, because: str) -> None:
        """Turn metering on for the rest of the session: every Anthropic client's calls are metered from now on,
        and every OpenAI client's calls (whenever it was built).

        Clients built from now on carry the middleware; clients built before (at import or collection time,
        when only a marker or fixture asks) send each call through a copy of themselves that carries it.
        Threads the run starts charge the test that started them (`metering.threads`); Python processes it
        starts are metered under its budget (`metering.children`); a run inside a run stays under the outer
        one's budget.
        """
        if self.active_because is not None:
            return
        from ..metering import children, threads
        from ..providers import openai as openai_patch
        from ..providers.anthropic import patch
        from .xdist import is_xdist_worker

        self.active_because = because
        if is_xdist_worker(self.config):
            children.detach()  # started by a metered controller: the worker joins its ledger itself
        self._enclosing = patch.enclosing()
        # The guard itself is built on the first LLM call: a suite that makes none never imports its machinery.
        patch.install(self._guard)
        threads.install()
        self._children = self._export_children()
        openai_patch.install(self._guard)  # imports no openai: hooks it where (and when) it is imported

    def _export_children(self) -> ChildSession | None:
        """Name this session to the processes it starts, and pick the file its ledger shares with them."""
        if self.settings.redis_url is not None:
            return None  # children of a Redis run are outside the guarantee (docs/budgets.md)
        import socket
        import tempfile

        from ..metering.children import ChildSession, child_label, export
        from .xdist import LEDGER_KEY

        workerinput = getattr(self.config, "workerinput", None)
        shared = workerinput.get(LEDGER_KEY) if workerinput is not None else None
        if shared is not None:
            path = str(shared)
        elif workerinput is None and self.settings.ledger is not None:
            path = str(user_path(self.config, "llm_ledger", self.settings.ledger).resolve())
        else:
            self._scratch = tempfile.mkdtemp(prefix="pytest-costguard-")
            path = os.path.join(self._scratch, "ledger.sqlite3")
        worker = workerinput.get("workerid") if workerinput is not None else None
        if worker is None and is_xdist_controller(self.config):
            worker = "controller"
        budget = self.settings.budget
        session = ChildSession(path, None if budget is None else str(budget), child_label(worker), socket.gethostname())
        if self._configured():
            # Children treat calls as the session does: its prices (`llm_prices`, the prices hook), routing,
            # free endpoints, preflight and output bounds, pickled into a file of this session's own.
            import pickle
            from dataclasses import replace

            if self._scratch is None:
                self._scratch = tempfile.mkdtemp(prefix="pytest-costguard-")
            config_path = os.path.join(self._scratch, "guard-config.pickle")
            with open(config_path, "wb") as out:
                pickle.dump(self._guard_config(), out)
            session = replace(session, config=config_path)
        export(session)
        return session

    def _guard(self) -> CostGuard:
        if self._finished:
            from ..metering.guard import RunFinishedError

            raise RunFinishedError(
                "pytest-costguard: this call was made after the metered run wrote its report (a thread or a "
                "client that outlived the run), so it could not be counted: it was not sent. Finish background "
                "work before the session ends."
            )
        return self.run.guard

    def _guard_config(self) -> GuardConfig:
        """How the session's guard (and its child processes' guards) treat calls, from the settings."""
        from dataclasses import replace

        from ..core.budget import with_openai_max_output
        from ..core.routing import RoutePolicy
        from ..metering.guard import GuardConfig

        settings = self.settings
        config = GuardConfig(
            route=settings.route or RoutePolicy(),
            auto_cache=settings.cache == "auto",
            prices=self.price_book(),
            free_endpoints=settings.free_endpoints,
            preflight=settings.preflight,
        )
        if settings.openai_max_output:
            config = replace(config, bound_rules=with_openai_max_output(config.bound_rules, settings.openai_max_output))
        return config

    def _configured(self) -> bool:
        """Whether the settings change how calls are treated (else a guard's defaults are the session's)."""
        settings = self.settings
        return bool(
            settings.route is not None
            or settings.cache != "off"
            or self._prices is not None
            or settings.free_endpoints
            or settings.preflight != "auto"
            or settings.openai_max_output
        )

    def _build_guard(self) -> CostGuard:
        from ..metering.guard import CostGuard
        from ..metering.ledgers import LedgerChoiceError, open_session_ledger
        from .xdist import ledger_request

        settings = self.settings
        config = self._guard_config()
        children = self._children
        try:
            request = ledger_request(self.config, settings, None if children is None else children.ledger)
            ledger, cleanups = open_session_ledger(request, self._running_test)
        except LedgerChoiceError as exc:
            raise pytest.UsageError(str(exc)) from None
        for cleanup in reversed(cleanups):  # cleanups run last in, first out
            self.config.add_cleanup(cleanup)
        guard = CostGuard(config, ledger)
        guard.tapes = self.replay.recorder
        guard.scope_owner = self
        guard.fallback_scope = self._scope
        enclosing = self._enclosing() if self._enclosing is not None else None
        guard.parent = enclosing if enclosing is not guard else None
        return guard

    def collect_children(self) -> None:
        """Add what the processes this session started spent (from the shared ledger) to its run."""
        children = self.run_children
        if children is None or not os.path.exists(children.ledger):
            return
        from ..metering.sqlite_ledger import SqliteLedger

        ledger = self.run.guard.ledger
        if isinstance(ledger, SqliteLedger):
            self.run.add_remote(ledger.records(worker=children.label), ledger.refusals(worker=children.label))

    @property
    def run_children(self) -> ChildSession | None:
        """What this session told its child processes, or None when it starts none that it meters."""
        return self._children

    def price_book(self) -> PriceBook:
        """The session's prices: the user's overrides, or genai-prices (made on first use, then shared)."""
        if self._prices is None:
            from ..core.pricing import PriceBook

            self._prices = PriceBook()
        return self._prices

    def _running_test(self) -> str | None:
        return current_scope(self, self._scope).tag

    def close(self) -> None:
        """Stop metering (clients built during the run pass calls through untouched afterwards)."""
        if self.active_because is None:
            return
        from ..metering import children, threads
        from ..providers import openai as openai_patch
        from ..providers.anthropic import patch

        self._finished = True
        patch.uninstall(self._guard, ended=self._guard)  # clients built meanwhile refuse from now on
        threads.uninstall()
        openai_patch.uninstall(self._guard)
        if self._children is not None:
            children.withdraw()
        if self._scratch is not None:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)

    # -- hooks -------------------------------------------------------------------------------------------------
    def pytest_report_header(self) -> str | None:
        return describe(self.settings) if self.active else None

    def _marks(self, item: pytest.Item, parents: dict[Node | None, Any] | None = None) -> LlmMarks:
        return read_marks(item, self.settings.budget_per_test, self.price_book, parents)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        errors = []
        parents: dict[Node | None, Any] = {}
        asks: str | None = None
        for item in items:
            try:
                marks = self.marks[item.nodeid] = self._marks(item, parents)
            except (SettingsError, MoneyError) as exc:
                errors.append(str(exc))
                continue
            if asks is None and not self.active:
                asks = _what_asks(item, marks)
        if not errors:
            modes = {nodeid: self.replay.mode_of(marks.record) for nodeid, marks in self.marks.items()}
            errors = self.replay.check_cassettes(modes)
        if errors:
            raise pytest.UsageError("\n".join(errors))
        if asks is not None:
            self.activate(asks)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.replay.deselected(item.nodeid for item in items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.replay.collected(item.nodeid for item in session.items)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        nodeid = item.nodeid  # a property building its string (pytest 9): read once
        marks = self.marks.get(nodeid) or self._marks(item)
        scope = Scope(tag=nodeid, budget=marks.budget, pinned_model=marks.model)
        self.run.set_test_budget(nodeid, marks.budget)
        # The context variable charges this test's own calls; the fallback, threads that carry no context.
        self._set_fallback(scope)
        if self.replay.open(nodeid, marks.record) is not None:
            self._share_tapes()
        if self._children is not None:
            # The processes this test starts charge it. Not reset after the test: nothing runs between two tests'
            # protocols, so the next test's (or, after the last, `pytest_runtestloop`'s) sets it.
            from ..metering.children import enter_test

            enter_test(nodeid, marks.budget)
        try:
            with running(self, scope):
                return (yield)
        finally:
            self._set_fallback(SESSION)
            self.replay.close(nodeid)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self) -> Iterator[None]:
        try:
            return (yield)
        finally:
            if self._children is not None:
                from ..metering.children import enter_test

                enter_test(None, None)  # after the tests, children charge the session

    def _share_tapes(self) -> None:
        """Hand the replay recorder to a guard built before any test recorded or replayed."""
        guard = self.run.guard_if_started()
        if guard is not None and guard.tapes is None:
            guard.tapes = self.replay.recorder

    def _set_fallback(self, scope: Scope) -> None:
        self._scope = scope
        guard = self.run.guard_if_started()
        if guard is not None:
            guard.fallback_scope = scope

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # After the test's fixtures are torn down (their calls count too), before its teardown report is made.
        cost, calls = self.run.test_cost(item.nodeid)
        if calls:
            # On the report as plain strings: they survive xdist serialization and reach JUnit XML. Tests
            # that made no LLM call get none, so a suite without calls has no noise in its JUnit XML.
            item.user_properties.append(("llm_cost_usd", str(cost)))
            item.user_properties.append(("llm_calls", str(calls)))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and call.excinfo is not None and self.run.started:
            # A refused call fails its test in one line (what was refused, where), not a traceback through the SDK.
            from .failures import refused_longrepr

            longrepr = refused_longrepr(item, call.excinfo)
            if longrepr is not None:
                report.longrepr = longrepr
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # First, so the terminal, JUnit XML, --lf, -x and xdist all see the verdict.
        if report.when in ("call", "teardown") and report.passed and self.run.started:
            marks = self.marks.get(report.nodeid)
            verdict = self._budget_verdict(report.nodeid, report.when, bool(marks and marks.expect_refusal))
            if verdict is None and report.when == "call":
                verdict = self.replay.verdict(report.nodeid)
            if verdict is not None:
                report.outcome = "failed"
                report.longrepr = "pytest-costguard: " + verdict
        self.run.record_outcome(report.nodeid, report.when, report.outcome, xfail=hasattr(report, "wasxfail"))

    def _budget_verdict(self, nodeid: str, when: str, expect_refusal: bool) -> str | None:
        """Why a test that passed broke its own budget, once per test; None when it kept to it."""
        if nodeid in self._broke_budget:
            return None
        refused = self.run.test_refusals(nodeid) if when == "call" and not expect_refusal else []
        # A refusal the code under test swallowed (unless the test expects one); or settled spend over the
        # test's budget, which expecting a refusal never excuses (the bound's assumptions failed: a pricier
        # model answered, usage it did not foresee). Teardown catches the calls fixtures made after the test.
        message = refused[0].message if refused else None
        if message is None:
            overspend = self.run.test_overspend(nodeid)
            message = overspend.describe() if overspend is not None else None
        if message is not None:
            self._broke_budget.add(nodeid)
        return message

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.replay.finish() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a call outside tests had no recording
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker sends its spend to the controller (xdist.py), which reports for the run
        run = self.run
        run.finish()
        self.collect_children()
        self._finished = True
        if not (run.happened or self.settings.reports or self.baseline or self.settings.history):
            return  # no call, nothing asked for: an idle suite pays nothing here
        for labels in self.config.hook.pytest_costguard_report_labels(config=self.config):
            run.labels.update(labels or {})
        self.report = report = run.build_report()
        self.config.hook.pytest_costguard_report(config=self.config, report=report)
        comparison = self._compare_with_baseline(report)
        self.write_errors = self._write_reports(report)
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            # A CI gate reads the report: a run whose report is missing must not pass silently.
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        failed = report["budget_exceeded"] or (comparison is not None and comparison.failed)
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)
    def pytest_costguard_report_labels(self, config: pytest.Config) -> dict[str, Any] | None:
        labels = {"backend": "emulator"} if self.simulated else {}
        labels.update(self.replay.labels() or {})
        return labels or None

    def _write_reports(self, report: dict[str, Any]) -> list[str]:
        from ..reports.model import render_markdown, write_report

        errors: list[str] = []
        history = self._record_history(report, errors)
        for path in self.settings.reports:
            target = user_path(self.config, "llm_report", path)
            try:
                write_report(report, target, history=history)
            except OSError as exc:
                errors.append(f"--llm-report: cannot write {str(target)!r}: {exc.strerror or exc}")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary and self.run.happened:
            try:
                with open(summary, "a", encoding="utf-8") as fh:
                    fh.write(render_markdown(report))
            except OSError as exc:
                errors.append(f"GITHUB_STEP_SUMMARY: cannot append to {summary!r}: {exc.strerror or exc}")
        return errors

    def _record_history(self, report: dict[str, Any], errors: list[str]) -> list[dict[str, Any]] | None:
        """Append this run to --llm-history; return the history for an HTML report's trend (None if not wanted)."""
        if self.settings.history is None:
            return None
        from ..reports.history import HistoryError, append_history, git_revision, history_entry, read_history

        target = user_path(self.config, "llm_history", self.settings.history)
        try:
            append_history(target, history_entry(report, revision=git_revision(self.config.rootpath)))
            if not any(p.lower().endswith((".html", ".htm")) for p in self.settings.reports):
                return None
            entries, warnings = read_history(target)
        except (OSError, HistoryError) as exc:
            errors.append(f"--llm-history: cannot append to {str(target)!r}: {getattr(exc, 'strerror', None) or exc}")
            return None
        self.warnings.extend(warnings)
        return entries

    def _compare_with_baseline(self, report: dict[str, Any]) -> BaselineComparison | None:
        """Compare with --llm-baseline, putting the result into the report (JSON and Markdown)."""
        if self.baseline is None:
            return None
        from ..reports.baseline import compare

        settings = self.settings
        comparison = compare(report, self.baseline, fail_pct=settings.baseline_fail_pct, floor=settings.baseline_floor)
        self.baseline_comparison = comparison
        report["baseline"] = {"path": settings.baseline, **comparison.to_json()}
        report.setdefault("markdown_sections", []).append(comparison.markdown())
        return comparison

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for warning in self.warnings:
            terminalreporter.write_line(f"pytest-costguard: warning: {warning}", yellow=True)
        replay_lines = self.replay.summary_lines()
        report = self.report
        comparison = self.baseline_comparison
        if replay_lines and (report is None or not report["calls"]):
            terminalreporter.write_sep("=", "LLM record and replay (pytest-costguard)")
            for line in replay_lines:
                terminalreporter.write_line(line)
        if report is None or not (report["calls"] or report["refused_calls"] or comparison is not None):
            return
        from ..reports.model import terminal_lines, verdict_lines

        title = "LLM cost (pytest-costguard)"
        if report.get("backend") == "emulator":
            title += " - emulator, simulated costs"
        terminalreporter.write_sep("=", title)
        for line in terminal_lines(report):
            terminalreporter.write_line(line)
        for line in replay_lines:
            terminalreporter.write_line(line)
        for line in verdict_lines(report):
            terminalreporter.write_line(line, red=True, bold=True)
        if comparison is not None:
            for line in comparison.terminal_lines():
                failing = line.startswith("LLM COST REGRESSION")
                terminalreporter.write_line(line, red=failing, bold=failing)
