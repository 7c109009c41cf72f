from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import anthropic
import httpx
import pytest
import respx

from pytest_costguard import BudgetExceededError, CostTracker, PipelineConfig, RetryPolicy, aprocess, process

LONG_PROMPT = "Policy: be kind and precise. " * 1000


def _reply(model: str, **usage: int) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "msg",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "triaged"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
        },
    )


@respx.mock
def test_process_routes_caches_prices_and_returns_a_new_tracker() -> None:
    route = respx.post("https://api.anthropic.com/v1/messages").mock(
        return_value=_reply("claude-haiku-4-5", cache_creation_input_tokens=7000)
    )
    config = PipelineConfig(system_prompt=LONG_PROMPT, max_tokens=100)
    tracker = CostTracker(budget_limit=Decimal("1"))
    result, after = process("short ticket", config, tracker, client=anthropic.Anthropic(api_key="k"))
    sent = route.calls.last.request
    import json

    body = json.loads(sent.content)
    assert body["model"] == "claude-haiku-4-5"  # short text: the cheap model
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert result.text == "triaged"
    # Haiku 4.5: 10 in at $1, 7000 written at $1.25, 5 out at $5 per MTok.
    assert result.record.cost_usd == Decimal("0.000010") + Decimal("0.00875") + Decimal("0.000025")
    assert tracker.count == 0 and after.count == 1 and after.total_cost == result.record.cost_usd


@respx.mock
def test_process_retries_transient_errors_only_and_counts_them() -> None:
    route = respx.post("https://api.anthropic.com/v1/messages").mock(
        side_effect=[
            httpx.Response(
                529, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
            ),
            _reply("claude-haiku-4-5"),
        ]
    )
    config = PipelineConfig(retry=RetryPolicy(base_delay=0, jitter=0))
    result, _ = process("t", config, CostTracker(), client=anthropic.Anthropic(api_key="k"))
    assert route.call_count == 2 and result.record.retries == 1

    route.side_effect = [
        httpx.Response(
            400, json={"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
        )
    ]
    with pytest.raises(anthropic.BadRequestError):
        process("t", config, CostTracker(), client=anthropic.Anthropic(api_key="k"))
    assert route.call_count == 3


@respx.mock
def test_process_refuses_before_sending_when_the_worst_case_does_not_fit() -> None:
    route = respx.post("https://api.anthropic.com/v1/messages").mock(return_value=_reply("claude-haiku-4-5"))
    tracker = CostTracker(budget_limit=Decimal("0.001"))
    with pytest.raises(BudgetExceededError):
        process("t", PipelineConfig(max_tokens=4000), tracker, client=anthropic.Anthropic(api_key="k"))
    assert not route.called


@respx.mock
def test_aprocess_works_with_the_async_client() -> None:
    respx.post("https://api.anthropic.com/v1/messages").mock(return_value=_reply("claude-sonnet-4-6"))
    import asyncio

    config = PipelineConfig(force_model="claude-sonnet-4-6")
    result, tracker = asyncio.run(
        aprocess("t", config, CostTracker(), client=anthropic.AsyncAnthropic(api_key="k"))
    )
    assert result.record.model == "claude-sonnet-4-6" and tracker.total_cost == Decimal("0.000105")


def test_importing_the_library_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, pytest_costguard\n"
        "from pytest_costguard import select_model, CostRecord, CostTracker, call_with_retry, "
        "BudgetExceededError, build_cached_messages, process\n"
        "print(sorted(m for m in ('pytest', 'anthropic', 'genai_prices', 'httpx2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
