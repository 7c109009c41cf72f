"""Message Batches settle when their results are read (issue 11): each request at what its result reports.

Driven through the real SDK against the emulator, whose batches bill succeeded requests at batch prices.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from pytest_costguard import BudgetExceededError, CostGuard, GuardConfig, InMemoryLedger, PriceBook
from pytest_costguard.core.budget import bound_request
from pytest_costguard.core.pricing import usage_from_response
from pytest_costguard.emulator import Emulator
from pytest_costguard.metering.scope import Scope, running
from pytest_costguard.providers.anthropic.middleware import middleware_for

MODEL = "claude-haiku-4-5"


def params(text: str, max_tokens: int = 200) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


REQUESTS = [
    {"custom_id": "a", "params": params("first question " * 20)},
    {"custom_id": "b", "params": params("second question " * 30)},
    {"custom_id": "c", "params": params("broken [[costguard:fault=500]]")},
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


_CLIENTS: list[anthropic.Anthropic] = []
"""The clients a test built, closed when it ends (an open pool's sockets warn when collected, and warnings fail)."""


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator) -> Iterator[None]:
    emulator.reset()
    yield
    emulator.hold_batches = False
    while _CLIENTS:
        _CLIENTS.pop().close()


def metered(emulator: Emulator, limit: str = "1") -> tuple[CostGuard, anthropic.Anthropic]:
    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(limit)))
    sdk = anthropic.Anthropic(
        base_url=emulator.base_url, api_key="k", max_retries=0, middleware=[middleware_for(guard)]
    )
    _CLIENTS.append(sdk)
    return guard, sdk


def worst(request: dict[str, Any]) -> Decimal:
    return bound_request(request["params"], PriceBook().rates(MODEL, batch=True)).cost


def billed(emulator: Emulator) -> Decimal:
    """What the emulator billed, at batch prices."""
    book = PriceBook()
    return sum((book.cost(usage_from_response(e["usage"]), e["model"]) for e in emulator.billed), Decimal(0))


def test_a_batch_is_held_at_its_worst_case_until_its_results_are_read_then_settled_at_their_cost(
    emulator: Emulator,
) -> None:
    guard, sdk = metered(emulator)
    batch = sdk.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    held = sum((worst(r) for r in REQUESTS), Decimal(0))
    assert guard.records == [] and guard.ledger.reserved == held
    results = list(sdk.messages.batches.results(batch.id))
    assert sorted((r.custom_id, r.result.type) for r in results) == [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "errored"),
    ]
    [record] = guard.records
    assert len(emulator.billed) == 2
    assert record.cost_usd == billed(emulator) > 0  # the errored request costs nothing
    assert record.cost_usd < held
    assert (record.estimated, record.reserved_usd, record.model) == (False, held, MODEL)
    assert record.output_tokens == sum(e["usage"]["output_tokens"] for e in emulator.billed)
    assert guard.ledger.reserved == 0 and guard.ledger.spent == record.cost_usd


def test_reading_results_again_settles_nothing_twice(emulator: Emulator) -> None:
    guard, sdk = metered(emulator)
    batch = sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    first = [r.custom_id for r in sdk.messages.batches.results(batch.id)]
    second = [r.custom_id for r in sdk.messages.batches.results(batch.id)]
    assert first == second == ["a", "b"]
    assert len(guard.records) == 1
    guard.settle_open()
    assert len(guard.records) == 1


def test_a_batch_whose_results_are_never_read_stays_charged_at_its_worst_case_marked_estimated(
    emulator: Emulator,
) -> None:
    guard, sdk = metered(emulator)
    sdk.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    guard.settle_open()  # the session ends
    [record] = guard.records
    assert record.cost_usd == sum((worst(r) for r in REQUESTS), Decimal(0))
    assert record.estimated


def test_a_read_stopped_early_leaves_the_batch_held_and_settles_what_was_read_when_the_session_ends(
    emulator: Emulator,
) -> None:
    guard, sdk = metered(emulator)
    batch = sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    results = sdk.messages.batches.results(batch.id)
    next(iter(results))
    results.close()
    assert guard.records == []  # not read to its end: still held
    guard.settle_open()
    [record] = guard.records
    # The emulator's results arrive in one chunk: every line passed to the SDK, so every one is known.
    assert record.cost_usd == billed(emulator) and not record.estimated


def test_requests_whose_results_were_not_seen_are_charged_their_worst_case(emulator: Emulator) -> None:
    guard, sdk = metered(emulator)
    batch = sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    usage = {"input_tokens": 100, "output_tokens": 10, "service_tier": "batch"}
    guard.batch_result(
        batch.id, {"custom_id": "a", "result": {"type": "succeeded", "message": {"model": MODEL, "usage": usage}}}
    )
    guard.batch_result(batch.id, {"custom_id": "zzz", "result": {"type": "succeeded"}})  # not in the batch
    guard.settle_open()
    [record] = guard.records
    assert record.cost_usd == PriceBook().cost(usage_from_response(usage), MODEL) + worst(REQUESTS[1])
    assert record.estimated and record.input_tokens == 100


def test_cancelled_requests_settle_at_nothing(emulator: Emulator) -> None:
    emulator.hold_batches = True
    guard, sdk = metered(emulator)
    batch = sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    sdk.messages.batches.cancel(batch.id)
    emulator.end_batches()
    assert {r.result.type for r in sdk.messages.batches.results(batch.id)} == {"canceled"}
    [record] = guard.records
    assert record.cost_usd == 0 and not record.estimated
    assert emulator.billed == []


def test_the_batch_is_charged_to_the_test_that_created_it_wherever_its_results_are_read(
    emulator: Emulator,
) -> None:
    guard, sdk = metered(emulator)
    with running(guard, Scope(tag="suite::test_create")):
        batch = sdk.messages.batches.create(requests=REQUESTS[:1])  # type: ignore[arg-type]
    with running(guard, Scope(tag="suite::test_read")):
        list(sdk.messages.batches.results(batch.id))
    [record] = guard.records
    assert record.tag == "suite::test_create"


def test_beta_batches_settle_the_same_way(emulator: Emulator) -> None:
    guard, sdk = metered(emulator)
    batch = sdk.beta.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    assert len(list(sdk.beta.messages.batches.results(batch.id))) == 2
    [record] = guard.records
    assert record.cost_usd == billed(emulator) and not record.estimated


def test_the_async_client_settles_batches_too(emulator: Emulator) -> None:
    guard = CostGuard(GuardConfig(), InMemoryLedger(limit=Decimal(1)))

    async def main() -> list[str]:
        async with anthropic.AsyncAnthropic(
            base_url=emulator.base_url, api_key="k", max_retries=0, middleware=[middleware_for(guard)]
        ) as sdk:
            batch = await sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
            return [r.custom_id async for r in await sdk.messages.batches.results(batch.id)]

    assert asyncio.run(main()) == ["a", "b"]
    [record] = guard.records
    assert record.cost_usd == billed(emulator)


def test_the_caller_reads_the_same_results_with_and_without_metering(emulator: Emulator) -> None:
    _, sdk = metered(emulator)
    batch = sdk.messages.batches.create(requests=REQUESTS)  # type: ignore[arg-type]
    metered_lines = [r.model_dump() for r in sdk.messages.batches.results(batch.id)]
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="k") as plain:
        plain_lines = [r.model_dump() for r in plain.messages.batches.results(batch.id)]
    assert metered_lines == plain_lines and len(plain_lines) == 3


def test_a_settled_batch_frees_its_hold_for_later_calls(emulator: Emulator) -> None:
    held = sum((worst(r) for r in REQUESTS[:2]), Decimal(0))
    guard, sdk = metered(emulator, limit=str(held + held / 2))
    first = sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    with pytest.raises(BudgetExceededError, match="Message Batch of 2 request"):
        sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    list(sdk.messages.batches.results(first.id))
    second = sdk.messages.batches.create(requests=REQUESTS[:2])  # type: ignore[arg-type]
    assert second.id != first.id
    assert len(guard.refusals) == 1
