"""The emulator speaks OpenAI's Chat Completions, Responses and Embeddings, JSON and SSE, through the real SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from pytest_costguard.emulator import Emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


@pytest.fixture
def client(emulator: Emulator) -> Iterator[openai.OpenAI]:
    emulator.reset()
    with openai.OpenAI(base_url=f"{emulator.base_url}/v1", api_key="k", max_retries=0) as sdk:
        yield sdk


ASK = [{"role": "user", "content": "hello [[costguard:output=7]]"}]


def test_a_chat_completion_is_answered_and_billed_with_its_usage(client: openai.OpenAI, emulator: Emulator) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", max_completion_tokens=50, messages=ASK)
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    assert len(reply.choices[0].message.content.split()) == 7
    (entry,) = emulator.billed
    assert entry["provider"] == "openai" and entry["usage"] == reply.usage.model_dump(exclude_none=True)


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_chat_stream_carries_usage_in_a_final_chunk_only_when_asked(
    client: openai.OpenAI, emulator: Emulator, include_usage: bool
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", max_completion_tokens=50, messages=ASK, stream=True, **options
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 7
    assert (chunks[-1].usage is not None) is include_usage
    assert all(c.usage is None for c in chunks[:-1])
    assert emulator.billed[0]["usage"]["completion_tokens"] == 7  # billed either way


def test_responses_plain_and_streamed_count_the_whole_input_and_read_a_repeated_prompt_from_the_cache(
    client: openai.OpenAI,
) -> None:
    long = "policy text " * 500
    first = client.responses.create(model="gpt-5-mini", instructions=long, input="q", max_output_tokens=5)
    with client.responses.stream(model="gpt-5-mini", instructions=long, input="q", max_output_tokens=50) as stream:
        second = stream.get_final_response()
    assert first.usage is not None and second.usage is not None
    assert first.usage.input_tokens == second.usage.input_tokens > 1024
    assert first.usage.input_tokens_details.cached_tokens == 0
    cached = second.usage.input_tokens_details.cached_tokens
    assert 0 < cached <= second.usage.input_tokens and cached % 128 == 0  # a part of the input, in blocks
    assert first.status == "incomplete" and first.usage.output_tokens == 5  # cut at max_output_tokens


def test_embeddings_bill_input_only_and_an_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert len(result.data) == 2 and result.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nonexistent", max_completion_tokens=5, messages=ASK)
