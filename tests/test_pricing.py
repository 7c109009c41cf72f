from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_costguard.core.pricing import (
    PriceBook,
    PriceOverride,
    UnknownModelPrice,
    Usage,
    cost_of_response,
    usage_from_response,
)

MODELS = [
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
]
counts = st.integers(min_value=0, max_value=300_000)


def _body(model: str, inp: int, out: int, w5: int, w1: int, read: int, searches: int) -> dict:
    return {
        "model": model,
        "usage": {
            "input_tokens": inp,
            "output_tokens": out,
            "cache_creation_input_tokens": w5 + w1,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
            "server_tool_use": {"web_search_requests": searches},
        },
    }


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(MODELS), counts, counts, counts, counts, counts, st.integers(0, 20))
def test_the_cost_equals_genai_prices_for_any_usage(model, inp, out, w5, w1, read, searches) -> None:
    body = _body(model, inp, out, w5, w1, read, searches)
    extracted = genai_prices.extract_usage(body, provider_id="anthropic")
    expected = genai_prices.calc_price(extracted.usage, model_ref=model, provider_id="anthropic").total_price
    assert cost_of_response(body, prices=PriceBook()) == expected


def test_a_real_response_with_every_cache_field_matches_hand_calculation() -> None:
    body = _body("claude-sonnet-4-6", 100, 500, 2000, 1000, 5000, 2)
    # Sonnet 4.6: $3 in, $3.75 5m write, $6 1h write, $0.30 read, $15 out per MTok; $10 per 1k searches.
    hand = (
        Decimal("100") * 3 + 2000 * Decimal("3.75") + 1000 * 6 + 5000 * Decimal("0.3") + 500 * 15
    ) / 1_000_000 + Decimal("0.02")
    assert cost_of_response(body) == hand == Decimal("0.0428")


def test_the_batch_tier_is_half_price() -> None:
    book = PriceBook()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    batch = Usage(input_tokens=1_000_000, output_tokens=1_000_000, batch=True)
    assert book.cost(usage, "claude-haiku-4-5") == Decimal(6)
    assert book.cost(batch, "claude-haiku-4-5") == Decimal(3)
    assert usage_from_response({"input_tokens": 1, "service_tier": "batch"}).batch is True


def test_long_context_tiers_reprice_the_whole_request() -> None:
    book = PriceBook()
    small = book.cost(Usage(input_tokens=100_000, output_tokens=1000), "claude-haiku-5-5")
    large = book.cost(Usage(input_tokens=100_001, output_tokens=1000), "claude-haiku-5-5")
    assert small == (Decimal(100_000) * Decimal("0.1") + 1000 * Decimal("0.5")) / 1_000_000
    assert large == (Decimal(100_001) * Decimal("0.5") + 1000 * Decimal("2.5")) / 1_000_000


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(MODELS), counts, counts, counts, counts, counts, st.integers(0, 5))
def test_cost_is_the_sum_of_its_parts_and_monotonic(model, inp, out, w5, w1, read, searches) -> None:
    book = PriceBook()
    rates = book.rates(model)
    usage = Usage(inp, out, w5, w1, read, searches)
    total_in = usage.total_input_tokens
    parts = (
        inp * rates.input.at(total_in)
        + out * rates.output.at(total_in)
        + w5 * rates.cache_write_5m.at(total_in)
        + w1 * rates.cache_write_1h.at(total_in)
        + read * rates.cache_read.at(total_in)
    ) / 1_000_000 + searches * rates.web_search_per_1k / 1000
    assert book.cost(usage, model) == parts
    for field in ("output_tokens", "web_search_requests"):
        bigger = Usage(
            **{**{f: getattr(usage, f) for f in Usage.__slots__}, field: getattr(usage, field) + 1}
        )
        assert book.cost(bigger, model) > book.cost(usage, model)


def test_an_unknown_model_raises_a_clear_error_naming_it() -> None:
    with pytest.raises(UnknownModelPrice, match="claude-mythos-5"):
        PriceBook().cost(Usage(1, 1), "claude-mythos-5")


def test_a_user_price_overrides_and_covers_unknown_models() -> None:
    book = PriceBook(overrides={"claude-mythos-5": PriceOverride(input=Decimal(20), output=Decimal(100))})
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_write_5m_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
    )
    # Defaults: writes at 1.25x input, reads at 0.1x.
    assert book.cost(usage, "claude-mythos-5-20261101") == Decimal(20 + 100 + 25 + 2)


def test_price_lookups_are_cached_per_model() -> None:
    book = PriceBook()
    assert book.rates("claude-opus-4-7") is book.rates("claude-opus-4-7")


def test_older_responses_without_the_ttl_split_count_writes_as_five_minute() -> None:
    usage = usage_from_response({"input_tokens": 1, "cache_creation_input_tokens": 500})
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (500, 0)


def test_pricing_goes_by_the_response_model_not_the_alias() -> None:
    body = _body("claude-haiku-4-5-20251001", 1_000_000, 0, 0, 0, 0, 0)
    assert cost_of_response(body) == Decimal(1)


def test_us_only_inference_costs_1_1x_the_token_prices_of_a_4_6_or_newer_model() -> None:
    body = _body("claude-opus-4-7", 1000, 100, 500, 0, 2000, 1)
    body["usage"]["inference_geo"] = "us"
    # Opus 4.7: $5 in, $6.25 5m write, $0.50 read, $25 out per MTok, times 1.1; the search fee ($10 per 1k) is
    # per search, not per token, and is not multiplied.
    tokens = (Decimal(1000) * 5 + 500 * Decimal("6.25") + 2000 * Decimal("0.5") + 100 * 25) / 1_000_000
    assert tokens == Decimal("0.011625")
    assert cost_of_response(body) == tokens * Decimal("1.1") + Decimal("0.01") == Decimal("0.0227875")
    body["usage"]["inference_geo"] = "global"
    assert cost_of_response(body) == tokens + Decimal("0.01")


@pytest.mark.parametrize(
    ("model", "multiplied"),
    [
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-sonnet-5-5", True),
        ("us.anthropic.claude-opus-4-7-20260101-v1:0", True),
        ("claude-opus-4-5", False),
        ("claude-haiku-4-5-20251001", False),
    ],
)
def test_the_us_only_multiplier_applies_from_claude_4_6_on(model: str, multiplied: bool) -> None:
    from pytest_costguard.core.pricing import us_only_multiplier

    book = PriceBook(overrides={model: PriceOverride(Decimal(1), Decimal(2))})
    plain = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    us = Usage(input_tokens=1_000_000, output_tokens=1_000_000, us_only=True)
    assert book.cost(plain, model) == Decimal(3)
    assert book.cost(us, model) == (Decimal("3.3") if multiplied else Decimal(3))
    assert us_only_multiplier(model) == (Decimal("1.1") if multiplied else 1)


def test_settlement_charges_what_a_us_only_response_reports() -> None:
    from pytest_costguard.metering.guard import CostGuard

    guard = CostGuard()
    request = {"model": "claude-sonnet-4-6", "max_tokens": 100, "inference_geo": "us",
               "messages": [{"role": "user", "content": "x" * 2000}]}
    ticket, _ = guard.begin(request, streamed=False)
    record = guard.settle(ticket, usage_from_response({"input_tokens": 1000, "output_tokens": 100,
                                                       "inference_geo": "us"}))
    # Sonnet 4.6 at $3/$15: (3000 + 1500) / 1e6 = $0.0045, times 1.1.
    assert record.cost_usd == Decimal("0.00495")
    assert record.cost_usd <= (record.reserved_usd or 0)
