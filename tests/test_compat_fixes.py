"""Differences the Anthropic SDK's own test suite showed between a metered run and `-p no:costguard` (issue 13).

Each test rebuilds the situation of the SDK test that differed, with the real SDK and an `httpx2.MockTransport`,
under an installed guard with a budget, as `compat/run_sdk_suite.py`'s metered run has.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any
from unittest import mock

import httpx2
import pytest

from pytest_costguard import CostGuard
from pytest_costguard.metering.ledger import InMemoryLedger
from pytest_costguard.providers.anthropic import patch

REQUEST: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}
USAGE = {"input_tokens": 10, "output_tokens": 5}
SSE = b"".join(
    f"event: {json.loads(data)['type']}\ndata: {data}\n\n".encode()
    for data in (
        json.dumps(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-haiku-4-5",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            }
        ),
        json.dumps({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json.dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}}),
        json.dumps({"type": "content_block_stop", "index": 0}),
        json.dumps({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
        json.dumps({"type": "message_stop"}),
    )
)


@pytest.fixture
def guard() -> Iterator[CostGuard]:
    """An installed guard under a budget, as in the metered run (`--llm-budget=1000`)."""
    guard = CostGuard(ledger=InMemoryLedger(limit=Decimal(1000)))
    patch.install(guard)
    try:
        yield guard
    finally:
        patch.uninstall(guard)


def _client(handler: Any, **kwargs: Any) -> Any:
    import anthropic

    return anthropic.Anthropic(
        api_key="sk-ant-test", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)), **kwargs
    )


def _async_client(handler: Any, **kwargs: Any) -> Any:
    import anthropic

    return anthropic.AsyncAnthropic(
        api_key="sk-ant-test", http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)), **kwargs
    )


# -- tests/test_open_telemetry.py::TestCallSpans::test_*elapsed_of_a_response_whose_body_ends_the_span -----------
ELAPSED = datetime.timedelta(milliseconds=7)
OBSERVER = mock.Mock(name="the span's observer, which the SDK's `Stream` reads from the body (`Stream._observer`)")


class _Traced(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """What the SDK's tracing makes of a body once httpx2 has sent it (`_tracing.SpanEndingStream`): it tells
    `elapsed` (httpx2's `Response.elapsed` reads it from `response.stream`) and carries the span's observer."""

    elapsed = ELAPSED
    stream_observer = OBSERVER

    def __init__(self, body: Any) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        yield from self._body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:
            yield chunk


class _Chunks(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body sent as it comes (`content=` bytes would count as read already)."""

    def __iter__(self) -> Iterator[bytes]:
        yield SSE

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield SSE


def _stream_handler(request: httpx2.Request) -> httpx2.Response:
    del request
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_Chunks())


def _trace(response: httpx2.Response) -> None:
    response.stream = _Traced(response.stream)


async def _trace_async(response: httpx2.Response) -> None:
    _trace(response)


def _traced_client(*, asynchronous: bool) -> Any:
    import anthropic

    transport = httpx2.MockTransport(_stream_handler)
    if asynchronous:
        http = httpx2.AsyncClient(transport=transport, event_hooks={"response": [_trace_async]})
        return anthropic.AsyncAnthropic(api_key="sk-ant-test", http_client=http)
    http_sync = httpx2.Client(transport=transport, event_hooks={"response": [_trace]})
    return anthropic.Anthropic(api_key="sk-ant-test", http_client=http_sync)


def test_a_metered_stream_shows_what_the_body_it_wraps_tells(guard: CostGuard) -> None:
    with _traced_client(asynchronous=False) as client:
        stream = client.messages.create(**REQUEST, stream=True)
        assert type(stream.response.stream).__name__ == "WatchedStream"  # the meter is there, around the body
        assert [event.type for event in stream][-1] == "message_stop"
        assert stream.response.elapsed == ELAPSED
        assert stream.response.stream.stream_observer is OBSERVER
    assert OBSERVER.method_calls  # the SDK found its observer through the meter's wrapper, and told it
    assert len(guard.records) == 1 and guard.records[0].output_tokens == 5


def test_a_metered_async_stream_shows_what_the_body_it_wraps_tells(guard: CostGuard) -> None:
    async def run() -> tuple[str, datetime.timedelta, str]:
        async with _traced_client(asynchronous=True) as client:
            stream = await client.messages.create(**REQUEST, stream=True)
            kind = type(stream.response.stream).__name__
            assert [event.type async for event in stream][-1] == "message_stop"
            return kind, stream.response.elapsed, stream.response.stream.stream_observer

    assert asyncio.run(run()) == ("AsyncWatchedStream", ELAPSED, OBSERVER)
    assert len(guard.records) == 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_metered_stream_has_no_observer_where_its_body_has_none(guard: CostGuard, asynchronous: bool) -> None:
    """Untraced, `hasattr(response.stream, "stream_observer")` stays False, as without the meter, and `elapsed`
    is still the body's."""

    async def read_async() -> tuple[str, bool, object]:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(_stream_handler)) as http:
            import anthropic

            client = anthropic.AsyncAnthropic(api_key="sk-ant-test", http_client=http)
            stream = await client.messages.create(**REQUEST, stream=True)
            assert [event.type async for event in stream][-1] == "message_stop"
            body = stream.response.stream
            return type(body).__name__, hasattr(body, "stream_observer"), stream.response.elapsed

    def read() -> tuple[str, bool, object]:
        with _client(_stream_handler) as client:
            stream = client.messages.create(**REQUEST, stream=True)
            assert [event.type for event in stream][-1] == "message_stop"
            body = stream.response.stream
            return type(body).__name__, hasattr(body, "stream_observer"), stream.response.elapsed

    name, observed, elapsed = asyncio.run(read_async()) if asynchronous else read()
    assert name == ("AsyncWatchedStream" if asynchronous else "WatchedStream")  # the meter is there
    assert not observed
    assert isinstance(elapsed, datetime.timedelta)  # httpx2's own body's, read through the meter's wrapper
    assert len(guard.records) == 1 and guard.records[0].output_tokens == 5


# -- tests/lib/test_vertex.py::test_empty_model_is_rejected -------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["rawPredict", "streamRawPredict"])
def test_an_empty_model_keeps_the_sdks_own_validation_error(guard: CostGuard, stream: bool) -> None:
    import anthropic

    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json={"foo": "bar"})

    client = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="project",
        access_token="token",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client, pytest.raises(ValueError, match="Expected a non-empty value for `model` but received ''"):
        client.messages.create(**{**REQUEST, "model": ""}, stream=stream)
    assert sent == [] and guard.refusals == [] and guard.records == []


# -- tests/test_tracing.py, test_exceptions.py, test_prepare.py, test_client.py: `cast_to=httpx2.Response` ---------
def _statuses(*codes: int) -> tuple[Any, list[int]]:
    """A handler answering `codes` in turn (the last one again once they run out), and the list of what it sent."""
    answered: list[int] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        del request
        code = codes[min(len(answered), len(codes) - 1)]
        answered.append(code)
        return httpx2.Response(code, json={"ok": code < 400})

    return handler, answered


def test_a_bare_response_call_retries_a_5xx_as_without_middleware(guard: CostGuard) -> None:
    handler, answered = _statuses(500, 200)
    with _client(handler, max_retries=1) as client:
        response = client.get("/foo", cast_to=httpx2.Response)
    assert isinstance(response, httpx2.Response) and response.status_code == 200
    assert answered == [500, 200]
    del guard


def test_a_bare_response_call_raises_a_4xx_as_without_middleware(guard: CostGuard) -> None:
    import anthropic

    handler, answered = _statuses(404)
    with _client(handler) as client, pytest.raises(anthropic.NotFoundError):
        client.get("/foo", cast_to=httpx2.Response)
    assert answered == [404]
    del guard


def test_an_async_bare_response_call_retries_and_raises_as_without_middleware(guard: CostGuard) -> None:
    import anthropic

    async def run() -> tuple[int, list[int], list[int]]:
        handler, retried = _statuses(503, 200)
        async with _async_client(handler, max_retries=1) as client:
            response = await client.get("/foo", cast_to=httpx2.Response)
        handler, raised = _statuses(400)
        async with _async_client(handler) as client:
            with pytest.raises(anthropic.BadRequestError):
                await client.get("/foo", cast_to=httpx2.Response)
        return response.status_code, retried, raised

    assert asyncio.run(run()) == (200, [503, 200], [400])
    del guard


def test_a_bare_response_messages_call_is_still_metered(guard: CostGuard) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        del request
        message = {"id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": []}
        return httpx2.Response(200, json={**message, "stop_reason": "end_turn", "usage": USAGE})

    with _client(handler) as client:
        response = client.post("/v1/messages", body=REQUEST, cast_to=httpx2.Response)
    assert isinstance(response, httpx2.Response) and response.json()["usage"] == USAGE
    assert len(guard.records) == 1 and guard.records[0].output_tokens == 5


def test_user_middleware_still_sees_the_sdks_own_middleware_path(guard: CostGuard) -> None:
    # With middleware of its own, a client takes the SDK's middleware path without the plugin too: that
    # middleware must see what it would (the bare response), and the SDK then behaves as it does for it.
    seen: list[Any] = []

    def mine(request: Any, call_next: Any) -> Any:
        result = call_next(request)
        seen.append(result)
        return result

    handler, answered = _statuses(500, 200)
    with _client(handler, max_retries=1, middleware=[mine]) as client:
        response = client.get("/foo", cast_to=httpx2.Response)
    assert [type(result) for result in seen] == [httpx2.Response]
    assert response.status_code == 500 and answered == [500]  # the SDK's own middleware-path behaviour
    del guard
