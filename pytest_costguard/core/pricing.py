"""Price Anthropic Messages and OpenAI usage in exact Decimal dollars.

Prices come from genai-prices (or from the user's overrides); this module resolves a model's rates once and
then prices each usage with plain Decimal arithmetic, which keeps the per-call cost to a few microseconds.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..domain.models import canonical_model, lookup_model, provider_of
from ..domain.records import Usage, usage_from_response

__all__ = [
    "US_ONLY_MULTIPLIER",
    "PriceBook",
    "PriceOverride",
    "Rate",
    "Rates",
    "UnknownModelPrice",
    "Usage",
    "cost_of_response",
    "default_price_book",
    "us_only_multiplier",
    "usage_from_response",
]

_MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)
US_ONLY_MULTIPLIER = Decimal("1.1")
"""US-only inference (`usage.inference_geo == "us"`) costs 1.1x every token price on Claude 4.6 and newer models
(Anthropic's pricing docs, "Data residency pricing"; /work/shared/reference/anthropic-api-facts.md, "Usage and
what is billed"). genai-prices does not model it, so this layer applies it."""
_US_ONLY_SINCE = (4, 6)
_VERSION = re.compile(r"^claude-[a-z]+-(\d+)(?:-(\d{1,2}))?(?:-|$)")


def us_only_multiplier(model: str) -> Decimal:
    """The multiplier US-only inference puts on `model`'s token prices: 1.1 from Claude 4.6 on, else 1.

    A model id whose version cannot be read (a custom name in `llm_prices`) takes 1.1: a meter for a budget
    errs on the dear side.
    """
    found = _VERSION.match(canonical_model(model))
    if found is None:
        return US_ONLY_MULTIPLIER
    version = (int(found.group(1)), int(found.group(2) or 0))
    return US_ONLY_MULTIPLIER if version >= _US_ONLY_SINCE else Decimal(1)


class UnknownModelPrice(LookupError):
    """No price is known for a model: genai-prices lacks it and no override was configured."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price known for model {model!r}: genai-prices does not list it; "
            f"configure one (llm_prices in pytest.ini, or PriceBook(overrides={{{model!r}: PriceOverride(...)}}))"
        )


@dataclass(frozen=True, slots=True)
class Rate:
    """A USD-per-million-token price, optionally tiered on the request's total input tokens."""

    base: Decimal
    """Price until the first tier."""
    tiers: tuple[tuple[int, Decimal], ...] = ()
    """(start, price) pairs, ascending: above `start` total input tokens the whole count pays `price`."""

    def at(self, total_input_tokens: int) -> Decimal:
        """Return the price per MTok that applies for a request with this many input tokens."""
        if self.tiers:
            for start, price in reversed(self.tiers):
                if total_input_tokens > start:
                    return price
        return self.base


@dataclass(frozen=True, slots=True)
class Rates:
    """What one model costs, per million tokens (web searches per thousand)."""

    model: str
    """The canonical model id these rates belong to."""
    input: Rate
    """Uncached input."""
    output: Rate
    """Output."""
    cache_write_5m: Rate
    """5-minute cache writes."""
    cache_write_1h: Rate
    """1-hour cache writes."""
    cache_read: Rate
    """Cache reads."""
    web_search_per_1k: Decimal = Decimal(10)
    """Server-side web searches, per thousand requests."""

    def cost(self, usage: Usage) -> Decimal:
        """Return the exact USD cost of `usage` at these rates."""
        total_in = usage.input_tokens + usage.cache_read_input_tokens
        total_in += usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
        # Terms without tokens are skipped: most calls have no cache traffic.
        cost = usage.input_tokens * self.input.at(total_in) + usage.output_tokens * self.output.at(total_in)
        if usage.cache_write_5m_tokens:
            cost += usage.cache_write_5m_tokens * self.cache_write_5m.at(total_in)
        if usage.cache_write_1h_tokens:
            cost += usage.cache_write_1h_tokens * self.cache_write_1h.at(total_in)
        if usage.cache_read_input_tokens:
            cost += usage.cache_read_input_tokens * self.cache_read.at(total_in)
        cost /= _MTOK
        if usage.us_only:
            cost *= us_only_multiplier(self.model)  # on token prices; search fees are per search, not per token
        if usage.web_search_requests:
            cost += usage.web_search_requests * self.web_search_per_1k / 1000
        return cost


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """A user-configured price for a model, USD per million tokens.

    Cache prices default to Anthropic's multipliers of the input price: 1.25x for 5-minute writes,
    2x for 1-hour writes, 0.1x for reads.
    """

    input: Decimal
    """Uncached input, per MTok."""
    output: Decimal
    """Output, per MTok."""
    cache_write: Decimal | None = None
    """5-minute cache writes, per MTok (default 1.25 x input)."""
    cache_write_1h: Decimal | None = None
    """1-hour cache writes, per MTok (default 2 x input)."""
    cache_read: Decimal | None = None
    """Cache reads, per MTok (default 0.1 x input)."""
    web_search_per_1k: Decimal = Decimal(10)
    """Web searches, per thousand."""

    def rates(self, model: str) -> Rates:
        """Return these prices as `Rates` for `model`."""

        def pick(value: Decimal | None, factor: str) -> Rate:
            return Rate(value if value is not None else self.input * Decimal(factor))

        return Rates(
            model=model,
            input=Rate(self.input),
            output=Rate(self.output),
            cache_write_5m=pick(self.cache_write, "1.25"),
            cache_write_1h=pick(self.cache_write_1h, "2"),
            cache_read=pick(self.cache_read, "0.1"),
            web_search_per_1k=self.web_search_per_1k,
        )


def _rate(value: Any) -> Rate:
    """Convert a genai-prices price (a Decimal, a TieredPrices or None) to a `Rate`."""
    if value is None:
        return Rate(_ZERO)
    if isinstance(value, Decimal):
        return Rate(value)
    return Rate(value.base, tuple((int(t.start), t.price) for t in value.tiers))


def _rates_from_genai_prices(
    model: str, *, batch: bool, fast: bool, provider: str = "anthropic", tier: str = ""
) -> Rates:
    import genai_prices  # heavy: imported only when a price is first needed

    context: dict[str, str] = {}
    if batch:
        context["processing"] = "batch"
    if fast:
        context["speed"] = "fast"
    if tier:
        # genai-prices prices OpenAI's flex and priority tiers through this context (as of 0.2.3, with the
        # standard price where a model has no such tier).
        context["service_tier"] = tier
    calc = None
    for name in dict.fromkeys((model, canonical_model(model))):
        try:
            calc = genai_prices.calc_price(
                genai_prices.Usage(input_tokens=0, output_tokens=0),
                model_ref=name,
                provider_id=provider,
                price_context=context or None,
            )
            break
        except LookupError:
            continue
    if calc is None:
        raise UnknownModelPrice(model)
    price = calc.model_price
    input_rate = _rate(getattr(price, "input_mtok", None))
    write_5m = getattr(price, "cache_write_mtok", None)
    write_1h = getattr(price, "cache_write_1h_mtok", None)
    searches = getattr(price, "web_searches_kcount", None)
    return Rates(
        model=calc.model.id,
        input=input_rate,
        output=_rate(getattr(price, "output_mtok", None)),
        cache_write_5m=_rate(write_5m) if write_5m is not None else input_rate,
        cache_write_1h=_rate(write_1h if write_1h is not None else write_5m) if write_5m or write_1h else input_rate,
        cache_read=_rate(getattr(price, "cache_read_mtok", None)) if hasattr(price, "cache_read_mtok") else input_rate,
        web_search_per_1k=searches if isinstance(searches, Decimal) else Decimal(10),
    )


@dataclass(eq=False)
class PriceBook:
    """Resolve models to `Rates`: the user's overrides first, then genai-prices; cached per model and tier.

    Overrides are found by model id (`domain.models.lookup_model`): `claude-x` covers `claude-x-20260101`, its
    Vertex and Bedrock names. genai-prices is asked for the name as given, then for its model id.
    """

    overrides: Mapping[str, PriceOverride] = field(default_factory=dict)
    """Per-model prices that win over genai-prices."""
    _cache: dict[tuple[str, bool, bool, str, str], Rates] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled for the session's child processes (metering.children): the overrides, not the cache or lock.
        return (PriceBook, (dict(self.overrides),))

    def rates(
        self, model: str, *, batch: bool = False, fast: bool = False, provider: str = "anthropic", tier: str = ""
    ) -> Rates:
        """Return the rates for `model` (at `provider`'s prices, OpenAI's `tier`); raise `UnknownModelPrice`."""
        key = (model, batch, fast, provider, tier)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        override = lookup_model(self.overrides, model)
        if override is not None:
            rates = override.rates(model)
            if batch or tier == "flex":
                rates = _halve(rates)  # OpenAI's flex tier is priced at its batch rates
            elif tier == "priority":
                rates = _scale(rates, Decimal(2))  # the dearest priority markup OpenAI lists (GPT-5: 2x)
        else:
            found = _rates_from_genai_prices(model, batch=batch, fast=fast, provider=provider, tier=tier)
            if batch and found == _rates_from_genai_prices(model, batch=False, fast=fast, provider=provider, tier=tier):
                # genai-prices has no batch variant for this model (yet): batch is 50% off everything.
                found = _halve(found)
            rates = found
        with self._lock:
            self._cache[key] = rates
        return rates

    def knows(self, model: str, *, provider: str | None = None) -> bool:
        """Return whether a price is known for `model` (at `provider`'s prices, by default its name's)."""
        try:
            self.rates(model, provider=provider or provider_of(model) or "anthropic")
        except UnknownModelPrice:
            return False
        return True

    def cost(self, usage: Usage, model: str) -> Decimal:
        """Return the USD cost of `usage` billed to `model`."""
        rates = self.rates(model, batch=usage.batch, fast=usage.fast, provider=usage.provider, tier=usage.service_tier)
        return rates.cost(usage)


def _halve(rates: Rates) -> Rates:
    return _scale(rates, Decimal("0.5"))


def _scale(rates: Rates, factor: Decimal) -> Rates:
    def h(rate: Rate) -> Rate:
        return Rate(rate.base * factor, tuple((start, price * factor) for start, price in rate.tiers))

    return Rates(
        model=rates.model,
        input=h(rates.input),
        output=h(rates.output),
        cache_write_5m=h(rates.cache_write_5m),
        cache_write_1h=h(rates.cache_write_1h),
        cache_read=h(rates.cache_read),
        web_search_per_1k=rates.web_search_per_1k,
    )


_default_book: PriceBook | None = None


def default_price_book() -> PriceBook:
    """Return the process-wide price book with no overrides."""
    global _default_book
    if _default_book is None:
        _default_book = PriceBook()
    return _default_book


def cost_of_response(response: Any, *, prices: PriceBook | None = None) -> Decimal:
    """Return the USD cost of a Messages response (an SDK `Message` or its JSON dict).

    Priced by the model the response names, not the alias that was requested.
    """
    if hasattr(response, "model_dump"):
        response = response.model_dump()
    model = response.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("the response names no model: cannot price it")
    return (prices or default_price_book()).cost(usage_from_response(response.get("usage")), model)
