"""pytest-costguard: keep what code spends on LLM APIs under a hard budget.

The names of the seed design import from here. They are loaded on first use, so `import pytest_costguard`
costs nothing and pulls in neither pytest, anthropic nor genai-prices.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _compat

_compat.install()

if TYPE_CHECKING:
    from .core.budget import BudgetExceededError, input_token_bound, worst_case_cost
    from .core.caching import build_cached_messages
    from .core.pipeline import PipelineConfig, PipelineResult, aprocess, process
    from .core.pricing import PriceBook, PriceOverride, UnknownModelPrice, Usage, cost_of_response
    from .core.retry import RetryPolicy, acall_with_retry, call_with_retry, is_transient
    from .core.routing import RoutingConfig, RoutingDecision, decide_model, select_model
    from .core.tracking import CostRecord, CostTracker
    from .metering.guard import CostGuard, GuardConfig
    from .metering.ledger import InMemoryLedger

_EXPORTS = {
    "BudgetExceededError": "core.budget",
    "input_token_bound": "core.budget",
    "worst_case_cost": "core.budget",
    "build_cached_messages": "core.caching",
    "CostGuard": "metering.guard",
    "GuardConfig": "metering.guard",
    "InMemoryLedger": "metering.ledger",
    "PipelineConfig": "core.pipeline",
    "PipelineResult": "core.pipeline",
    "aprocess": "core.pipeline",
    "process": "core.pipeline",
    "PriceBook": "core.pricing",
    "PriceOverride": "core.pricing",
    "UnknownModelPrice": "core.pricing",
    "Usage": "core.pricing",
    "cost_of_response": "core.pricing",
    "RetryPolicy": "core.retry",
    "acall_with_retry": "core.retry",
    "call_with_retry": "core.retry",
    "is_transient": "core.retry",
    "RoutingConfig": "core.routing",
    "RoutingDecision": "core.routing",
    "decide_model": "core.routing",
    "select_model": "core.routing",
    "CostRecord": "core.tracking",
    "CostTracker": "core.tracking",
}

__all__ = [
    "BudgetExceededError",
    "CostGuard",
    "CostRecord",
    "CostTracker",
    "GuardConfig",
    "InMemoryLedger",
    "PipelineConfig",
    "PipelineResult",
    "PriceBook",
    "PriceOverride",
    "RetryPolicy",
    "RoutingConfig",
    "RoutingDecision",
    "UnknownModelPrice",
    "Usage",
    "acall_with_retry",
    "aprocess",
    "build_cached_messages",
    "call_with_retry",
    "cost_of_response",
    "decide_model",
    "input_token_bound",
    "is_transient",
    "process",
    "select_model",
    "worst_case_cost",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_costguard' has no attribute {name!r}")
    # Not cached in this module's globals: the module it comes from is the one in `sys.modules` now. A pytest
    # run inside a run (pytester) drops the modules its inner session imported; a cached class would then be
    # another than the one the re-imported guard raises, and `pytest.raises(BudgetExceededError)` would miss it.
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
