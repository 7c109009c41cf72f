"""The seed's composed pipeline: route, reserve the worst case, call with retry and caching, settle, track.

`process` is immutable in the seed's sense: it returns the new tracker beside the result and never changes
the one it was given. Its budget is the guard's: the call's worst case is reserved before it is sent (by a
`CostGuard` over the tracker's remaining budget, or by the guard passed in), and its record is the guard's
own, priced by the same price book. Under the pytest plugin the session's guard meters it once.
It works with `anthropic.Anthropic` and `openai.OpenAI` (`process`), `anthropic.AsyncAnthropic` and
`openai.AsyncOpenAI` (`aprocess`); the SDK's own retries are turned off for the call so that only the narrow
policy retries. An OpenAI client is sent a Chat Completions request, routed between
`routing.cheap_openai_model` and `routing.strong_openai_model`; OpenAI caches long prompts by itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..domain.records import CostRecord
from .caching import DEFAULT_MINIMUMS, CacheTTL, build_cached_messages
from .pricing import PriceBook, default_price_book
from .retry import DEFAULT_RETRY, RetryPolicy, acall_with_retry, call_with_retry
from .routing import DEFAULT_ROUTING, RoutingConfig, decide_model
from .tracking import CostTracker

if TYPE_CHECKING:
    from ..metering.guard import CostGuard

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


def _is_openai(client: Any) -> bool:
    return type(client).__module__.split(".", 1)[0] == "openai"


def _request(text: str, config: PipelineConfig, *, openai: bool = False) -> dict[str, Any]:
    routing = config.routing
    if openai:
        routing = replace(routing, cheap_model=routing.cheap_openai_model, strong_model=routing.strong_openai_model)
    model = decide_model(len(text), config.item_count, config.force_model, config=routing).model
    if openai:
        return {
            "model": model,
            "max_completion_tokens": config.max_tokens,
            "messages": [{"role": "system", "content": config.system_prompt}, {"role": "user", "content": text}],
        }
    return {
        "model": model,
        "max_tokens": config.max_tokens,
        **build_cached_messages(
            config.system_prompt, text, model=model, ttl=config.cache_ttl, minimums=config.cache_minimums
        ),
    }


def _metered(
    client: Any, config: PipelineConfig, tracker: CostTracker, guard: CostGuard | None
) -> tuple[Any, CostGuard]:
    """The client to call through (one attempt per call) and the guard metering it: `guard`, which already
    meters the client (the pytest session's), or a new guard over the tracker's budget."""
    once = client.with_options(max_retries=0)
    if guard is not None:
        return once, guard
    from ..metering.guard import CostGuard, GuardConfig
    from ..metering.ledger import InMemoryLedger

    ledger = InMemoryLedger(limit=tracker.budget_limit, scope="pipeline", spent_before=tracker.total_cost)
    own = CostGuard(GuardConfig(prices=config.prices), ledger)
    if _is_openai(client):
        return once, own  # metered by `_metering`: the OpenAI SDK has no middleware to carry the guard
    from ..providers.anthropic.middleware import middleware_for

    return once.with_middleware(middleware_for(own)), own


@contextlib.contextmanager
def _metering(client: Any, guard: CostGuard) -> Iterator[None]:
    """Meter an OpenAI client's calls in this context through `guard` (an Anthropic client carries it already)."""
    if not _is_openai(client):
        yield
        return
    from ..providers.openai.patch import metered_by

    with metered_by(guard):
        yield


def _reply_text(message: Any) -> str:
    choices = getattr(message, "choices", None)
    if choices is not None:  # an OpenAI ChatCompletion
        return "".join(choice.message.content or "" for choice in choices[:1])
    return "".join(getattr(block, "text", "") for block in message.content)


def _finish(
    message: Any, records: list[CostRecord], retries: int, config: PipelineConfig, tracker: CostTracker
) -> tuple[PipelineResult, CostTracker]:
    tag = config.tag if config.tag is not None else records[-1].tag
    records = [*records[:-1], replace(records[-1], retries=retries)]
    records = [replace(record, tag=tag) for record in records]
    for record in records:  # an attempt that timed out after sending is charged too, before the one that answered
        tracker = tracker.add(record)
    return PipelineResult(_reply_text(message), message, records[-1]), tracker


def process(
    text: str, config: PipelineConfig, tracker: CostTracker, *, client: Any, guard: CostGuard | None = None
) -> tuple[PipelineResult, CostTracker]:
    """Run one text through the pipeline with a sync `anthropic.Anthropic` or `openai.OpenAI` client.

    Raises `BudgetExceededError` before anything is sent when the call's worst case does not fit the
    tracker's budget (or `guard`'s); non-transient API errors propagate at once.
    """
    from ..metering.scope import collecting

    openai = _is_openai(client)
    request = _request(text, config, openai=openai)
    metered, guard = _metered(client, config, tracker, guard)
    create = metered.chat.completions.create if openai else metered.messages.create
    retries: list[int] = []
    with collecting(guard) as records, _metering(client, guard):
        message = call_with_retry(
            lambda: create(**request),
            policy=config.retry,
            on_retry=lambda attempt, exc, delay: retries.append(attempt),
        )
    return _finish(message, records, len(retries), config, tracker)


async def aprocess(
    text: str, config: PipelineConfig, tracker: CostTracker, *, client: Any, guard: CostGuard | None = None
) -> tuple[PipelineResult, CostTracker]:
    """Run one text through the pipeline with an `anthropic.AsyncAnthropic` or `openai.AsyncOpenAI` client."""
    from ..metering.scope import collecting

    openai = _is_openai(client)
    request = _request(text, config, openai=openai)
    metered, guard = _metered(client, config, tracker, guard)
    create = metered.chat.completions.create if openai else metered.messages.create
    retries: list[int] = []
    with collecting(guard) as records, _metering(client, guard):
        message = await acall_with_retry(
            lambda: create(**request),
            policy=config.retry,
            on_retry=lambda attempt, exc, delay: retries.append(attempt),
        )
    return _finish(message, records, len(retries), config, tracker)
