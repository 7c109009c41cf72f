"""The guard and the SDK middleware, without pytest in the way: threads and tasks against a small budget."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from fakeapi import FakeAPI, billed_cost

from pytest_costguard import BudgetExceededError, CostGuard, GuardConfig, InMemoryLedger
from pytest_costguard.providers.anthropic.middleware import SSEMeter, middleware_for

REQUEST = {
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "x" * 400}],
}


def _guarded(limit: str) -> tuple[CostGuard, FakeAPI]:
    # The fake bills the maximum the request allows, so every call costs close to its worst case.
    api = FakeAPI({"input_tokens": 10**6, "output_tokens": 10**6})
    return CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(limit))), api


def test_threads_hammering_a_small_budget_never_overspend() -> None:
    guard, api = _guarded("0.005")
    client = api.client(middleware=[middleware_for(guard)], max_retries=0)
    refused = []

    def worker() -> None:
        for _ in range(25):
            try:
                client.messages.create(**REQUEST)
            except BudgetExceededError:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    billed = billed_cost(api.billed)
    assert billed <= Decimal("0.005")
    assert guard.ledger.spent == billed == sum(r.cost_usd for r in guard.records)
    assert len(api.requests) == len(api.billed) == 200 - len(refused)
    assert refused and guard.ledger.reserved == 0


def test_asyncio_tasks_hammering_a_small_budget_never_overspend() -> None:
    guard, api = _guarded("0.003")

    async def main() -> int:
        client = api.async_client(middleware=[middleware_for(guard)], max_retries=0)

        async def one() -> bool:
            try:
                await client.messages.create(**REQUEST)
                return True
            except BudgetExceededError:
                return False

        results = await asyncio.gather(*[one() for _ in range(100)])
        return sum(results)

    sent = asyncio.run(main())
    assert billed_cost(api.billed) <= Decimal("0.003")
    assert sent == len(api.billed) == len(guard.records) > 0


def test_a_refused_call_sends_no_request() -> None:
    guard, api = _guarded("0")
    client = api.client(middleware=[middleware_for(guard)])
    with pytest.raises(BudgetExceededError, match="not sent"):
        client.messages.create(**REQUEST)
    assert api.requests == []
    assert guard.refusals[0].scope == "session"


def test_a_failed_attempt_releases_its_reservation() -> None:
    guard, api = _guarded("1")
    api.errors[:] = [500]
    client = api.client(middleware=[middleware_for(guard)], max_retries=1)
    client.messages.create(**REQUEST)
    assert guard.failed_attempts == 1
    assert len(guard.records) == 1 and guard.records[0].retries == 1
    assert guard.ledger.reserved == 0


def test_message_delta_usage_overwrites_never_adds() -> None:
    meter = SSEMeter()
    meter.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
        b'{"input_tokens":10,"output_tokens":1}}}\n\n'
    )
    meter.feed(
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":5}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\r\n\r\n'
    )
    assert meter.complete
    assert meter.usage is not None and (meter.usage.input_tokens, meter.usage.output_tokens) == (10, 9)


def test_a_stream_split_at_any_byte_is_parsed_the_same() -> None:
    raw = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
        b'{"input_tokens":7,"output_tokens":1}}}\n\nevent: ping\ndata: {"type":"ping"}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":3}}\n\n'
    )
    for cut in range(1, len(raw)):
        meter = SSEMeter()
        meter.feed(raw[:cut])
        meter.feed(raw[cut:])
        assert meter.complete and meter.usage is not None and meter.usage.output_tokens == 3


def test_an_application_can_meter_its_own_client_in_production() -> None:
    guard, api = _guarded("10")
    api.usage = {"input_tokens": 100, "output_tokens": 10}
    client = api.client(middleware=[middleware_for(guard)])
    client.messages.create(**REQUEST)
    assert guard.total_cost == Decimal("0.00015")


def test_a_call_billed_above_its_worst_case_is_flagged_in_the_report() -> None:
    from pytest_costguard.reports.model import build_report, terminal_lines

    guard, api = _guarded("10")
    api.usage = {"input_tokens": 50_000, "output_tokens": 10}
    api.physical = False  # bills more input tokens than the request has bytes: impossible for the real API
    api.client(middleware=[middleware_for(guard)]).messages.create(**REQUEST)
    (record,) = guard.records
    assert record.reserved_usd is not None and record.cost_usd > record.reserved_usd
    report = build_report(guard.records, {})
    assert report["worst_case_overruns"] == 1
    assert any("1 call cost more than its pre-send worst case" in line for line in terminal_lines(report))


@pytest.mark.parametrize(
    ("error", "charged"),
    [("ConnectError", False), ("ConnectTimeout", False), ("ReadTimeout", True), ("RemoteProtocolError", True)],
)
def test_a_transport_failure_is_charged_only_once_the_request_reached_the_server(error: str, charged: bool) -> None:
    import httpx2

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal("1")))

    def fail(request: httpx2.Request) -> httpx2.Response:
        raise getattr(httpx2, error)("scripted", request=request)

    import anthropic

    client = anthropic.Anthropic(
        api_key="k",
        max_retries=0,
        middleware=[middleware_for(guard)],
        http_client=httpx2.Client(transport=httpx2.MockTransport(fail)),
    )
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(**REQUEST)
    assert guard.ledger.reserved == 0
    assert len(guard.records) == int(charged)
    assert guard.failed_attempts == int(not charged)
    if charged:
        assert guard.records[0].estimated and guard.records[0].cost_usd == guard.records[0].reserved_usd


def test_an_event_stream_reply_to_a_request_that_did_not_stream_is_charged_its_worst_case() -> None:
    import contextlib
    import json

    import anthropic
    import httpx2

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))
    api = FakeAPI({"input_tokens": 10, "output_tokens": 5})

    def stream_whatever_was_asked(request: httpx2.Request) -> httpx2.Response:
        return api._stream(json.loads(request.content), {"input_tokens": 10, "output_tokens": 5})

    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(stream_whatever_was_asked)),
        middleware=[middleware_for(guard)],
        max_retries=0,
    )
    with contextlib.suppress(Exception):  # the SDK may refuse to read an event stream as a Message
        client.messages.create(**REQUEST)
    # The usage of a reply the middleware did not expect is not guessed at: the call is charged its worst case.
    [record] = guard.records
    assert record.estimated and record.cost_usd == record.reserved_usd > 0
    assert guard.ledger.reserved == 0


def test_an_exception_chain_that_is_a_cycle_is_walked_once() -> None:
    import httpx2

    from pytest_costguard.providers._common import reached_the_server as _reached_the_server

    first, second = RuntimeError("side effect"), ValueError("re-raised")
    first.__context__, second.__context__ = second, first
    assert _reached_the_server(first) is False
    timeout = httpx2.ReadTimeout("late")
    second.__cause__ = timeout
    timeout.__context__ = first
    assert _reached_the_server(first) is True


class _Chunks:
    """An event stream served chunk by chunk, counting what was pulled from it (no content-type header)."""

    def __init__(self, model: str, usage: dict[str, int]) -> None:
        import json

        start = {"type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
                 "id": "msg_1", "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        usage = {"output_tokens": 0, **usage}
        events = [
            {"type": "message_start", "message": start},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": usage["output_tokens"]}},
            {"type": "message_stop"},
        ]
        self.chunks = [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]
        self.pulled = 0

    def response(self) -> Any:
        import httpx2

        source = self

        class Body(httpx2.SyncByteStream, httpx2.AsyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in source.chunks:
                    source.pulled += 1
                    yield chunk

            async def __aiter__(self) -> AsyncIterator[bytes]:
                for chunk in source.chunks:
                    source.pulled += 1
                    yield chunk

        return httpx2.Response(200, stream=Body())


def test_a_stream_without_its_content_type_is_metered_by_its_bytes_as_the_caller_reads_it() -> None:
    import anthropic
    import httpx2

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))
    body = _Chunks("claude-haiku-4-5", {"input_tokens": 100, "output_tokens": 10})
    client = anthropic.Anthropic(
        api_key="k", max_retries=0, middleware=[middleware_for(guard)],
        http_client=httpx2.Client(transport=httpx2.MockTransport(lambda request: body.response())),
    )
    stream = client.messages.create(**REQUEST, stream=True)
    assert body.pulled == 0 and not stream.response.is_closed  # nothing read ahead of the caller
    assert [event.type for event in stream][-1] == "message_stop"
    [record] = guard.records
    assert not record.estimated and (record.input_tokens, record.output_tokens) == (100, 10)
    assert record.cost_usd == Decimal("0.00015")  # Haiku 4.5 at $1/$5, not the worst case


def test_the_async_middleware_meters_a_headerless_stream_and_a_message_like_the_sync_one() -> None:
    import anthropic
    import httpx2

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))
    api = FakeAPI({"input_tokens": 100, "output_tokens": 10})
    body = _Chunks("claude-haiku-4-5", {"input_tokens": 100, "output_tokens": 10})

    def reply(request: httpx2.Request) -> httpx2.Response:
        return body.response() if b'"stream":true' in request.content.replace(b" ", b"") else api(request)

    async def main() -> None:
        client = anthropic.AsyncAnthropic(
            api_key="k", max_retries=0, middleware=[middleware_for(guard)],
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(reply)),
        )
        await client.messages.create(**REQUEST)
        stream = await client.messages.create(**REQUEST, stream=True)
        assert body.pulled == 0
        assert [event.type async for event in stream][-1] == "message_stop"

    asyncio.run(main())
    assert [(r.streamed, r.estimated, r.cost_usd) for r in guard.records] == [
        (False, False, Decimal("0.00015")),
        (True, False, Decimal("0.00015")),
    ]


def test_a_streaming_raw_response_is_left_unread_until_the_caller_reads_it() -> None:
    import json


    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))
    api = FakeAPI({"input_tokens": 100, "output_tokens": 10})
    body = _Chunks("claude-haiku-4-5", {})
    body.chunks = [json.dumps(api._message("claude-haiku-4-5", api.usage)).encode()]
    client = anthropic_client(guard, lambda request: body.response())
    with client.messages.with_streaming_response.create(**REQUEST) as response:
        assert body.pulled == 0 and not response.http_response.is_closed and guard.records == []
        assert response.parse().usage.output_tokens == 10
    [record] = guard.records
    assert not record.estimated and record.cost_usd == Decimal("0.00015")


def anthropic_client(guard: CostGuard, handler: Any) -> Any:
    import anthropic
    import httpx2

    return anthropic.Anthropic(
        api_key="k", max_retries=0, middleware=[middleware_for(guard)],
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def test_a_response_naming_another_model_than_requested_is_no_routing_saving() -> None:
    from pytest_costguard.core.pricing import usage_from_response

    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))
    ticket, _ = guard.begin({**REQUEST, "model": "claude-opus-4-7"}, streamed=False)
    # A gateway answered with a cheaper model than the one asked for; nothing was routed.
    record = guard.settle(ticket, usage_from_response({"input_tokens": 100, "output_tokens": 10}), "claude-haiku-4-5")
    assert record.cost_at_requested_usd == record.cost_usd == Decimal("0.00015")
