"""pytest-costguard: keep what code spends on LLM APIs under a hard budget.

The names of the seed design import from here. They are loaded on first use, so `import pytest_costguard`
costs nothing and pulls in neither pytest, anthropic nor genai-prices.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .budget import BudgetExceededError, input_token_bound, worst_case_cost
    from .caching import build_cached_messages
    from .guard import CostGuard, GuardConfig
    from .ledger import InMemoryLedger
    from .pipeline import PipelineConfig, PipelineResult, aprocess, process
    from .pricing import PriceBook, PriceOverride, UnknownModelPrice, Usage, cost_of_response
    from .retry import RetryPolicy, acall_with_retry, call_with_retry, is_transient
    from .routing import RoutingConfig, RoutingDecision, decide_model, select_model
    from .tracking import CostRecord, CostTracker

_EXPORTS = {
    "BudgetExceededError": "budget",
    "input_token_bound": "budget",
    "worst_case_cost": "budget",
    "build_cached_messages": "caching",
    "CostGuard": "guard",
    "GuardConfig": "guard",
    "InMemoryLedger": "ledger",
    "PipelineConfig": "pipeline",
    "PipelineResult": "pipeline",
    "aprocess": "pipeline",
    "process": "pipeline",
    "PriceBook": "pricing",
    "PriceOverride": "pricing",
    "UnknownModelPrice": "pricing",
    "Usage": "pricing",
    "cost_of_response": "pricing",
    "RetryPolicy": "retry",
    "acall_with_retry": "retry",
    "call_with_retry": "retry",
    "is_transient": "retry",
    "RoutingConfig": "routing",
    "RoutingDecision": "routing",
    "decide_model": "routing",
    "select_model": "routing",
    "CostRecord": "tracking",
    "CostTracker": "tracking",
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
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
