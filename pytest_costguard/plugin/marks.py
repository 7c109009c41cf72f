"""The `llm_budget` and `llm_model` markers: what each test asks for, validated at collection."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

import pytest

from ..domain.money import parse_usd
from .settings import SettingsError, parse_record_mode

if TYPE_CHECKING:
    from _pytest.nodes import Node

    from ..core.pricing import PriceBook

__all__ = ["MARKERS", "LlmMarks", "read_marks"]

MARKERS = (
    "llm_budget(usd, expect_refusal=False): hard cap in USD on what this test's LLM calls may spend; with "
    "expect_refusal=True a refusal reaches the test as BudgetExceededError and does not fail it by itself",
    "llm_model(name): send this test's LLM calls to this model (no routing)",
    "llm_record(mode): record and replay this test's LLM calls in mode off, none, once, new or all "
    "(overrides --llm-record)",
)


class LlmMarks(NamedTuple):
    """What a test's markers ask for."""

    budget: Decimal | None
    """The test's own cap."""
    model: str | None
    """The model the test is pinned to."""
    expect_refusal: bool = False
    """The test exercises refusal handling: a refusal of its own budget does not fail it by itself."""
    marked: bool = False
    """The test carries an `llm_budget`, `llm_model` or `llm_record` marker (its own or inherited)."""
    record: str | None = None
    """The record/replay mode its `llm_record` marker asks for (None: the run's)."""


_Found = tuple["pytest.Mark | None", "pytest.Mark | None", "pytest.Mark | None"]


def _closest(markers: Iterable[pytest.Mark]) -> _Found:
    """The first llm_budget, llm_model and llm_record marks of `markers` (given closest first)."""
    budget = model = record = None
    for found in markers:
        if found.name == "llm_budget":
            budget = budget or found
        elif found.name == "llm_model":
            model = model or found
        elif found.name == "llm_record":
            record = record or found
    return budget, model, record


def read_marks(
    item: pytest.Item,
    default_budget: Decimal | None,
    prices: Callable[[], PriceBook],
    parents: dict[Node | None, _Found] | None = None,
) -> LlmMarks:
    """Read a test's marks (its own first, then its class's and module's), raising `SettingsError` on bad ones.

    `parents` caches each parent's marks, so a module of 100 tests is walked once, not 100 times.
    """
    budget_mark, model_mark, record_mark = _closest(item.own_markers)
    if budget_mark is None or model_mark is None or record_mark is None:
        parent = item.parent
        inherited = parents.get(parent) if parents is not None else None
        if inherited is None:
            inherited = _closest(parent.iter_markers()) if parent is not None else (None, None, None)
            if parents is not None:
                parents[parent] = inherited
        budget_mark, model_mark = budget_mark or inherited[0], model_mark or inherited[1]
        record_mark = record_mark or inherited[2]
    budget = default_budget
    expect_refusal = False
    if budget_mark is not None:
        source = f"@pytest.mark.llm_budget on {item.nodeid}"
        options = dict(budget_mark.kwargs)
        expect_refusal = options.pop("expect_refusal", False)
        if set(options) - {"usd"} or len(budget_mark.args) + len(options) != 1 or not isinstance(expect_refusal, bool):
            raise SettingsError(
                f"{source}: takes the budget in USD and optionally expect_refusal=True, e.g. llm_budget(0.05)"
            )
        raw = budget_mark.args[0] if budget_mark.args else options["usd"]
        budget = parse_usd(raw, source=source)
    model = None
    if model_mark is not None:
        source = f"@pytest.mark.llm_model on {item.nodeid}"
        args, kwargs = model_mark.args, model_mark.kwargs
        value = args[0] if len(args) == 1 and not kwargs else kwargs.get("name")
        if len(args) + len(kwargs) != 1 or not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{source}: takes one argument, a model name, e.g. llm_model('claude-haiku-4-5')")
        if not prices().knows(value):
            raise SettingsError(f"{source}: no price known for model {value!r}; add it to llm_prices")
        model = value
    record = None
    if record_mark is not None:
        source = f"@pytest.mark.llm_record on {item.nodeid}"
        args, kwargs = record_mark.args, record_mark.kwargs
        value = args[0] if len(args) == 1 and not kwargs else kwargs.get("mode")
        if len(args) + len(kwargs) != 1 or not isinstance(value, str):
            raise SettingsError(f"{source}: takes one argument, a mode, e.g. llm_record('none')")
        record = parse_record_mode(value, source=source)
    marked = budget_mark is not None or model_mark is not None or record_mark is not None
    return LlmMarks(budget, model, expect_refusal, marked, record)
