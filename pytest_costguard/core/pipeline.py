"""The seed's composed pipeline: route, check the budget, call with retry and caching, price, track.

`process` is immutable in the seed's sense: it returns the new tracker beside the result and never changes
the one it was given. It works with `anthropic.Anthropic` (`process`) and `anthropic.AsyncAnthropic`
(`aprocess`); the SDK's own retries are turned off for the call so that only the narrow policy retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .budget import BudgetExceededError, worst_case_cost
from .caching import DEFAULT_MINIMUMS, CacheTTL, build_cached_messages
from .pricing import PriceBook, default_price_book, usage_from_response
from .retry import DEFAULT_RETRY, RetryPolicy, acall_with_retry, call_with_retry
from .routing import DEFAULT_ROUTING, RoutingConfig, decide_model
from .tracking import CostRecord, CostTracker

__all__ = ["PipelineConfig", "PipelineResult", "aprocess", "process"]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """What `process` needs besides the text: prompt, limits, routing, retry and prices."""

    system_prompt: str = "You are a helpful assistant."
    """Sent as the system prompt; cached when long enough for the routed model."""
    max_tokens: int = 1024
    """Output cap of each call (and the output term of its worst case)."""
    item_count: int = 1
    """How many items the text holds (complexity routing's second input)."""
    force_model: str | None = None
    """Skip routing and use this model."""
    routing: RoutingConfig = DEFAULT_ROUTING
    """Models and thresholds of complexity routing."""
    cache_ttl: CacheTTL | None = None
    """Cache TTL of the system prompt: None (5 minutes) or "1h"."""
    cache_minimums: Mapping[str, int] = DEFAULT_MINIMUMS
    """Minimum cacheable prompt length per model."""
    retry: RetryPolicy = DEFAULT_RETRY
    """Which failures are retried and how long to wait."""
    prices: PriceBook = field(default_factory=default_price_book)
    """Where prices come from."""
    tag: str | None = None
    """Attached to every record (e.g. a request id)."""


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """What one `process` call produced."""

    text: str
    """The reply's text blocks, joined."""
    message: Any
    """The SDK's `Message`."""
    record: CostRecord
    """What the call cost."""


def _prepare(text: str, config: PipelineConfig, tracker: CostTracker) -> tuple[dict[str, Any], str]:
    decision = decide_model(len(text), config.item_count, config.force_model, config=config.routing)
    request: dict[str, Any] = {
        "model": decision.model,
        "max_tokens": config.max_tokens,
        **build_cached_messages(
            config.system_prompt,
            text,
            model=decision.model,
            ttl=config.cache_ttl,
            minimums=config.cache_minimums,
        ),
    }
    worst = worst_case_cost(request, config.prices)
    limit = tracker.budget_limit
    if limit is not None and tracker.total_cost + worst > limit:
        raise BudgetExceededError(tracker.total_cost, limit, worst)
    return request, decision.model


def _finish(
    message: Any, model: str, retries: int, config: PipelineConfig, tracker: CostTracker
) -> tuple[PipelineResult, CostTracker]:
    usage = usage_from_response(message.usage.model_dump() if message.usage is not None else None)
    billed = message.model or model
    record = CostRecord(
        model=billed,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=config.prices.cost(usage, billed),
        requested_model=model,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        web_search_requests=usage.web_search_requests,
        tag=config.tag,
        retries=retries,
    )
    text = "".join(getattr(block, "text", "") for block in message.content)
    return PipelineResult(text, message, record), tracker.add(record)


def process(
    text: str, config: PipelineConfig, tracker: CostTracker, *, client: Any
) -> tuple[PipelineResult, CostTracker]:
    """Run one text through the pipeline with a sync `anthropic.Anthropic` client.

    Raises `BudgetExceededError` before anything is sent when the call's worst case does not fit the
    tracker's budget; non-transient API errors propagate at once.
    """
    request, model = _prepare(text, config, tracker)
    retries: list[int] = []
    once = client.with_options(max_retries=0)
    message = call_with_retry(
        lambda: once.messages.create(**request),
        policy=config.retry,
        on_retry=lambda attempt, exc, delay: retries.append(attempt),
    )
    return _finish(message, model, len(retries), config, tracker)


async def aprocess(
    text: str, config: PipelineConfig, tracker: CostTracker, *, client: Any
) -> tuple[PipelineResult, CostTracker]:
    """Run one text through the pipeline with an `anthropic.AsyncAnthropic` client."""
    request, model = _prepare(text, config, tracker)
    retries: list[int] = []
    once = client.with_options(max_retries=0)
    message = await acall_with_retry(
        lambda: once.messages.create(**request),
        policy=config.retry,
        on_retry=lambda attempt, exc, delay: retries.append(attempt),
    )
    return _finish(message, model, len(retries), config, tracker)
