"""The plugin's fixtures: this test's spend, the session budget, metered clients, the emulator, the pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..domain.records import CostRecord
    from . import CostguardSession

__all__ = [
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
]


def _session(request: pytest.FixtureRequest) -> CostguardSession:
    """The run's session, metering from now on: using one of the plugin's fixtures asks for it."""
    from . import session_of

    session = session_of(request.config)
    if not session.active:
        # Usually already on: collection sees the fixture in the test's closure. Not so with getfixturevalue.
        session.activate(f"fixture {request.fixturename} in {request.node.nodeid}")
    return session


class LlmCost:
    """This test's LLM spend so far (read-only views)."""

    __test__ = False  # not a test class, wherever a user imports it
    __slots__ = ("_nodeid", "_session")

    def __init__(self, session: CostguardSession, nodeid: str) -> None:
        self._session = session
        self._nodeid = nodeid

    @property
    def records(self) -> tuple[CostRecord, ...]:
        """Every billed call this test made."""
        return tuple(self._session.run.records_of(self._nodeid))

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
        guard = self._session.run.guard_if_started()
        ledger = guard.test_ledgers.get(self._nodeid) if guard is not None else None
        # The test's ledger is opened with its first call; before that, all of its budget is left.
        return self.limit if ledger is None else ledger.remaining


TestCost = LlmCost
"""The name of `LlmCost` before 0.2 (not collected: the class sets `__test__ = False`)."""


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
        return self._session.run.guard.ledger.spent

    @property
    def remaining(self) -> Decimal | None:
        """USD neither spent nor held by calls in flight (None without a budget)."""
        return self._session.run.guard.ledger.remaining

    @property
    def refused(self) -> int:
        """Calls refused by the session budget so far."""
        return self._session.run.guard.session_refusals


@pytest.fixture
def llm_cost(request: pytest.FixtureRequest) -> LlmCost:
    """This test's LLM spend so far: total, calls, records, remaining."""
    return LlmCost(_session(request), request.node.nodeid)


@pytest.fixture
def llm_budget(request: pytest.FixtureRequest) -> SessionBudget:
    """The session budget: limit, spent, remaining, refused."""
    return SessionBudget(_session(request))


@pytest.fixture
def llm_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An `anthropic.Anthropic()` client, metered and routed like every client in the session."""
    import anthropic

    _session(request)

    client = anthropic.Anthropic()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def llm_async_client(request: pytest.FixtureRequest) -> Any:
    """An `anthropic.AsyncAnthropic()` client, metered and routed like every client in the session.

    A plain fixture, so it works with any async test runner; its connections close with the event loop.
    """
    import anthropic

    _session(request)

    return anthropic.AsyncAnthropic()


@pytest.fixture(scope="session")
def llm_emulator(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A loopback Messages API emulator for the session; its `base_url` points a client at it.

    A run that uses it is labelled "emulator, simulated costs" in every report.
    """
    from ..emulator import Emulator

    _session(request).simulated = True
    with Emulator() as emulator:
        yield emulator


class SessionPipeline:
    """The library's `process()` bound to the session's metered client and guard: call `.process(text)`."""

    def __init__(self, session: CostguardSession, client: Any, config: Any) -> None:
        from ..core.tracking import CostTracker

        self._session = session
        self.client = client
        self.config = config
        # The session budget is enforced by the session's guard; this tracker is the pipeline's own view.
        self.tracker = CostTracker(budget_limit=None)

    def process(self, text: str, config: Any = None) -> Any:
        """Run `text` through route -> reserve -> call with retry and caching -> settle; return the result."""
        from ..core.pipeline import process

        guard = self._session.run.guard
        result, self.tracker = process(text, config or self.config, self.tracker, client=self.client, guard=guard)
        return result


@pytest.fixture
def llm_pipeline(llm_client: Any, request: pytest.FixtureRequest) -> SessionPipeline:
    """The library's `process()` on this session's metered client, priced and capped by the session's guard."""
    from ..core.pipeline import PipelineConfig

    session = _session(request)
    return SessionPipeline(session, llm_client, PipelineConfig(tag=request.node.nodeid, prices=session.price_book()))
