"""The guard and the SDK middleware, without pytest in the way: threads and tasks against a small budget."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

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
    assert any("cost more than their pre-send worst case" in line for line in terminal_lines(report))


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
