"""The OpenAI worst-case bound and usage mapping, as plain functions (no SDK, no pytest adapter)."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from pytest_costguard.core.budget import (
    DEFAULT_RULES,
    UnboundedRequestError,
    bound_openai_request,
    with_openai_max_output,
)
from pytest_costguard.core.pricing import PriceBook
from pytest_costguard.core.routing import RoutePolicy
from pytest_costguard.domain.models import openai_size_tier, provider_of
from pytest_costguard.domain.records import usage_from_openai

RATES = PriceBook().rates("gpt-4.1-mini", provider="openai")
RULES = DEFAULT_RULES.openai


def _chat(*content: object, **extra: object) -> dict:
    return {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": list(content)}], **extra}


def test_text_is_bounded_by_its_bytes_and_the_output_by_the_limit_times_n() -> None:
    body = {
        "model": "gpt-4.1-mini",
        "max_completion_tokens": 100,
        "n": 3,
        "messages": [{"role": "user", "content": "héllo " * 50}],
    }
    bound = bound_openai_request(body, RATES, endpoint="chat", model="gpt-4.1-mini")
    assert bound.input_tokens >= len(("héllo " * 50).encode())
    assert bound.output_tokens == 300
    expected = (bound.input_tokens * RATES.input.base + 300 * RATES.output.base) / Decimal(1_000_000)
    assert bound.cost == expected


def test_an_image_counts_its_maximum_not_its_base64_and_gpt_4o_mini_more() -> None:
    data = "data:image/png;base64," + base64.b64encode(b"x" * 30_000).decode()
    body = _chat({"type": "image_url", "image_url": {"url": data}}, max_completion_tokens=10)
    small = bound_openai_request(body, RATES, endpoint="chat", model="gpt-4.1-mini")
    assert RULES.default_image_tokens <= small.input_tokens < RULES.default_image_tokens + 500
    mini = bound_openai_request(body, RATES, endpoint="chat", model="gpt-4o-mini-2024-07-18")
    assert mini.input_tokens >= 48_200


def test_files_by_id_and_earlier_turns_take_the_context_window() -> None:
    by_id = {
        "model": "gpt-4.1-mini",
        "max_output_tokens": 10,
        "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}],
    }
    assert bound_openai_request(by_id, RATES, endpoint="responses", model="gpt-4.1-mini").input_tokens == 1_047_576
    earlier = {"model": "gpt-4.1-mini", "max_output_tokens": 10, "input": "hi", "previous_response_id": "resp_1"}
    bound = bound_openai_request(earlier, RATES, endpoint="responses", model="gpt-4.1-mini")
    assert bound.input_tokens == 1_047_576 and any("previous_response_id" in n for n in bound.notes)


def test_a_built_in_tool_adds_the_window_uncapped_and_its_call_fees() -> None:
    body = {
        "model": "gpt-4.1-mini",
        "max_output_tokens": 10,
        "input": "hi",
        "max_tool_calls": 2,
        "tools": [{"type": "web_search"}],
    }
    bound = bound_openai_request(body, RATES, endpoint="responses", model="gpt-4.1-mini")
    assert bound.input_tokens > 1_047_576  # not capped: the model samples again after each search
    tokens = (bound.input_tokens * RATES.input.base + 10 * RATES.output.base) / Decimal(1_000_000)
    assert bound.cost == tokens + 2 * RULES.builtin_tool_fee


def test_no_output_limit_takes_the_model_maximum_or_is_unboundable_under_a_budget() -> None:
    body = {"model": "gpt-house", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(UnboundedRequestError, match="max_completion_tokens"):
        bound_openai_request(body, RATES, endpoint="chat", model="gpt-house")
    loose = bound_openai_request(body, RATES, endpoint="chat", model="gpt-house", strict=False)
    assert loose.output_tokens == RULES.default_max_output
    rules = with_openai_max_output(DEFAULT_RULES, [("gpt-house", 777), ("gpt-4.1", 5)])
    assert bound_openai_request(body, RATES, rules, endpoint="chat", model="gpt-house").output_tokens == 777
    known = {**body, "model": "gpt-4.1-mini-2025-04-14"}
    assert bound_openai_request(known, RATES, endpoint="chat", model="gpt-4.1-mini").output_tokens == 32_768
    assert bound_openai_request(known, RATES, rules, endpoint="chat", model="gpt-4.1-mini").output_tokens == 5


def test_audio_is_unboundable_under_a_budget() -> None:
    body = _chat({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, max_tokens=5)
    with pytest.raises(UnboundedRequestError, match="audio"):
        bound_openai_request(body, RATES, endpoint="chat", model="gpt-4.1-mini")
    assert bound_openai_request(body, RATES, endpoint="chat", model="gpt-4.1-mini", strict=False).output_tokens == 5


def test_usage_treats_cached_tokens_as_part_of_the_input_and_reasoning_as_part_of_the_output() -> None:
    chat = usage_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
        service_tier="flex",
    )
    assert (chat.input_tokens, chat.cache_read_input_tokens, chat.output_tokens) == (36, 64, 40)
    assert (chat.total_input_tokens, chat.service_tier, chat.provider) == (100, "flex", "openai")
    responses = usage_from_openai(
        {"input_tokens": 100, "output_tokens": 40, "input_tokens_details": {"cached_tokens": 64}},
        service_tier="default",
    )
    assert (responses.input_tokens, responses.cache_read_input_tokens, responses.service_tier) == (36, 64, "")


def test_model_names_tell_their_provider_and_size() -> None:
    assert [provider_of(m) for m in ("gpt-4o", "o4-mini", "claude-haiku-4-5", "us.anthropic.claude-x", "house")] == [
        "openai",
        "openai",
        "anthropic",
        "anthropic",
        None,
    ]
    assert [openai_size_tier(m) for m in ("gpt-4.1-nano", "gpt-4o-mini", "gpt-5", "claude-haiku-4-5")] == [
        0,
        1,
        2,
        None,
    ]


def test_a_policy_routes_each_provider_to_its_own_cheap_model() -> None:
    policy = RoutePolicy(mode="cheap")
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert policy.route("gpt-4o", body, provider="openai", endpoint="chat").model == "gpt-4.1-nano"
    assert policy.route("claude-sonnet-4-6", body).model == "claude-haiku-4-5"
    pinned = policy.route("gpt-4o", body, pinned="claude-haiku-4-5", provider="openai", endpoint="chat")
    assert pinned.model == "gpt-4o"
