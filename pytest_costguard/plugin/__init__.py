"""The pytest adapter: options, markers, fixtures, attribution, the budget gate and the reports.

Thin by design: money, budgets and routing live in the core modules; this module only wires them to
pytest's hooks. Heavy libraries (anthropic, genai-prices) are imported only when a call is made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from ..domain.money import MoneyError, parse_usd
from .settings import Settings, SettingsError, describe, resolve_settings

if TYPE_CHECKING:
    from _pytest.nodes import Node

    from ..core.pricing import PriceBook
    from ..core.tracking import CostRecord
    from ..metering.guard import CostGuard
    from ..metering.ledger import InMemoryLedger
    from ..reports.baseline import BaselineComparison

_SESSION_KEY = pytest.StashKey["CostguardSession"]()

# (name, CLI flag or None, help, ini type, default)
_OPTIONS: tuple[tuple[str, str | None, str, str, Any], ...] = (
    ("llm_budget", "--llm-budget", "hard cap in USD on what LLM calls may spend in this session", "string", None),
    ("llm_budget_per_test", "--llm-budget-per-test", "default hard cap in USD for each test", "string", None),
    ("llm_route", "--llm-route", "model routing: off (default), cheap (all to llm_cheap_model), auto", "string", None),
    ("llm_cheap_model", "--llm-cheap-model", "model that cheap/auto routing sends to (default claude-haiku-4-5)",
     "string", None),
    ("llm_route_map", None, "explicit routing, one 'requested = sent' per line", "linelist", []),
    ("llm_cache", "--llm-cache", "prompt caching of recurring long system prompts: off (default), auto", "string",
     None),
    ("llm_report", "--llm-report", "write the cost report to PATH (.json or .md); repeatable", "linelist", []),
    ("llm_prices", None, "price overrides, 'model = input=N output=N [cache_write=N cache_read=N]' per line, "
     "USD per million tokens", "linelist", []),
    ("llm_baseline", "--llm-baseline", "compare this run's costs with an earlier JSON report", "string", None),
    ("llm_baseline_fail", "--llm-baseline-fail", "fail when cost rises more than PCT percent above the baseline",
     "string", None),
    ("llm_baseline_floor", "--llm-baseline-floor", "ignore baseline increases below this many USD (default 0.01)",
     "string", None),
    ("llm_ledger", "--llm-ledger", "keep the session budget in this SQLite file, every settled call on "
     "disk at once (read it with `costguard report PATH`)", "string", None),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("costguard", "LLM cost budget and reports (pytest-costguard)")
    for name, flag, help_text, ini_type, default in _OPTIONS:
        if flag is not None:
            metavar = {"llm_report": "PATH", "llm_baseline": "PATH", "llm_ledger": "PATH",
                       "llm_route": "POLICY", "llm_cache": "MODE",
                       "llm_cheap_model": "MODEL", "llm_baseline_fail": "PCT"}.get(name, "USD")
            group.addoption(
                flag,
                dest=name,
                action="append" if ini_type == "linelist" else "store",
                default=None,
                metavar=metavar,
                help=f"{help_text} (ini: {name})",
            )
        parser.addini(name, help_text, type=ini_type, default=default)  # type: ignore[arg-type]


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Hook the SDK before conftests import app code, so clients built at import time are metered too.
    from ..providers.anthropic import patch as provider

    provider.prepare()


def _getter(config: pytest.Config) -> Any:
    def get(name: str) -> tuple[object, str]:
        flag = next(f for n, f, *_ in _OPTIONS if n == name)
        if flag is not None:
            value = config.getoption(name, None)
            if value not in (None, []):
                return value, flag
        inifile = config.inipath.name if config.inipath else "the ini file"
        return config.getini(name), f"{name} in {inifile}"

    return get


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llm_budget(usd): hard cap in USD on what this test's LLM calls may spend")
    config.addinivalue_line("markers", "llm_model(name): send this test's LLM calls to this model (no routing)")
    try:
        settings = resolve_settings(_getter(config))
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    worker = hasattr(config, "workerinput")
    distributed = worker or (config.pluginmanager.hasplugin("xdist") and config.getoption("dist", "no") != "no")
    # Loaded first, so a bad baseline stops the run before anything is set up; only the controller compares.
    baseline = None
    if settings.baseline is not None and not worker:
        baseline = _load_baseline(config, settings.baseline)
    session = CostguardSession(config, settings)
    session.baseline = baseline
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(session, "costguard-session")
    if distributed or settings.ledger is not None:
        # A shared or durable ledger is opened now, so a bad --llm-ledger is a usage error before any test.
        session.guard_ready()
    if distributed:
        from .xdist import register_xdist_hooks

        register_xdist_hooks(config, session)


def user_path(config: pytest.Config, name: str, path: str) -> Path:
    """Resolve a path setting as pytest does: from the command line, relative to where pytest was started;
    from the ini file, relative to that file's folder."""
    if config.getoption(name, None) not in (None, []):
        return config.invocation_params.dir / path
    return (config.inipath.parent if config.inipath else config.rootpath) / path


def _load_baseline(config: pytest.Config, path: str) -> dict[str, Any]:
    from ..reports.model import ReportError, load_report

    source = _getter(config)("llm_baseline")[1]
    try:
        return load_report(user_path(config, "llm_baseline", path))
    except ReportError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION_KEY, None)
    if session is not None:
        session.close()
        config.pluginmanager.unregister(session)
        del config.stash[_SESSION_KEY]


class TestMarks(NamedTuple):
    """What a test's markers ask for (a NamedTuple: cheaper to define at start-up than a dataclass)."""

    budget: Decimal | None
    """The test's own cap."""
    model: str | None
    """The model the test is pinned to."""


_Found = tuple["pytest.Mark | None", "pytest.Mark | None"]


def _closest_marks(markers: Iterable[pytest.Mark]) -> _Found:
    """The first llm_budget and llm_model marks of `markers` (given closest first)."""
    budget = model = None
    for found in markers:
        if found.name == "llm_budget":
            budget = budget or found
        elif found.name == "llm_model":
            model = model or found
    return budget, model


def _marks(
    item: pytest.Item,
    settings: Settings,
    prices: Callable[[], PriceBook],
    parents: dict[Node | None, _Found] | None = None,
) -> TestMarks:
    budget = settings.budget_per_test
    # The item's own marks, then its parents' (class, module...) closest first, as `item.iter_markers()` gives
    # them; `parents` keeps each parent's, so a module of 100 tests is walked once, not 100 times.
    budget_mark, model_mark = _closest_marks(item.own_markers)
    if budget_mark is None or model_mark is None:
        parent = item.parent
        inherited = parents.get(parent) if parents is not None else None
        if inherited is None:
            inherited = _closest_marks(parent.iter_markers()) if parent is not None else (None, None)
            if parents is not None:
                parents[parent] = inherited
        budget_mark, model_mark = budget_mark or inherited[0], model_mark or inherited[1]
    mark = budget_mark
    if mark is not None:
        source = f"@pytest.mark.llm_budget on {item.nodeid}"
        extra = set(mark.kwargs) - {"usd"}
        if extra or len(mark.args) + len(mark.kwargs) != 1:
            raise SettingsError(f"{source}: takes one argument, the budget in USD, e.g. llm_budget(0.05)")
        budget = parse_usd(mark.args[0] if mark.args else mark.kwargs["usd"], source=source)
    model = None
    mark = model_mark
    if mark is not None:
        source = f"@pytest.mark.llm_model on {item.nodeid}"
        value = mark.args[0] if len(mark.args) == 1 and not mark.kwargs else mark.kwargs.get("name")
        if len(mark.args) + len(mark.kwargs) != 1 or not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{source}: takes one argument, a model name, e.g. llm_model('claude-haiku-4-5')")
        if not prices().knows(value):
            raise SettingsError(f"{source}: no price known for model {value!r}; add it to llm_prices")
        model = value
    return TestMarks(budget, model)


class CostguardSession:
    """The session's state and hooks: one per pytest run, kept in `config.stash`."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._guard: CostGuard | None = None
        self.outcomes: dict[str, str] = {}
        self.marks: dict[str, TestMarks] = {}
        self.test_ledgers: dict[str, InMemoryLedger] = {}
        self.report: dict[str, Any] | None = None
        self.extra_records: list[CostRecord] = []
        self.extra_refusals: list[Any] = []
        self.extra_failed_attempts = 0
        self.baseline: dict[str, Any] | None = None
        self.baseline_comparison: BaselineComparison | None = None
        self.write_errors: list[str] = []
        self._by_test: dict[str, list[CostRecord]] = {}
        self._current: tuple[str, TestMarks] | None = None
        self._creating = threading.Lock()
        self._prices: PriceBook | None = self.settings.prices
        from ..providers.anthropic import patch as provider

        # The guard itself is built on the first LLM call: a suite that makes none never imports its machinery.
        provider.install(self.guard_ready)

    # -- the guard ---------------------------------------------------------------------------------------------
    def guard_ready(self) -> CostGuard:
        """Return the guard metering this session's calls, creating it on first use."""
        if self._guard is not None:
            return self._guard
        with self._creating:  # the first calls may come from several threads at once
            if self._guard is None:
                from ..core.routing import RoutePolicy
                from ..metering.guard import CostGuard, GuardConfig
                from .xdist import session_ledger

                settings = self.settings
                config = GuardConfig(
                    route=settings.route or RoutePolicy(),
                    auto_cache=settings.cache == "auto",
                    prices=self.price_book(),
                )
                # In memory, or an SQLite file shared with xdist workers / kept on disk (--llm-ledger).
                guard = CostGuard(config, session_ledger(self.config, settings, self._running_test))
                guard.listeners.append(self._index)
                self._guard = guard
                if self._current is not None:
                    self._enter_scope()
        return self._guard

    def price_book(self) -> PriceBook:
        """The session's prices: the user's overrides, or genai-prices (made on first use, then shared)."""
        if self._prices is None:
            from ..core.pricing import PriceBook

            self._prices = self.settings.prices or PriceBook()
        return self._prices

    def _running_test(self) -> str | None:
        return self._guard.scope.tag if self._guard is not None else None

    @property
    def guard(self) -> CostGuard:
        """The guard metering this session's calls."""
        return self.guard_ready()

    def close(self) -> None:
        """Stop metering (clients built during the run pass calls through untouched afterwards)."""
        from ..providers.anthropic import patch as provider

        provider.uninstall(self.guard_ready)

    # -- hooks -------------------------------------------------------------------------------------------------
    def pytest_report_header(self) -> str:
        return describe(self.settings)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        errors = []
        parents: dict[Node | None, _Found] = {}
        for item in items:
            try:
                self.marks[item.nodeid] = _marks(item, self.settings, self.price_book, parents)
            except (SettingsError, MoneyError) as exc:
                errors.append(str(exc))
        if errors:
            raise pytest.UsageError("\n".join(errors))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self._current = (item.nodeid, self.marks.get(item.nodeid) or _marks(item, self.settings, self.price_book))
        if self._guard is not None:
            self._enter_scope()
        try:
            return (yield)
        finally:
            self._current = None
            if self._guard is not None:
                self._guard.scope = type(self._guard.scope)()

    def _enter_scope(self) -> None:
        """Charge the guard's calls to the running test, under its own budget if it has one."""
        from ..metering.guard import Scope
        from ..metering.ledger import InMemoryLedger

        assert self._guard is not None and self._current is not None
        nodeid, marks = self._current
        ledger = self.test_ledgers.get(nodeid)
        if ledger is None and marks.budget is not None:
            ledger = self.test_ledgers[nodeid] = InMemoryLedger(limit=marks.budget, scope=f"test {nodeid}")
        self._guard.scope = Scope(tag=nodeid, ledger=ledger, pinned_model=marks.model)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        # After the test's fixtures are torn down (their calls count too), before its teardown report is made.
        if item.nodeid in self._by_test:
            cost, calls = self._test_cost(item.nodeid)
            # On the report as plain strings: they survive xdist serialization and reach JUnit XML. Tests
            # that made no LLM call get none, so a suite without calls has no noise in its JUnit XML.
            item.user_properties.append(("llm_cost_usd", str(cost)))
            item.user_properties.append(("llm_calls", str(calls)))

    def records_of(self, nodeid: str) -> list[CostRecord]:
        """The calls a test made, from an index kept as calls settle (scanning every record per test is O(n^2))."""
        return self._by_test.get(nodeid, [])

    def _index(self, record: CostRecord) -> None:
        if record.tag is not None:
            self._by_test.setdefault(record.tag, []).append(record)

    def _test_cost(self, nodeid: str) -> tuple[Decimal, int]:
        records = self.records_of(nodeid)
        return sum((r.cost_usd for r in records), Decimal(0)), len(records)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # First, so the terminal, JUnit XML, --lf, -x and xdist all see the verdict. (A plain hook rather than a
        # wrapper of pytest_runtest_makereport: this runs three times per test, idle suites included.)
        if report.when == "call" and report.passed and self._guard is not None and self._guard.refusals:
            refused = [r for r in self._guard.refusals if r.tag == report.nodeid and r.scope != "session"]
            if refused:
                # The code under test swallowed the refusal; the test still broke its budget.
                report.outcome = "failed"
                report.longrepr = "pytest-costguard: " + refused[0].message
        previous = self.outcomes.get(report.nodeid)
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        elif report.when == "call":
            outcome = "xpassed" if hasattr(report, "wasxfail") else "passed"
        else:
            outcome = previous or "passed"
        if previous in ("failed", "error") and outcome not in ("failed", "error"):
            return
        self.outcomes[report.nodeid] = outcome

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            # An xdist worker sends its records to the controller (xdist.py), which reports for the run.
            return
        if self._guard is not None:
            self._guard.settle_open()
        happened = self._guard is not None and (self._guard.records or self._guard.refusals)
        if not (happened or self.extra_records or self.extra_refusals or self.settings.reports or self.baseline):
            return  # no call, nothing asked for: an idle suite pays nothing here
        from ..reports.model import RefusalInfo, build_report, write_report

        guard = self.guard
        refusals = [
            RefusalInfo(r.tag, r.scope, r.amount, r.message) for r in guard.refusals
        ] + list(self.extra_refusals)
        records = [*guard.records, *self.extra_records]
        self.report = build_report(
            records,
            self.outcomes,
            budget=self.settings.budget,
            budget_per_test=self.settings.budget_per_test,
            refusals=refusals,
            failed_attempts=guard.failed_attempts + self.extra_failed_attempts,
            labels={"backend": "emulator"} if os.environ.get("COSTGUARD_BACKEND") == "emulator" else None,
        )
        comparison = self._compare_with_baseline(self.report)
        self.write_errors = []
        for path in self.settings.reports:
            target = user_path(self.config, "llm_report", path)
            try:
                write_report(self.report, target)
            except OSError as exc:
                self.write_errors.append(f"--llm-report: cannot write {str(target)!r}: {exc.strerror or exc}")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary and (records or refusals):
            from ..reports.model import render_markdown

            try:
                with open(summary, "a", encoding="utf-8") as fh:
                    fh.write(render_markdown(self.report))
            except OSError as exc:
                self.write_errors.append(f"GITHUB_STEP_SUMMARY: cannot append to {summary!r}: {exc.strerror or exc}")
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            # A CI gate reads the report: a run whose report is missing must not pass silently.
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if self.report["budget_exceeded"] and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if comparison is not None and comparison.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _compare_with_baseline(self, report: dict[str, Any]) -> BaselineComparison | None:
        """Compare with --llm-baseline, putting the result into the report (JSON and Markdown)."""
        if self.baseline is None:
            return None
        from ..reports.baseline import compare

        settings = self.settings
        comparison = compare(
            report, self.baseline, fail_pct=settings.baseline_fail_pct, floor=settings.baseline_floor
        )
        self.baseline_comparison = comparison
        report["baseline"] = {"path": settings.baseline, **comparison.to_json()}
        report.setdefault("markdown_sections", []).append(comparison.markdown())
        return comparison

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for error in self.write_errors:
            terminalreporter.write_line(f"pytest-costguard: {error}", red=True, bold=True)
        report = self.report
        comparison = self.baseline_comparison
        if report is None or not (report["calls"] or report["refused_calls"] or comparison is not None):
            return
        title = "LLM cost (pytest-costguard)"
        if report.get("backend") == "emulator":
            title += " - emulator, simulated costs"
        terminalreporter.write_sep("=", title)
        from ..reports.model import terminal_lines

        for line in terminal_lines(report):
            terminalreporter.write_line(line)
        if report["budget_exceeded"]:
            refused = sum(1 for r in report["refusals"] if r["scope"] == "session")
            terminalreporter.write_line(
                f"LLM BUDGET EXCEEDED: {refused} call(s) refused by the session budget "
                f"(--llm-budget); the run fails.",
                red=True,
                bold=True,
            )
        if comparison is not None:
            for line in comparison.terminal_lines():
                failing = line.startswith("LLM COST REGRESSION")
                terminalreporter.write_line(line, red=failing, bold=failing)


# -- fixtures ----------------------------------------------------------------------------------------------------
def _session(request: pytest.FixtureRequest) -> CostguardSession:
    return request.config.stash[_SESSION_KEY]


class TestCost:
    """This test's LLM spend so far (read-only views; a plain class: cheaper to define at start-up)."""

    __slots__ = ("_nodeid", "_session")

    def __init__(self, session: CostguardSession, nodeid: str) -> None:
        self._session = session
        self._nodeid = nodeid

    @property
    def records(self) -> tuple[CostRecord, ...]:
        """Every billed call this test made."""
        return tuple(self._session.records_of(self._nodeid))

    @property
    def total(self) -> Decimal:
        """USD spent."""
        return sum((r.cost_usd for r in self.records), Decimal(0))

    @property
    def calls(self) -> int:
        """Billed calls."""
        return len(self.records)

    @property
    def limit(self) -> Decimal | None:
        """The test's own budget, if any."""
        marks = self._session.marks.get(self._nodeid)
        return None if marks is None else marks.budget

    @property
    def remaining(self) -> Decimal | None:
        """What the test may still spend under its own budget (None without one)."""
        ledger = self._session.test_ledgers.get(self._nodeid)
        # The test's ledger is opened with its first call; before that, all of its budget is left.
        return self.limit if ledger is None else ledger.remaining


class SessionBudget:
    """The session budget: limit, spent, remaining (read-only views)."""

    __slots__ = ("_session",)

    def __init__(self, session: CostguardSession) -> None:
        self._session = session

    @property
    def limit(self) -> Decimal | None:
        """The session's cap (None without --llm-budget)."""
        return self._session.settings.budget

    @property
    def spent(self) -> Decimal:
        """USD settled so far in this process."""
        return self._session.guard.ledger.spent

    @property
    def remaining(self) -> Decimal | None:
        """USD neither spent nor held by calls in flight (None without a budget)."""
        ledger = self._session.guard.ledger
        if ledger.limit is None:
            return None
        return max(ledger.limit - ledger.spent - ledger.reserved, Decimal(0))

    @property
    def refused(self) -> int:
        """Calls refused by the session budget so far."""
        return self._session.guard.session_refusals


@pytest.fixture
def llm_cost(request: pytest.FixtureRequest) -> TestCost:
    """This test's LLM spend so far: total, calls, records, remaining."""
    return TestCost(_session(request), request.node.nodeid)


@pytest.fixture
def llm_budget(request: pytest.FixtureRequest) -> SessionBudget:
    """The session budget: limit, spent, remaining, refused."""
    return SessionBudget(_session(request))


@pytest.fixture
def llm_client() -> Iterator[Any]:
    """An `anthropic.Anthropic()` client, metered and routed like every client in the session."""
    import anthropic

    client = anthropic.Anthropic()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def llm_async_client() -> Any:
    """An `anthropic.AsyncAnthropic()` client, metered and routed like every client in the session.

    A plain fixture, so it works with any async test runner; its connections close with the event loop.
    """
    import anthropic

    return anthropic.AsyncAnthropic()


@pytest.fixture(scope="session")
def llm_emulator() -> Iterator[Any]:
    """A loopback Messages API emulator for the session; its `base_url` points a client at it."""
    from ..emulator import Emulator

    with Emulator() as emulator:
        yield emulator


class SessionPipeline:
    """The core `process` bound to a client metered by the session: call `.process(text)`."""

    def __init__(self, client: Any, config: Any) -> None:
        from ..core.tracking import CostTracker

        self.client = client
        self.config = config
        # The session budget is enforced by the guard on every call; this tracker is the pipeline's own view.
        self.tracker = CostTracker(budget_limit=None)

    def process(self, text: str, config: Any = None) -> Any:
        """Run `text` through route -> budget check -> call with retry and caching -> price; return the result."""
        from ..core.pipeline import process

        result, self.tracker = process(text, config or self.config, self.tracker, client=self.client)
        return result


@pytest.fixture
def llm_pipeline(llm_client: Any, request: pytest.FixtureRequest) -> SessionPipeline:
    """The library's `process()` bound to this session's metered client (config: `PipelineConfig()`)."""
    from ..core.pipeline import PipelineConfig

    return SessionPipeline(llm_client, PipelineConfig(tag=request.node.nodeid))
