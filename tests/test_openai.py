"""The OpenAI SDK under the budget: inner pytest runs drive the real `openai` client against a respx-mocked API.

Each expected cost is computed here by hand from the usage the mock reports and genai-prices' rates, in
OpenAI's terms: `cached_tokens` are part of `prompt_tokens` (priced at the cache-read rate, the rest at the
input rate), reasoning tokens are part of `completion_tokens` (never added again).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_costguard.core.pricing import PriceBook

OPENAIAPI_SOURCE = (Path(__file__).parent / "openaiapi.py").read_text(encoding="utf-8")
MTOK = Decimal(1_000_000)
PRICES = PriceBook()


@pytest.fixture
def oa(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio -p no:respx", prepend=" ")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    pytester.makepyfile(openaiapi=OPENAIAPI_SOURCE)
    # respx patches `httpx`; the SDK is on httpx2: alias it before anything imports httpx, as our root conftest does.
    pytester.makeconftest("import httpx2\n\nhttpx2.alias_httpx()\n")
    pytester.syspathinsert()
    # Each inner run in its own process: after other in-process runs in one outer process, an in-process run
    # found the OpenAI SDK unpatched (pytester's module snapshots and the patch's per-process state); a real
    # session imports openai once. Seen only in this suite's own ordering; see the issue-15 note.
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    return pytester


def _report(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "r.json").read_text())


def _sent(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / "sent.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _cost(model: str, uncached: int, cached: int, output: int, tier: str = "", batch: bool = False) -> Decimal:
    rates = PRICES.rates(model, provider="openai", tier=tier, batch=batch)
    return (uncached * rates.input.base + cached * rates.cache_read.base + output * rates.output.base) / MTOK


CHAT_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 500,
    "total_tokens": 2500,
    "prompt_tokens_details": {"cached_tokens": 1200},
    "completion_tokens_details": {"reasoning_tokens": 300},
}


def test_a_chat_completion_is_billed_with_cached_tokens_inside_the_prompt_and_reasoning_inside_the_output(
    oa: pytest.Pytester,
) -> None:
    oa.makepyfile(
        test_app=f"""
import openai
from openaiapi import OpenAIAPI

def test_chat():
    with OpenAIAPI({CHAT_USAGE!r}):
        reply = openai.OpenAI().chat.completions.create(
            model="gpt-5-mini", max_completion_tokens=1000, messages=[{{"role": "user", "content": "hi"}}])
    assert reply.choices[0].message.content == "hello there"
"""
    )
    result = oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    assert call["provider"] == "openai"
    assert (call["model"], call["input_tokens"], call["cache_read_input_tokens"], call["output_tokens"]) == (
        "gpt-5-mini",
        800,
        1200,
        500,
    )
    assert Decimal(str(call["cost_usd"])) == _cost("gpt-5-mini", 800, 1200, 500)
    assert not call["estimated"]


@pytest.mark.parametrize("tier", ["flex", "priority"])
def test_the_service_tier_the_response_names_sets_the_price(oa: pytest.Pytester, tier: str) -> None:
    oa.makepyfile(
        test_app=f"""
import openai
from openaiapi import OpenAIAPI

def test_chat():
    with OpenAIAPI({CHAT_USAGE!r}, service_tier={tier!r}):
        openai.OpenAI().chat.completions.create(model="gpt-5-mini", max_completion_tokens=1000,
            service_tier={tier!r}, messages=[{{"role": "user", "content": "hi"}}])
"""
    )
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    expected = _cost("gpt-5-mini", 800, 1200, 500, tier=tier)
    assert expected != _cost("gpt-5-mini", 800, 1200, 500)  # the tier does change the price
    assert Decimal(str(call["cost_usd"])) == expected


STREAM_SUITE = """
import openai
from openaiapi import OpenAIAPI

USAGE = {usage!r}

def test_stream():
    with OpenAIAPI(USAGE, text="x" * 40):
        stream = openai.OpenAI().chat.completions.create(
            model={model!r}, max_completion_tokens=2000, stream=True,
            messages=[{{"role": "user", "content": "hi"}}], **{extra!r})
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "x" * 40
"""


def test_a_stream_asking_for_usage_is_billed_from_its_final_chunk(oa: pytest.Pytester) -> None:
    oa.makepyfile(
        test_app=STREAM_SUITE.format(
            usage=CHAT_USAGE, model="gpt-5-mini", extra={"stream_options": {"include_usage": True}}
        )
    )
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    assert call["streamed"] and not call["estimated"]
    assert Decimal(str(call["cost_usd"])) == _cost("gpt-5-mini", 800, 1200, 500)


def test_a_stream_without_usage_from_a_reasoning_model_is_charged_its_worst_case_and_left_unchanged(
    oa: pytest.Pytester,
) -> None:
    oa.makepyfile(test_app=STREAM_SUITE.format(usage=CHAT_USAGE, model="gpt-5-mini", extra={}))
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    assert call["estimated"]
    assert call["cost_usd"] == call["reserved_usd"] > 0
    assert call["output_tokens"] == 0 and Decimal(str(call["cost_usd"])) > _cost("gpt-5-mini", 0, 0, 2000)
    (sent,) = _sent(oa)
    assert "stream_options" not in sent["body"]  # the user's request is not changed behind their back


def test_a_stream_without_usage_from_a_model_without_reasoning_is_charged_no_more_than_it_received(
    oa: pytest.Pytester,
) -> None:
    oa.makepyfile(test_app=STREAM_SUITE.format(usage=CHAT_USAGE, model="gpt-4o-mini", extra={}))
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    assert call["estimated"]
    # 40 bytes of text, plus 16 tokens for the one choice's framing; the input at its bound.
    assert call["output_tokens"] == 40 + 16
    assert call["cost_usd"] < call["reserved_usd"]
    bound_in = call["input_tokens"]
    assert Decimal(str(call["cost_usd"])) == _cost("gpt-4o-mini", bound_in, 0, 56)


RESPONSES_USAGE = {
    "input_tokens": 3000,
    "input_tokens_details": {"cached_tokens": 1000},
    "output_tokens": 700,
    "output_tokens_details": {"reasoning_tokens": 600},
    "total_tokens": 3700,
}


def test_responses_plain_and_streamed_count_input_tokens_as_the_total(oa: pytest.Pytester) -> None:
    oa.makepyfile(
        test_app=f"""
import openai
from openaiapi import OpenAIAPI

def test_responses():
    client = openai.OpenAI()
    with OpenAIAPI({RESPONSES_USAGE!r}):
        reply = client.responses.create(model="gpt-5", input="hi", max_output_tokens=1000)
        assert reply.output_text == "hello there"
        with client.responses.stream(model="gpt-5", input="hi", max_output_tokens=1000) as stream:
            final = stream.get_final_response()
        assert final.output_text == "hello there"
        events = list(client.responses.create(model="gpt-5", input="hi", max_output_tokens=1000, stream=True))
        assert events[-1].type == "response.completed"
"""
    )
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    calls = _report(oa)["calls"]
    assert [c["streamed"] for c in calls] == [False, True, True]
    for call in calls:
        assert (call["input_tokens"], call["cache_read_input_tokens"], call["output_tokens"]) == (2000, 1000, 700)
        assert Decimal(str(call["cost_usd"])) == _cost("gpt-5", 2000, 1000, 700)
        assert not call["estimated"]


def test_embeddings_parse_and_raw_responses_are_metered(oa: pytest.Pytester) -> None:
    oa.makepyfile(
        test_app=f"""
import openai
import pydantic
from openaiapi import OpenAIAPI

class Answer(pydantic.BaseModel):
    answer: str

def test_paths():
    client = openai.OpenAI()
    with OpenAIAPI({{"prompt_tokens": 9, "total_tokens": 9}}):
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    with OpenAIAPI({CHAT_USAGE!r}):
        parsed = client.chat.completions.parse(model="gpt-5-mini", max_completion_tokens=100,
            messages=[{{"role": "user", "content": "hi"}}], response_format=Answer)
        assert parsed.choices[0].message.parsed.answer == "hello there"
        raw = client.chat.completions.with_raw_response.create(model="gpt-5-mini", max_completion_tokens=100,
            messages=[{{"role": "user", "content": "hi"}}])
        assert raw.parse().usage.prompt_tokens == 2000
        with client.chat.completions.with_streaming_response.create(model="gpt-5-mini",
                max_completion_tokens=100, messages=[{{"role": "user", "content": "hi"}}]) as streamed:
            assert streamed.parse().usage.completion_tokens == 500
"""
    )
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    embedding, *chats = _report(oa)["calls"]
    assert Decimal(str(embedding["cost_usd"])) == _cost("text-embedding-3-small", 9, 0, 0)
    assert len(chats) == 3
    for call in chats:
        assert Decimal(str(call["cost_usd"])) == _cost("gpt-5-mini", 800, 1200, 500)


def test_async_and_azure_clients_are_metered_and_a_retried_attempt_is_billed_once(oa: pytest.Pytester) -> None:
    oa.makepyfile(
        test_app=f"""
import asyncio
import openai
from openaiapi import OpenAIAPI

def test_async():
    async def main():
        client = openai.AsyncOpenAI(max_retries=1)
        with OpenAIAPI({CHAT_USAGE!r}, fail_first=1):
            await client.chat.completions.create(model="gpt-5-mini", max_completion_tokens=100,
                messages=[{{"role": "user", "content": "hi"}}])
            stream = await client.chat.completions.create(model="gpt-5-mini", max_completion_tokens=100,
                stream=True, stream_options={{"include_usage": True}},
                messages=[{{"role": "user", "content": "hi"}}])
            async for _ in stream:
                pass
    asyncio.run(main())

def test_azure():
    client = openai.AzureOpenAI(api_key="k", api_version="2024-10-21",
        azure_endpoint="https://myres.openai.azure.com", max_retries=0)
    with OpenAIAPI({CHAT_USAGE!r}, model="gpt-5-mini"):
        client.chat.completions.create(model="my-deployment", max_completion_tokens=100,
            messages=[{{"role": "user", "content": "hi"}}])
"""
    )
    result = oa.runpytest_subprocess(
        "--llm-budget=1", "--llm-report=r.json", "-o", "llm_prices=my-deployment = input=0.25 output=2"
    )
    result.assert_outcomes(passed=2)
    report = _report(oa)
    calls = report["calls"]
    assert [c["retries"] for c in calls] == [1, 0, 0]
    assert report["failed_attempts"] == 1
    assert calls[2]["model"] == "gpt-5-mini" and calls[2]["requested_model"] == "my-deployment"
    for call in calls:
        assert Decimal(str(call["cost_usd"])) == _cost("gpt-5-mini", 800, 1200, 500)


def test_a_call_whose_worst_case_does_not_fit_is_refused_before_sending_and_fails_the_run(
    oa: pytest.Pytester,
) -> None:
    oa.makepyfile(
        test_app=f"""
import openai
import pytest
from openaiapi import OpenAIAPI
from pytest_costguard import BudgetExceededError

def test_too_dear():
    with OpenAIAPI({CHAT_USAGE!r}), pytest.raises(BudgetExceededError, match="could cost up to"):
        openai.OpenAI().chat.completions.create(model="gpt-5", max_completion_tokens=100_000,
            messages=[{{"role": "user", "content": "hi"}}])

def test_no_limit_on_an_unknown_model():
    with OpenAIAPI({CHAT_USAGE!r}), pytest.raises(BudgetExceededError, match="set max_completion_tokens"):
        openai.OpenAI().chat.completions.create(model="gpt-house", messages=[{{"role": "user", "content": "hi"}}])

def test_no_limit_on_a_known_model_is_bounded_by_its_maximum_output():
    with OpenAIAPI({CHAT_USAGE!r}), pytest.raises(BudgetExceededError, match="maximum output, 128,000 tokens"):
        openai.OpenAI().chat.completions.create(model="gpt-5", messages=[{{"role": "user", "content": "hi"}}])
"""
    )
    result = oa.runpytest_subprocess(
        "--llm-budget=0.5", "--llm-report=r.json", "-o", "llm_prices=gpt-house = input=1 output=2"
    )
    result.assert_outcomes(passed=3)
    assert result.ret != 0  # the refusals fail the run
    assert _sent(oa) == []  # nothing reached the API
    report = _report(oa)
    assert report["calls"] == [] and len(report["refusals"]) == 3


BATCH_SUITE = """
import io, json
import openai
import pytest
from openaiapi import OpenAIAPI

LINES = [
    {{"custom_id": str(i), "method": "POST", "url": "/v1/chat/completions",
      "body": {{"model": "gpt-5-mini", "max_completion_tokens": {max_tokens},
               "messages": [{{"role": "user", "content": "x" * 1000}}]}}}}
    for i in range(3)
]

def test_batch():
    client = openai.OpenAI()
    with OpenAIAPI({{}}):
        data = "\\n".join(json.dumps(line) for line in LINES).encode()
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
"""


def test_a_batch_is_reserved_at_batch_prices_from_the_input_file_it_names(oa: pytest.Pytester) -> None:
    oa.makepyfile(test_app=BATCH_SUITE.format(max_tokens=1000))
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    assert call["estimated"] and call["provider"] == "openai"
    # Each line's input bound is at least its 1,000 bytes of text; its output, 1,000 tokens; at batch prices.
    rates = PRICES.rates("gpt-5-mini", provider="openai", batch=True)
    floor = 3 * (1000 * rates.input.base + 1000 * rates.output.base) / MTOK
    ceiling = 3 * (2000 * rates.input.base + 1000 * rates.output.base) / MTOK
    assert floor < Decimal(str(call["cost_usd"])) < ceiling


def test_a_batch_over_the_budget_is_refused_before_it_is_created(oa: pytest.Pytester) -> None:
    oa.makepyfile(test_app=BATCH_SUITE.format(max_tokens=100_000))
    result = oa.runpytest_subprocess("--llm-budget=0.2", "--llm-report=r.json")
    result.assert_outcomes(failed=1)
    assert "an OpenAI batch of 3 request(s), at batch prices" in result.stdout.str()
    assert [s["url"].rsplit("/", 1)[-1] for s in _sent(oa)] == ["files"]  # uploaded, never created


MIXED_SUITE = """
import asyncio
import threading

import anthropic
import openai
import pytest
from pytest_costguard import BudgetExceededError

def ask_anthropic(client, outcomes):
    try:
        client.messages.create(model="claude-haiku-4-5", max_tokens=400,
            messages=[{"role": "user", "content": "hello [[costguard:output=300]]"}])
        outcomes.append("sent")
    except BudgetExceededError:
        outcomes.append("refused")

def ask_openai(client, outcomes):
    try:
        client.chat.completions.create(model="gpt-4.1-mini", max_completion_tokens=400,
            messages=[{"role": "user", "content": "hello [[costguard:output=300]]"}])
        outcomes.append("sent")
    except BudgetExceededError:
        outcomes.append("refused")

def test_threads_and_asyncio_on_both_providers(llm_emulator):
    base = llm_emulator.base_url
    claude = anthropic.Anthropic(base_url=base, api_key="k", max_retries=0)
    gpt = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)
    outcomes = []
    threads = [threading.Thread(target=f, args=(c, outcomes))
               for _ in range(12) for f, c in ((ask_anthropic, claude), (ask_openai, gpt))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def streamed(agpt):
        stream = await agpt.chat.completions.create(model="gpt-4.1-mini", max_completion_tokens=400,
            stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "hi [[costguard:output=300]]"}])
        async for _ in stream:  # read to its end, as an app does: an unread stream is charged its worst case
            pass

    async def burst():
        aclaude = anthropic.AsyncAnthropic(base_url=base, api_key="k", max_retries=0)
        agpt = openai.AsyncOpenAI(base_url=base + "/v1", api_key="k", max_retries=0)
        async def one(coro):
            try:
                await coro
                outcomes.append("sent")
            except BudgetExceededError:
                outcomes.append("refused")
        await asyncio.gather(*(
            one(c) for _ in range(12) for c in (
                aclaude.messages.create(model="claude-haiku-4-5", max_tokens=400,
                    messages=[{"role": "user", "content": "hi [[costguard:output=300]]"}]),
                streamed(agpt),
            )))
    asyncio.run(burst())
    assert "refused" in outcomes and "sent" in outcomes
    import json
    with open("billed.json", "w") as fh:
        json.dump(llm_emulator.billed, fh)
"""


def test_both_providers_in_threads_and_asyncio_never_bill_more_than_the_budget(oa: pytest.Pytester) -> None:
    from pytest_costguard.core.pricing import usage_from_response
    from pytest_costguard.domain.records import usage_from_openai

    oa.makepyfile(test_mixed=MIXED_SUITE)
    budget = Decimal("0.01")
    # In a subprocess: CPython 3.11 < 3.11.8 can fail an in-process run's concurrent compiles (gh-106905).
    result = oa.runpytest_subprocess(f"--llm-budget={budget}", "--llm-report=r.json")
    result.assert_outcomes(passed=1)
    billed = json.loads((oa.path / "billed.json").read_text())
    total = Decimal(0)
    for entry in billed:
        if entry.get("provider") == "openai":
            total += PRICES.cost(usage_from_openai(entry["usage"]), entry["model"])
        else:
            total += PRICES.cost(usage_from_response(entry["usage"]), entry["model"])
    providers = {entry.get("provider", "anthropic") for entry in billed}
    assert providers == {"anthropic", "openai"}
    assert 0 < total <= budget
    report = _report(oa)
    assert Decimal(str(report["total_cost_usd"])) == total  # the report is what the emulator billed


ROUTED_SUITE = f"""
import anthropic
import openai
import pytest
from openaiapi import OpenAIAPI

def chat(model="gpt-4o"):
    return openai.OpenAI().chat.completions.create(model=model, max_completion_tokens=100,
        messages=[{{"role": "user", "content": "hi"}}])

def test_cheap(llm_emulator):
    with OpenAIAPI({CHAT_USAGE!r}):
        chat()
        openai.OpenAI().embeddings.create(model="text-embedding-3-large", input="hi")
    claude = anthropic.Anthropic(base_url=llm_emulator.base_url, api_key="k")
    claude.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=[{{"role": "user", "content": "hi"}}])

@pytest.mark.llm_model("claude-haiku-4-5")
def test_a_claude_pin_leaves_openai_calls_alone():
    with OpenAIAPI({CHAT_USAGE!r}):
        chat()

@pytest.mark.llm_model("gpt-4o-mini")
def test_an_openai_pin_applies():
    with OpenAIAPI({CHAT_USAGE!r}):
        chat()
"""


def test_cheap_routing_keeps_each_call_with_its_own_provider_and_pins_never_cross_providers(
    oa: pytest.Pytester,
) -> None:
    oa.makepyfile(test_routed=ROUTED_SUITE)
    result = oa.runpytest_subprocess("--llm-budget=1", "--llm-route=cheap", "--llm-report=r.json")
    result.assert_outcomes(passed=3)
    sent = [(s["url"].rsplit("/", 1)[-1], s["body"]["model"]) for s in _sent(oa)]
    assert sent == [
        ("completions", "gpt-4.1-nano"),  # the default cheap OpenAI model
        ("embeddings", "text-embedding-3-large"),  # another embedding model would give other vectors
        ("completions", "gpt-4o"),  # pinned to a Claude model: not sent across providers, kept
        ("completions", "gpt-4o-mini"),
    ]
    calls = _report(oa)["calls"]
    claude = [c for c in calls if c["provider"] == "anthropic"]
    assert [c["model"] for c in claude] == ["claude-haiku-4-5"]
    routed = calls[0]
    assert (routed["requested_model"], routed["model"]) == ("gpt-4o", "gpt-4.1-nano")
    assert Decimal(str(routed["cost_at_requested_usd"])) == _cost("gpt-4o", 800, 1200, 500)


def test_auto_routing_sends_a_simple_openai_request_to_the_configured_cheap_openai_model(oa: pytest.Pytester) -> None:
    oa.makepyfile(
        test_auto=f"""
import openai
from openaiapi import OpenAIAPI

def test_auto():
    with OpenAIAPI({CHAT_USAGE!r}):
        for model in ("gpt-4.1", "gpt-4.1-nano"):
            openai.OpenAI().chat.completions.create(model=model, max_completion_tokens=100,
                messages=[{{"role": "user", "content": "hi"}}])
        openai.OpenAI().chat.completions.create(model="gpt-4.1", max_completion_tokens=100,
            messages=[{{"role": "user", "content": "x" * 20_000}}])
"""
    )
    oa.makeini("[pytest]\nllm_route = auto\nllm_cheap_openai_model = gpt-4o-mini\n")
    oa.runpytest_subprocess("--llm-budget=1").assert_outcomes(passed=1)
    assert [s["body"]["model"] for s in _sent(oa)] == [
        "gpt-4o-mini",  # simple: downgraded
        "gpt-4.1-nano",  # already cheaper than the cheap model: kept
        "gpt-4.1",  # complex (20,000 characters): kept
    ]


def test_the_maximum_output_of_a_model_can_be_configured_and_a_bad_entry_is_a_usage_error(
    oa: pytest.Pytester,
) -> None:
    oa.makepyfile(
        test_house=f"""
import openai
from openaiapi import OpenAIAPI

def test_house():
    with OpenAIAPI({CHAT_USAGE!r}, model="gpt-5-mini"):
        openai.OpenAI().chat.completions.create(model="gpt-house", messages=[{{"role": "user", "content": "hi"}}])
"""
    )
    oa.makeini(
        "[pytest]\nllm_prices =\n    gpt-house = input=1 output=10\nllm_openai_max_output =\n    gpt-house = 4000\n"
    )
    oa.runpytest_subprocess("--llm-budget=1", "--llm-report=r.json").assert_outcomes(passed=1)
    (call,) = _report(oa)["calls"]
    rates = PRICES.rates("gpt-house", provider="openai") if PRICES.knows("gpt-house") else None
    assert rates is None  # priced only by the override above
    # The reservation: input bytes at $1/MTok plus 4,000 output tokens at $10/MTok (the configured maximum).
    assert Decimal(4000 * 10) / MTOK < Decimal(str(call["reserved_usd"])) < Decimal(4000 * 10 + 1000) / MTOK
    oa.makeini("[pytest]\nllm_openai_max_output =\n    gpt-house = lots\n")
    result = oa.runpytest_subprocess("--llm-budget=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llm_openai_max_output in tox.ini line 1: 'gpt-house = lots' is not*"])


def test_the_pipeline_library_takes_an_openai_client_and_meters_only_its_own_calls() -> None:
    import openai

    from pytest_costguard import BudgetExceededError
    from pytest_costguard.core.pipeline import PipelineConfig, process
    from pytest_costguard.core.tracking import CostTracker
    from pytest_costguard.domain.records import usage_from_openai
    from pytest_costguard.emulator import Emulator
    from pytest_costguard.providers.openai import patch

    with Emulator() as emulator:
        client = openai.OpenAI(base_url=f"{emulator.base_url}/v1", api_key="k")
        tracker = CostTracker(budget_limit=Decimal("0.01"))
        result, tracker = process("hello [[costguard:output=5]]", PipelineConfig(max_tokens=50), tracker, client=client)
        (billed,) = emulator.billed
        assert len(result.text.split()) == 5
        assert (result.record.provider, result.record.model) == ("openai", "gpt-4.1-nano")  # simple: cheap
        assert (
            tracker.total_cost
            == result.record.cost_usd
            == PRICES.cost(usage_from_openai(billed["usage"]), billed["model"])
        )
        assert not patch.is_patched()  # the pipeline's metering ends with its call
        # Matched by name: in-process pytester runs before this one may have reloaded the package's modules.
        with pytest.raises(Exception, match="pipeline budget would be exceeded") as refused:
            process("hi", PipelineConfig(max_tokens=1_000_000, force_model="gpt-4.1"), tracker, client=client)
        assert type(refused.value).__name__ == BudgetExceededError.__name__
        assert len(emulator.billed) == 1  # refused before sending
