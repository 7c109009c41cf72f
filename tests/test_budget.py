from __future__ import annotations

import json
import pickle
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_costguard import BudgetExceededError, PriceBook, worst_case_cost
from pytest_costguard.core.budget import input_token_bound
from pytest_costguard.core.pricing import Usage

MODELS = ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-5-5"]


@st.composite
def request_and_response(draw):
    texts = draw(st.lists(st.text(min_size=0, max_size=400), min_size=1, max_size=4))
    system = draw(st.one_of(st.none(), st.text(max_size=3000)))
    cached = draw(st.sampled_from([None, "5m", "1h"]))
    request: dict = {
        "model": draw(st.sampled_from(MODELS)),
        "max_tokens": draw(st.integers(1, 64_000)),
        "messages": [{"role": "user", "content": t} for t in texts],
    }
    if system is not None:
        block: dict = {"type": "text", "text": system}
        if cached:
            block["cache_control"] = {"type": "ephemeral", **({"ttl": "1h"} if cached == "1h" else {})}
        request["system"] = [block]
    # Any response the API could bill: total input tokens at most the UTF-8 bytes of the text, split
    # arbitrarily between uncached, written (only with a breakpoint) and read; output at most max_tokens.
    text_bytes = sum(len(t.encode()) for t in texts) + len((system or "").encode())
    total_in = draw(st.integers(0, text_bytes))
    read = draw(st.integers(0, total_in)) if cached else 0
    written = draw(st.integers(0, total_in - read)) if cached else 0
    usage = Usage(
        input_tokens=total_in - read - written,
        output_tokens=draw(st.integers(0, request["max_tokens"])),
        cache_write_5m_tokens=written if cached == "5m" else 0,
        cache_write_1h_tokens=written if cached == "1h" else 0,
        cache_read_input_tokens=read,
    )
    return request, usage


@settings(max_examples=300, deadline=None)
@given(request_and_response())
def test_the_worst_case_is_never_below_any_response_the_request_could_produce(pair) -> None:
    request, usage = pair
    book = PriceBook()
    assert worst_case_cost(request, book) >= book.cost(usage, request["model"])


def test_the_input_bound_is_the_utf8_size_of_the_billed_json() -> None:
    request = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "héllo"}]}
    billed = json.dumps({"messages": request["messages"]}, ensure_ascii=False, separators=(",", ":"))
    assert input_token_bound(request) == len(billed.encode())


def test_the_worst_case_is_max_tokens_at_output_prices_plus_input_bytes() -> None:
    request = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "x"}],
    }
    bound = input_token_bound(request)
    assert worst_case_cost(request) == (Decimal(bound) * 3 + 1000 * 15) / 1_000_000


def test_remote_images_tools_and_web_search_raise_the_bound() -> None:
    base = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    image = {
        **base,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}],
            }
        ],
    }
    search = {**base, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}
    # A remote image is bounded by the documented per-image maximum, ~1,600 tokens (it was a flat 10,000).
    assert input_token_bound(image) > input_token_bound(base) + 1_500
    assert worst_case_cost(search) > worst_case_cost(base) + Decimal("0.02")


def test_a_refusal_explains_itself_and_survives_pickling() -> None:
    exc = BudgetExceededError(Decimal("1.90"), Decimal("2.00"), Decimal("0.25"), reserved=Decimal("0.05"))
    message = str(exc)
    assert "could cost up to $0.25" in message and "$2.00 budget" in message and "$0.05" in message
    assert "not sent" in message
    again = pickle.loads(pickle.dumps(exc))
    assert (again.spent, again.limit, again.requested, str(again)) == (
        exc.spent,
        exc.limit,
        exc.requested,
        message,
    )


def test_the_seeds_two_argument_form_still_works() -> None:
    assert "spent $1.50 of $1.00" in str(BudgetExceededError(1.5, 1.0))


def test_a_request_without_a_model_cannot_be_bounded() -> None:
    with pytest.raises(ValueError, match="names no model"):
        worst_case_cost({"max_tokens": 1, "messages": []})
