"""A Message Batch's requests are preflighted like single calls (issue 11): each whose local bound is loose (or,
when the batch does not fit, every one) is counted with `count_tokens` before the batch is admitted.

Driven through the real SDK: a scripted transport shows what goes out, the emulator shows that each count is
what the batch bills for that request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
import test_preflight as preflight
from test_preflight import MODEL, TEXT_REQUEST, _pdf, guard, image_request, png

from pytest_costguard import BudgetExceededError, PriceBook
from pytest_costguard.core.budget import bound_request
from pytest_costguard.emulator import Emulator
from pytest_costguard.metering.guard import LOOSE_MARGIN, CostGuard
from pytest_costguard.providers.anthropic.middleware import middleware_for

BATCH = {
    "id": "msgbatch_1",
    "type": "message_batch",
    "processing_status": "in_progress",
    "request_counts": {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
    "created_at": "2026-12-01T00:00:00Z",
    "expires_at": "2026-12-02T00:00:00Z",
    "ended_at": None,
    "cancel_initiated_at": None,
    "archived_at": None,
    "results_url": None,
}


class Scripted(preflight.Scripted):
    """test_preflight's scripted API, answering a batch creation with `BATCH`."""

    def __init__(self, count: int | httpx2.Response | Exception = 60) -> None:
        super().__init__(count, reply=BATCH)

    @property
    def batches(self) -> list[httpx2.Request]:
        return self.messages


_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(api: Scripted, metering: CostGuard, **kwargs: Any) -> anthropic.Anthropic:
    sdk = anthropic.Anthropic(
        api_key="sk-ant-secret",
        base_url="https://gateway.example/anthropic",
        http_client=httpx2.Client(transport=httpx2.MockTransport(api)),
        middleware=[middleware_for(metering)],
        **kwargs,
    )
    _CLIENTS.append(sdk)
    return sdk


REQUESTS = [{"custom_id": "img", "params": image_request()}, {"custom_id": "txt", "params": TEXT_REQUEST}]


def local(params: dict[str, Any]) -> Decimal:
    return bound_request(params, PriceBook().rates(MODEL, batch=True)).cost


def counted(params: dict[str, Any], tokens: int) -> Decimal:
    return bound_request(params, PriceBook().rates(MODEL, batch=True), counted=tokens).cost


def held(metering: CostGuard) -> Decimal:
    return metering.ledger.reserved


def tight(requests: list[dict[str, Any]]) -> str:
    """A budget the batch's local bound fits twice, not `LOOSE_MARGIN` times: `auto` counts its loose requests."""
    return str(sum((local(r["params"]) for r in requests), Decimal(0)) * 2)


BUDGET = tight(REQUESTS)


def test_auto_counts_only_the_loose_requests_of_a_batch_at_the_messages_count_endpoint() -> None:
    metering = guard(BUDGET)
    api = Scripted(count=60)
    client(api, metering).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]

    [count] = api.counts
    assert str(count.url) == "https://gateway.example/anthropic/v1/messages/count_tokens"
    [sent] = api.batches
    assert count.headers["authorization"] == sent.headers["authorization"] == "Bearer sk-ant-secret"
    body = json.loads(count.content)
    assert body["messages"] == image_request()["messages"] and "max_tokens" not in body
    # The image request is held at its counted bound, the text one (a byte bound that fits) at its local bound.
    assert held(metering) == counted(image_request(), 60) + local(TEXT_REQUEST)
    assert held(metering) < local(image_request()) + local(TEXT_REQUEST)
    assert (metering.preflight_calls, metering.preflight_failed) == (1, 0)


def test_auto_counts_nothing_in_a_batch_whose_loose_bound_fits_its_margin_over() -> None:
    worst = sum((local(r["params"]) for r in REQUESTS), Decimal(0))
    assert guard(str(worst * LOOSE_MARGIN)).batch_preflight({"requests": REQUESTS}) == []
    below = guard(str(worst * LOOSE_MARGIN - Decimal("0.000001")))
    assert [custom_id for custom_id, _ in below.batch_preflight({"requests": REQUESTS})] == ["img"]
    metering, api = guard("1"), Scripted(count=60)
    client(api, metering).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    assert api.counts == [] and len(api.batches) == 1
    assert held(metering) == worst


def test_always_counts_every_request_and_off_none() -> None:
    always, api = guard("1", "always"), Scripted(count=60)
    client(api, always).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    assert len(api.counts) == 2 and always.preflight_calls == 2
    assert held(always) == counted(image_request(), 60) + counted(TEXT_REQUEST, 60)

    off, api = guard("1", "off"), Scripted(count=60)
    client(api, off).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    assert api.counts == [] and off.preflight_calls == 0
    assert held(off) == local(image_request()) + local(TEXT_REQUEST)


def test_without_a_budget_no_request_of_a_batch_is_counted() -> None:
    metering, api = guard(None, "always"), Scripted(count=60)
    client(api, metering).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    assert api.counts == [] and metering.preflight_calls == 0


def test_an_inner_run_without_a_budget_counts_a_batch_as_the_outer_budget_requires() -> None:
    alone = guard(None)
    assert alone.batch_preflight({"requests": REQUESTS}) == []
    inner = guard(None)
    inner.parent = guard(BUDGET)
    assert [custom_id for custom_id, _ in inner.batch_preflight({"requests": REQUESTS})] == ["img"]
    # An outer budget the batch's local bound does not fit: every request is counted.
    tight = guard(None)
    tight.parent = guard(str(local(image_request()) + local(TEXT_REQUEST) - Decimal("0.000001")))
    assert [custom_id for custom_id, _ in tight.batch_preflight({"requests": REQUESTS})] == ["img", "txt"]

    api = Scripted(count=60)
    client(api, inner).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    assert len(api.counts) == 1 and len(api.batches) == 1
    assert inner.parent is not None and held(inner.parent) == counted(image_request(), 60) + local(TEXT_REQUEST)


def test_a_media_heavy_batch_the_local_bound_would_refuse_is_admitted_on_its_counts() -> None:
    requests = [{"custom_id": f"r{i}", "params": image_request()} for i in range(5)]
    exact = sum((counted(image_request(), 60) for _ in requests), Decimal(0))
    loose = sum((local(image_request()) for _ in requests), Decimal(0))
    budget = (exact + loose) / 2

    api = Scripted(count=60)
    client(api, guard(str(budget))).messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert len(api.counts) == 5 and len(api.batches) == 1

    refused = Scripted(count=60)
    with pytest.raises(BudgetExceededError, match="a Message Batch of 5 request"):
        client(refused, guard(str(budget), "off")).messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert refused.seen == []


def test_a_text_batch_that_does_not_fit_its_byte_bound_is_counted_whole() -> None:
    requests = [{"custom_id": f"t{i}", "params": TEXT_REQUEST} for i in range(3)]
    budget = sum((local(TEXT_REQUEST) for _ in requests), Decimal(0)) - Decimal("0.000001")
    metering, api = guard(str(budget)), Scripted(count=60)
    client(api, metering).messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert len(api.counts) == 3 and len(api.batches) == 1
    # When even no input at all would not fit, counting cannot help: nothing is counted, the batch is refused.
    floor = sum((counted(TEXT_REQUEST, 0) for _ in requests), Decimal(0))
    none, api = guard(str(floor - Decimal("0.000001"))), Scripted(count=60)
    with pytest.raises(BudgetExceededError):
        client(api, none).messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert api.seen == []


@pytest.mark.parametrize(
    "failure",
    [
        httpx2.Response(429, json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        httpx2.ConnectError("refused"),
    ],
    ids=["429", "no-connection"],
)
def test_a_failed_count_leaves_that_request_at_its_local_bound_and_is_named_in_a_refusal(failure: Any) -> None:
    metering, api = guard(BUDGET), Scripted(count=failure)
    client(api, metering, max_retries=2).messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    assert len(api.counts) == 1  # never retried
    assert held(metering) == local(image_request()) + local(TEXT_REQUEST)
    assert (metering.preflight_calls, metering.preflight_failed) == (1, 1)

    # A batch that does not fit its local bound has every request counted: both counts fail, both keep it.
    tight = guard(str(counted(image_request(), 60) + local(TEXT_REQUEST)))
    with pytest.raises(BudgetExceededError, match=r"the exact count before sending failed for 2 request\(s\)"):
        client(Scripted(count=failure), tight, max_retries=0).messages.batches.create(
            requests=REQUESTS  # type: ignore[arg-type]
        )


def test_the_async_client_counts_a_batch_too() -> None:
    metering, api = guard(BUDGET), Scripted(count=60)

    async def main() -> None:
        async with anthropic.AsyncAnthropic(
            api_key="k",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(api)),
            middleware=[middleware_for(metering)],
        ) as sdk:
            await sdk.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]

    asyncio.run(main())
    assert len(api.counts) == 1 and len(api.batches) == 1
    assert held(metering) == counted(image_request(), 60) + local(TEXT_REQUEST)


def test_a_beta_batch_is_counted_at_the_beta_count_endpoint() -> None:
    metering, api = guard(BUDGET), Scripted(count=60)
    client(api, metering).beta.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    [count] = api.counts
    [sent] = api.batches
    assert count.url.path == "/anthropic/v1/messages/count_tokens" and sent.url.path.endswith("/messages/batches")
    assert count.url.params == sent.url.params
    assert count.headers["authorization"] == sent.headers["authorization"]
    assert held(metering) == counted(image_request(), 60) + local(TEXT_REQUEST)


# -- against the emulator: each count is what the batch bills for that request -----------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def test_on_the_emulator_each_counted_request_bills_its_count_and_the_batch_settles_below_its_hold(
    emulator: Emulator,
) -> None:
    emulator.reset()
    contents = {
        "image": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(800, 600)}}],
        "pdf": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": _pdf(5)}}],
        "url": [{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf#pages=3"}}],
    }
    requests = [
        {
            "custom_id": name,
            "params": {
                "model": MODEL,
                "max_tokens": 50,
                "messages": [{"role": "user", "content": [*content, {"type": "text", "text": "summarise"}]}],
            },
        }
        for name, content in contents.items()
    ]
    metering = guard(tight(requests))
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="k", middleware=[middleware_for(metering)]) as sdk:
        batch = sdk.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        exact = {
            r["custom_id"]: sdk.messages.count_tokens(model=MODEL, messages=r["params"]["messages"]).input_tokens
            for r in requests
        }
        assert metering.ledger.reserved == sum(
            (counted(r["params"], exact[r["custom_id"]]) for r in requests), Decimal(0)
        )
        results = list(sdk.messages.batches.results(batch.id))
    assert metering.preflight_calls == 3
    assert {r.custom_id for r in results if r.result.type == "succeeded"} == set(contents)
    billed = {e["custom_id"]: e["usage"] for e in emulator.billed}
    for name, usage in billed.items():
        total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
        assert total == exact[name]
    [record] = metering.records
    assert not record.estimated and 0 < record.cost_usd < record.reserved_usd  # type: ignore[operator]
