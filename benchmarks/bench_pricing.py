"""Pricing: one usage priced by `PriceBook().cost` after warm-up, against `genai_prices.calc_price` direct.

`PriceBook` resolves a model's rates through genai-prices once, then prices each usage with Decimal
arithmetic; the baseline asks genai-prices for every call, as a naive integration would. Both price the same
usage (input, output, cache writes and reads) for the same model, and the two results are checked equal, so
the faster path is not a wrong one. Per-call times are the median over several timed batches.

Run: python benchmarks/bench_pricing.py [--quick]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from decimal import Decimal

from _bench import figure, fmt_time, make_parser, median, time_alternating

from pytest_costguard.core.pricing import PriceBook, Usage, usage_from_response

MODEL = "claude-sonnet-4-6"
USAGE_JSON = {
    "input_tokens": 1200,
    "output_tokens": 350,
    "cache_creation_input_tokens": 2048,
    "cache_read_input_tokens": 4096,
    "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
    "service_tier": "standard",
}


def per_call(fn: Callable[[], object], calls: int) -> Callable[[], float]:
    """Return a callable timing `calls` calls of `fn`, returning seconds per call."""

    def run() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls

    return run


def main() -> int:
    args = make_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    quick: bool = args.quick
    import genai_prices

    usage = usage_from_response(USAGE_JSON)
    book = PriceBook()
    book.cost(usage, MODEL)  # the warm-up: resolves and caches the model's rates

    gp_usage = genai_prices.Usage(
        input_tokens=usage.total_input_tokens,  # genai-prices counts input tokens including cache tokens
        output_tokens=usage.output_tokens,
        cache_write_tokens=usage.cache_write_5m_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
    )

    def genai_direct() -> Decimal:
        price: Decimal = genai_prices.calc_price(gp_usage, model_ref=MODEL, provider_id="anthropic").total_price
        return price

    ours, theirs = book.cost(usage, MODEL), genai_direct()
    assert ours == theirs, f"PriceBook says {ours}, genai-prices says {theirs}"

    def from_response() -> Decimal:
        return book.cost(usage_from_response(USAGE_JSON), MODEL)

    def plain_usage() -> Decimal:
        return book.cost(Usage(input_tokens=100, output_tokens=20), MODEL)

    fast_calls, slow_calls = (2_000, 200) if quick else (50_000, 2_000)
    rounds = 3 if quick else 9
    times = time_alternating(
        {
            "pricebook": per_call(lambda: book.cost(usage, MODEL), fast_calls),
            "genai_prices": per_call(genai_direct, slow_calls),
            "plain": per_call(plain_usage, fast_calls),
            "from_response": per_call(from_response, fast_calls),
        },
        rounds,
    )
    ours_t, theirs_t = median(times["pricebook"]), median(times["genai_prices"])
    figure(
        "pricing.pricebook",
        f"PriceBook().cost (warm) {fmt_time(ours_t)}/usage vs genai_prices.calc_price {fmt_time(theirs_t)}/usage: "
        f"ratio {ours_t / theirs_t:.3f} ({theirs_t / ours_t:.0f}x faster; same Decimal result {ours})",
        met=ours_t <= 20e-6,
        target="<= 20 us",
        quick=quick,
    )
    figure(
        "pricing.variants",
        f"input+output only {fmt_time(median(times['plain']))} (ratio {median(times['plain']) / theirs_t:.3f}); "
        f"usage_from_response + cost {fmt_time(median(times['from_response']))} "
        f"(ratio {median(times['from_response']) / theirs_t:.3f}) vs the same genai-prices baseline (info)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
