"""The Messages API emulator, driven through the real anthropic SDK wherever the SDK can make the request."""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest_costguard.emulator as emulator_package
from pytest_costguard import cli
from pytest_costguard.emulator import (
    CACHE_MINIMUMS,
    DEFAULT_CACHE_MINIMUM,
    Emulator,
    cache_minimum,
    count_input_tokens,
)

MODEL = "claude-sonnet-5"  # caches from 1,024 tokens; not deprecated, so the SDK raises no warning
SMALL_CACHE_MODEL = "claude-opus-5"  # caches from 512 tokens
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator) -> None:
    emulator.reset()


# Module-scoped clients: building one loads the CA bundle (~0.1 s), and the clients are reusable.
@pytest.fixture(scope="module")
def client(emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def http(emulator: Emulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emulator.base_url, timeout=5) as raw:
        yield raw


def total_input(usage: Any) -> int:
    return int(usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens)


def utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def wait_for_billed(emulator: Emulator, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(billed := emulator.billed) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return billed


# --- lifecycle ---------------------------------------------------------------------------------------------


def test_starts_fast_and_stops_cleanly() -> None:
    started = time.perf_counter()
    emu = Emulator().start()
    try:
        assert time.perf_counter() - started < 0.5
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", emu.base_url)
        assert emu.running
    finally:
        emu.stop()
    assert not emu.running
    emu.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = emu.base_url


# --- replies -----------------------------------------------------------------------------------------------


def test_json_reply_has_the_message_shape(client: anthropic.Anthropic, emulator: Emulator) -> None:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=HELLO)
    assert raw.headers["request-id"].startswith("req_")
    message = raw.parse()
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    usage = message.usage
    # "Hello there" is 11 bytes: ceil(11/4) = 3 tokens, plus the per-message overhead of 3.
    assert usage.input_tokens == 6
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert usage.service_tier == "standard"
    text = message.content[0].text
    assert 8 <= usage.output_tokens <= 31
    assert math.ceil(utf8(text) / 4) == usage.output_tokens
    assert emulator.billed == [
        {
            "model": MODEL,
            "usage": message.usage.model_dump(exclude_none=True),
            "stream": False,
            "complete": True,
        }
    ]


def test_replies_are_deterministic(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    again = client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    other = client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Bye"}])
    assert first.content == again.content
    assert first.usage == again.usage
    assert first.content != other.content


def test_output_marker_sets_exact_length_capped_by_max_tokens(client: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": "Write a lot [[costguard:output=50]]"}]
    full = client.messages.create(model=MODEL, max_tokens=100, messages=asked)
    assert full.usage.output_tokens == 50
    assert full.stop_reason == "end_turn"
    cut = client.messages.create(model=MODEL, max_tokens=20, messages=asked)
    assert cut.usage.output_tokens == 20
    assert cut.stop_reason == "max_tokens"
    text = cut.content[0].text
    assert math.ceil(utf8(text) / 4) == 20
    assert full.content[0].text.startswith(text)


def test_unknown_model_is_not_found(http: httpx2.Client, emulator: Emulator) -> None:
    # Raw HTTP: the plugin under test meters SDK clients in this session and refuses unpriced models itself.
    body = {"model": "claude-nonexistent-9", "max_tokens": 10, "messages": HELLO}
    response = http.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 404
    assert response.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-nonexistent-9"},
        "request_id": response.headers["request-id"],
    }
    assert emulator.billed == []


def test_unknown_model_raises_not_found_in_the_sdk() -> None:
    with (
        Emulator(known_model=lambda name: name != SMALL_CACHE_MODEL) as emu,
        anthropic.Anthropic(base_url=emu.base_url, api_key="k", max_retries=0) as sdk,
    ):
        assert sdk.messages.create(model=MODEL, max_tokens=5, messages=HELLO).model == MODEL
        with pytest.raises(anthropic.NotFoundError, match=f"model: {SMALL_CACHE_MODEL}"):
            sdk.messages.create(model=SMALL_CACHE_MODEL, max_tokens=5, messages=HELLO)
        assert len(emu.billed) == 1


def test_missing_api_key_is_401(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["request-id"] == response.json()["request_id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 5, "messages": HELLO}, "model: Field required"),
        ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": 0, "messages": HELLO}, "max_tokens: Input should be greater"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages: at least one message"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
            "non-empty content",
        ),
    ],
)
def test_invalid_requests_are_400(http: httpx2.Client, body: dict[str, Any], message: str) -> None:
    response = http.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_invalid_json_is_400(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", content=b"{nope", headers={"x-api-key": "k"})
    assert response.status_code == 400
    assert response.json()["type"] == "error"


# --- streaming ---------------------------------------------------------------------------------------------


def test_stream_sends_the_real_event_sequence(client: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": "Stream please [[costguard:output=10]]"}]
    with client.messages.with_streaming_response.create(
        model=MODEL, max_tokens=100, messages=asked, stream=True
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [line[len("event: ") :] for line in response.iter_lines() if line.startswith("event: ")]
    deltas = names.count("content_block_delta")
    assert deltas >= 2
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_stream_usage_is_cumulative_and_matches_json(client: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": "Count with me [[costguard:output=10]]"}]
    events = list(client.messages.create(model=MODEL, max_tokens=100, messages=asked, stream=True))
    start = events[0]
    assert start.type == "message_start"
    assert start.message.usage.output_tokens == 1
    delta = next(event for event in events if event.type == "message_delta")
    assert delta.usage.output_tokens == 10  # cumulative total, not an increment
    assert delta.delta.stop_reason == "end_turn"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")

    with client.messages.stream(model=MODEL, max_tokens=100, messages=asked) as stream:
        final = stream.get_final_message()
    reply = client.messages.create(model=MODEL, max_tokens=100, messages=asked)
    assert final.usage == reply.usage
    assert [(block.type, block.text) for block in final.content] == [
        (block.type, block.text) for block in reply.content
    ]
    assert reply.content[0].text == text
    assert start.message.usage.input_tokens == reply.usage.input_tokens


def test_streams_are_billed(client: anthropic.Anthropic, emulator: Emulator) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        final = stream.get_final_message()
    [entry] = emulator.billed
    assert entry == {"model": MODEL, "usage": entry["usage"], "stream": True, "complete": True}
    assert entry["usage"]["output_tokens"] == final.usage.output_tokens
    assert entry["usage"]["input_tokens"] == final.usage.input_tokens


@pytest.mark.asyncio
async def test_async_client(emulator: Emulator) -> None:
    async with anthropic.AsyncAnthropic(base_url=emulator.base_url, api_key="k", max_retries=0) as sdk:
        reply = await sdk.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
        async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            final = await stream.get_final_message()
        counted = await sdk.messages.count_tokens(model=MODEL, messages=HELLO)
    assert final.usage == reply.usage
    assert counted.input_tokens == reply.usage.input_tokens
    assert [entry["stream"] for entry in emulator.billed] == [False, True]


# --- token counting ----------------------------------------------------------------------------------------


def test_count_tokens(client: anthropic.Anthropic, emulator: Emulator) -> None:
    tool = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
    counted = client.messages.count_tokens(
        model=MODEL,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
        tools=[tool],
    )
    tool_json = json.dumps(tool, separators=(",", ":"), sort_keys=True)
    assert counted.input_tokens == math.ceil(utf8(tool_json) / 4) + math.ceil(9 / 4) + 6
    reply = client.messages.create(
        model=MODEL, max_tokens=5, system="Be brief.", messages=HELLO, tools=[tool]
    )
    assert total_input(reply.usage) == counted.input_tokens
    assert len(emulator.billed) == 1  # counting is free


message_texts = st.lists(st.text(min_size=1, max_size=3000), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=message_texts, system=st.none() | st.text(min_size=1, max_size=3000), cached=st.booleans())
def test_input_tokens_never_exceed_utf8_bytes(
    client: anthropic.Anthropic, texts: list[str], system: str | None, cached: bool
) -> None:
    messages: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        block: dict[str, Any] = {"type": "text", "text": text}
        if cached and i == len(texts) - 1:
            block["cache_control"] = {"type": "ephemeral"}
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": [block]})
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": "?"})
    extra = {"system": system} if system is not None else {}
    text_bytes = (
        sum(utf8(text) for text in texts)
        + utf8(system or "")
        + (utf8("?") if len(messages) > len(texts) else 0)
    )

    reply = client.messages.create(model=SMALL_CACHE_MODEL, max_tokens=5, messages=messages, **extra)
    again = client.messages.create(model=SMALL_CACHE_MODEL, max_tokens=5, messages=messages, **extra)
    counted = client.messages.count_tokens(model=SMALL_CACHE_MODEL, messages=messages, **extra)
    assert total_input(reply.usage) <= text_bytes
    assert total_input(again.usage) == total_input(reply.usage) == counted.input_tokens


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=6),
    tool_text=st.none() | st.text(max_size=200),
)
def test_counting_rule_is_bounded_by_bytes(texts: list[str], tool_text: str | None) -> None:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]} for text in texts],
    }
    bound = sum(utf8(text) for text in texts)
    if tool_text is not None:
        tool = {"name": "t", "description": tool_text, "input_schema": {"type": "object"}}
        request["tools"] = [tool]
        bound += utf8(json.dumps(tool, ensure_ascii=False, separators=(",", ":")))
    assert count_input_tokens(request) <= bound


# --- prompt caching ----------------------------------------------------------------------------------------


def long_system(tokens: int, ttl: str | None = None) -> list[dict[str, Any]]:
    control: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": "abcd" * tokens, "cache_control": control}]


def test_cache_write_then_read(client: anthropic.Anthropic) -> None:
    system = long_system(1200)
    first = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (1200, 0)
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 1200
    assert first.usage.input_tokens == 6
    second = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, 1200)
    assert second.usage.input_tokens == 6
    other_model = client.messages.create(model=SMALL_CACHE_MODEL, max_tokens=5, system=system, messages=HELLO)
    assert other_model.usage.cache_creation_input_tokens == 1200  # the cache is per model


def test_below_minimum_runs_uncached(client: anthropic.Anthropic) -> None:
    system = long_system(600)  # under claude-sonnet-5's 1,024, over claude-opus-5's 512
    for _ in range(2):
        reply = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
        assert (reply.usage.cache_creation_input_tokens, reply.usage.cache_read_input_tokens) == (0, 0)
        assert reply.usage.input_tokens == 606
    cached = client.messages.create(model=SMALL_CACHE_MODEL, max_tokens=5, system=system, messages=HELLO)
    assert cached.usage.cache_creation_input_tokens == 600


def test_cache_minimums_table() -> None:
    assert cache_minimum("claude-sonnet-5") == 1024
    assert cache_minimum("claude-sonnet-5-5") == 512  # the longest prefix wins
    assert cache_minimum("claude-haiku-4-5-20251001") == 4096
    assert cache_minimum("claude-opus-4-7") == 2048
    assert cache_minimum("some-other-model") == DEFAULT_CACHE_MINIMUM == 1024
    assert set(CACHE_MINIMUMS.values()) == {512, 1024, 2048, 4096}


def test_one_hour_writes_are_split_from_five_minute_writes(client: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": "lookup",
            "description": "d" * 5000,
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    tool_tokens = count_input_tokens({"model": MODEL, "messages": HELLO, "tools": tools}) - 6
    reply = client.messages.create(
        model=MODEL,
        max_tokens=5,
        tools=tools,
        system=long_system(500),
        messages=HELLO,
    )
    split = reply.usage.cache_creation
    assert split is not None
    assert split.ephemeral_1h_input_tokens == tool_tokens
    assert split.ephemeral_5m_input_tokens == 500
    assert reply.usage.cache_creation_input_tokens == tool_tokens + 500


def test_top_level_cache_control_marks_the_last_block(http: httpx2.Client) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "cache_control": {"type": "ephemeral"},
        "messages": [{"role": "user", "content": "abcd" * 2000}],
    }
    usages = [
        http.post("/v1/messages", json=body, headers={"x-api-key": "k"}).json()["usage"] for _ in range(2)
    ]
    assert usages[0]["cache_creation_input_tokens"] == 2003
    assert usages[1]["cache_read_input_tokens"] == 2003
    assert usages[1]["input_tokens"] == 0


def test_cache_entries_expire_after_their_ttl() -> None:
    now = [0.0]
    with (
        Emulator(clock=lambda: now[0]) as emu,
        anthropic.Anthropic(base_url=emu.base_url, api_key="k", max_retries=0) as sdk,
    ):

        def usage(system: list[dict[str, Any]]) -> tuple[int, int]:
            u = sdk.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO).usage
            return u.cache_creation_input_tokens or 0, u.cache_read_input_tokens or 0

        short, long = long_system(1100), long_system(1300, ttl="1h")
        assert usage(short) == (1100, 0)
        assert usage(long) == (1300, 0)
        now[0] = 299.0
        assert usage(short) == (0, 1100)  # a hit refreshes the entry
        now[0] = 299.0 + 301.0
        assert usage(short) == (1100, 0)
        assert usage(long) == (0, 1300)
        now[0] = 10_000.0
        assert usage(long) == (1300, 0)


def test_more_than_four_breakpoints_is_400(client: anthropic.Anthropic, emulator: Emulator) -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4 blocks"):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": blocks}])
    four = [{"role": "user", "content": blocks[:4]}]
    client.messages.create(model=MODEL, max_tokens=5, messages=four)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=5, messages=four, cache_control={"type": "ephemeral"})
    assert len(emulator.billed) == 1


def test_one_hour_breakpoint_after_five_minute_one_is_400(client: anthropic.Anthropic) -> None:
    blocks = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "5m"}},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    with pytest.raises(anthropic.BadRequestError, match="ttl"):
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": blocks}])


# --- faults ------------------------------------------------------------------------------------------------

STATUS_ERRORS: list[tuple[str, type[anthropic.APIStatusError], str]] = [
    ("400", anthropic.BadRequestError, "invalid_request_error"),
    ("401", anthropic.AuthenticationError, "authentication_error"),
    ("403", anthropic.PermissionDeniedError, "permission_error"),
    ("404", anthropic.NotFoundError, "not_found_error"),
    ("413", anthropic.ContentTooLargeError, "request_too_large"),
    ("429", anthropic.RateLimitError, "rate_limit_error"),
    ("500", anthropic.InternalServerError, "api_error"),
    ("504", anthropic.GatewayTimeoutError, "timeout_error"),
    ("529", anthropic.OverloadedError, "overloaded_error"),
]


@pytest.mark.parametrize(("kind", "error", "error_type"), STATUS_ERRORS)
def test_status_faults_raise_the_sdk_error(
    client: anthropic.Anthropic,
    emulator: Emulator,
    kind: str,
    error: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    emulator.inject(kind)
    with pytest.raises(error) as caught:
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert caught.value.status_code == int(kind)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == error_type
    assert caught.value.body["request_id"] == caught.value.response.headers["request-id"]
    assert emulator.billed == []  # failed attempts are not billed
    client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)  # the fault was used up
    assert len(emulator.billed) == 1


def test_rate_limit_carries_retry_after(client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.inject("429")
    emulator.inject(429, retry_after=2.5)
    with pytest.raises(anthropic.RateLimitError) as default:
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert (
        default.value.response.headers["retry-after"],
        default.value.response.headers["retry-after-ms"],
    ) == (
        "0",
        "0",
    )
    with pytest.raises(anthropic.RateLimitError) as explicit:
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert explicit.value.response.headers["retry-after"] == "3"
    assert explicit.value.response.headers["retry-after-ms"] == "2500"


def test_stream_error_arrives_after_http_200(client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.inject("stream_error")
    asked = [{"role": "user", "content": "Go [[costguard:output=12]]"}]
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.messages.create(model=MODEL, max_tokens=100, messages=asked, stream=True):
            seen.append(event.type)
    assert type(caught.value) is anthropic.APIStatusError
    assert caught.value.status_code == 200
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert seen[0] == "message_start"
    assert "content_block_delta" in seen
    assert "message_delta" not in seen
    [entry] = emulator.billed
    assert entry["complete"] is False
    assert 0 < entry["usage"]["output_tokens"] < 12


def test_stream_error_on_a_non_streaming_request_is_overloaded(
    client: anthropic.Anthropic, emulator: Emulator
) -> None:
    emulator.inject("stream_error")
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)


def test_drop_without_stream_is_a_connection_error(client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.inject("drop")
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert emulator.billed == []


def test_drop_mid_stream_ends_the_stream_early(client: anthropic.Anthropic, emulator: Emulator) -> None:
    asked = [{"role": "user", "content": "Go [[costguard:output=12]]"}]
    emulator.inject("drop")
    types = [
        event.type
        for event in client.messages.create(model=MODEL, max_tokens=100, messages=asked, stream=True)
    ]
    assert types[0] == "message_start"
    assert "message_delta" not in types
    assert "message_stop" not in types
    emulator.inject("drop")
    with client.messages.stream(model=MODEL, max_tokens=100, messages=asked) as stream:
        final = stream.get_final_message()
    # What the SDK reports for a cut stream is a placeholder: the ledger knows what was generated.
    assert final.stop_reason is None
    assert final.usage.output_tokens == 1
    entries = emulator.billed
    assert [entry["complete"] for entry in entries] == [False, False]
    assert all(0 < entry["usage"]["output_tokens"] < 12 for entry in entries)


def test_malformed_body(http: httpx2.Client, client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.inject("malformed")
    response = http.post(
        "/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HELLO}, headers={"x-api-key": "k"}
    )
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    emulator.inject("malformed")
    with pytest.raises(ValueError):
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    # The server generated both replies: they are billed even though the client could not read them.
    assert [entry["complete"] for entry in emulator.billed] == [True, True]


def test_no_usage(http: httpx2.Client, client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.inject("no_usage", times=2)
    body = {"model": MODEL, "max_tokens": 5, "messages": HELLO}
    payload = http.post("/v1/messages", json=body, headers={"x-api-key": "k"}).json()
    assert payload["type"] == "message"
    assert "usage" not in payload
    reply = client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert reply.content
    assert reply.model_dump().get("usage") is None
    assert len(emulator.billed) == 2
    assert emulator.billed[0]["usage"]["input_tokens"] == 6


def test_slow_trips_the_client_timeout(client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.inject("slow", seconds=0.4)
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.with_options(timeout=0.05).messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert time.monotonic() - started < 0.35
    # Generated once the delay is over, and billed although nobody was listening (as a real timeout is).
    assert len(wait_for_billed(emulator, 1)) == 1


def test_marker_fails_the_first_attempts_then_succeeds(
    client: anthropic.Anthropic, emulator: Emulator
) -> None:
    asked = [{"role": "user", "content": "Flaky [[costguard:fault=529x2]]"}]
    for _ in range(2):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model=MODEL, max_tokens=5, messages=asked)
    client.messages.create(model=MODEL, max_tokens=5, messages=asked)
    client.messages.create(model=MODEL, max_tokens=5, messages=asked)
    assert len(emulator.billed) == 2


def test_marker_with_sdk_retries_bills_only_the_success(emulator: Emulator) -> None:
    # retry_after keeps the SDK's backoff short; the SDK retries 529s on its own.
    asked = [{"role": "user", "content": "Flaky [[costguard:fault=529x2,retry_after=0.001]]"}]
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="k", max_retries=2) as sdk:
        raw = sdk.messages.with_raw_response.create(model=MODEL, max_tokens=5, messages=asked)
    assert raw.retries_taken == 2
    [entry] = emulator.billed
    assert entry["usage"] == raw.parse().usage.model_dump(exclude_none=True)


def test_marker_without_count_fails_every_attempt(client: anthropic.Anthropic, emulator: Emulator) -> None:
    asked = [{"role": "user", "content": "Down [[costguard:fault=500]]"}]
    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model=MODEL, max_tokens=5, messages=asked)
    assert emulator.billed == []


def test_unknown_fault_marker_is_400(client: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": "[[costguard:fault=meteor]]"}]
    with pytest.raises(anthropic.BadRequestError, match="unknown fault kind"):
        client.messages.create(model=MODEL, max_tokens=5, messages=asked)


def test_inject_validates_and_queues_in_order(client: anthropic.Anthropic, emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.inject("meteor")
    with pytest.raises(ValueError, match="unknown fault parameter"):
        emulator.inject("429", colour="red")
    with pytest.raises(ValueError, match="times"):
        emulator.inject("500", times=0)
    emulator.inject("500", times=2)
    emulator.inject("529")
    assert emulator.faults == [{"kind": "500", "times": 2}, {"kind": "529", "times": 1}]
    for error in (anthropic.InternalServerError, anthropic.InternalServerError, anthropic.OverloadedError):
        with pytest.raises(error) as caught:
            client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert type(caught.value) is error
    client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    emulator.inject("529", times=None)
    for _ in range(3):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    emulator.clear_faults()
    client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert len(emulator.billed) == 2


# --- control endpoints -------------------------------------------------------------------------------------


def test_control_endpoints(http: httpx2.Client, client: anthropic.Anthropic, emulator: Emulator) -> None:
    queued = http.post("/_emulator/faults", json={"faults": [{"kind": "429", "times": 1, "retry_after": 0}]})
    assert queued.status_code == 200
    assert queued.json()["queued"] == 1
    assert http.get("/_emulator/faults").json() == {
        "faults": [{"kind": "429", "retry_after": 0.0, "times": 1}]
    }
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    reply = client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert http.get("/_emulator/billed").json() == [
        {
            "model": MODEL,
            "usage": reply.usage.model_dump(exclude_none=True),
            "stream": False,
            "complete": True,
        }
    ]

    http.post("/_emulator/faults", json={"faults": [{"kind": "529", "times": 5}]})
    assert http.delete("/_emulator/faults").status_code == 200
    client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)

    bad = http.post("/_emulator/faults", json={"faults": [{"kind": "meteor"}]})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"

    assert http.post("/_emulator/reset").json() == {"ok": True}
    assert http.get("/_emulator/billed").json() == []
    assert emulator.billed == []


def test_reset_clears_cache_and_marker_counters(client: anthropic.Anthropic, emulator: Emulator) -> None:
    system = long_system(1100)
    client.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
    flaky = [{"role": "user", "content": "[[costguard:fault=529x1]]"}]
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=5, messages=flaky)
    emulator.reset()
    again = client.messages.create(model=MODEL, max_tokens=5, system=system, messages=HELLO)
    assert again.usage.cache_creation_input_tokens == 1100
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=5, messages=flaky)


# --- command line ------------------------------------------------------------------------------------------


def test_costguard_serve_prints_its_url_and_serves() -> None:
    command = [sys.executable, "-c", "import sys; from pytest_costguard.cli import main; sys.exit(main())"]
    process = subprocess.Popen(
        [*command, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"costguard emulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        with anthropic.Anthropic(base_url=match.group(1), api_key="k", max_retries=0) as sdk:
            assert sdk.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens == 6
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr


def test_cli_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["bogus"]) == 2
    assert cli.main(["serve", "--port", "not-a-port"]) == 2
    assert cli.main(["serve", "--help"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "invalid int value: 'not-a-port'" in captured.err
    assert "usage: costguard serve" in captured.out


def test_python_dash_m_serves_the_emulator() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest_costguard.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"costguard emulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        with anthropic.Anthropic(base_url=match.group(1), api_key="k", max_retries=0) as sdk:
            assert sdk.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens == 6
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr


# --- layout ------------------------------------------------------------------------------------------------

# Lowest first: a module may import only the ones before it (see the package docstring).
LAYERS = [
    "errors", "wire", "media", "cache", "validation", "tools", "tokens", "replies", "faults", "batches", "openai_api",
    "server", "cli", "__main__",
]


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in emulator_package.__all__ if not hasattr(emulator_package, name)]
    assert missing == []
    # What the rest of the package and the docs import from it.
    for name in ("Emulator", "main", "validate_request", "count_input_tokens", "make_fault", "Fault", "ApiError"):
        assert name in emulator_package.__all__
    assert emulator_package.Emulator.__module__ == "pytest_costguard.emulator.server"


def test_imports_inside_the_emulator_point_one_way() -> None:
    folder = Path(emulator_package.__file__).parent
    modules = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    assert modules <= set(LAYERS), f"place {sorted(modules - set(LAYERS))} in LAYERS"
    for module in modules:
        tree = ast.parse((folder / f"{module}.py").read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is not None
        }
        for name in imported:
            assert LAYERS.index(name) < LAYERS.index(module), f"{module} imports {name}, which sits above it"


def test_the_emulator_imports_neither_pytest_nor_anthropic() -> None:
    probe = (
        "import sys, pytest_costguard.emulator, pytest_costguard.emulator.cli; "
        "print(sorted(m for m in ('pytest', 'anthropic', 'genai_prices') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
