"""Message Batches on the emulator, driven through the real anthropic SDK (`messages.batches` and the beta one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from pytest_costguard.core.pricing import usage_from_response
from pytest_costguard.emulator import Emulator

MODEL = "claude-sonnet-5"


def params(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture(autouse=True)
def _fresh(emulator: Emulator) -> Iterator[None]:
    emulator.reset()
    yield
    emulator.hold_batches = False


@pytest.fixture(scope="module")
def client(emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.base_url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


def test_a_batch_ends_at_once_and_its_results_match_direct_replies_at_half_price(
    client: anthropic.Anthropic, emulator: Emulator
) -> None:
    batch = client.messages.batches.create(
        requests=[{"custom_id": "first", "params": params("Hello")}, {"custom_id": "second", "params": params("Bye")}]
    )
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "ended"
    assert batch.request_counts.succeeded == 2
    assert batch.request_counts.processing == 0
    assert batch.results_url is not None
    assert batch.expires_at > batch.created_at
    results = {item.custom_id: item.result for item in client.messages.batches.results(batch.id)}
    assert set(results) == {"first", "second"}
    direct = client.messages.create(**params("Hello"))
    first = results["first"]
    assert first.type == "succeeded"
    assert first.message.content == direct.content
    assert first.message.usage.service_tier == "batch"
    assert first.message.usage.input_tokens == direct.usage.input_tokens
    billed = emulator.billed
    assert [(entry.get("batch_id"), entry.get("custom_id")) for entry in billed] == [
        (batch.id, "first"),
        (batch.id, "second"),
        (None, None),
    ]
    assert billed[0]["usage"] == first.message.usage.model_dump(exclude_none=True)
    assert usage_from_response(billed[0]["usage"]).batch  # priced at the batch rate (50% off)


def test_a_marked_request_errors_and_is_not_billed(client: anthropic.Anthropic, emulator: Emulator) -> None:
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": params("Fine")},
            {"custom_id": "down", "params": params("Down [[costguard:fault=529]]")},
            {"custom_id": "gone", "params": params("Hi", model="claude-nonexistent-9")},
        ]
    )
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 2)
    results = {item.custom_id: item.result for item in client.messages.batches.results(batch.id)}
    down, gone = results["down"], results["gone"]
    assert down.type == "errored"
    assert down.error.error.type == "overloaded_error"
    assert gone.type == "errored"
    assert gone.error.error.type == "not_found_error"
    assert [entry["custom_id"] for entry in emulator.billed] == ["ok"]


def test_a_held_batch_stays_in_progress_until_ended(client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.hold_batches = True
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params("Later")}])
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 1
    assert batch.results_url is None
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        client.messages.batches.results(batch.id)
    assert emulator.billed == []
    assert emulator.end_batches() == 1
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert ended.request_counts.succeeded == 1
    assert len(emulator.billed) == 1


def test_a_cancelled_batch_bills_nothing(client: anthropic.Anthropic, emulator: Emulator) -> None:
    emulator.hold_batches = True
    batch = client.messages.batches.create(
        requests=[{"custom_id": "a", "params": params("One")}, {"custom_id": "b", "params": params("Two")}]
    )
    cancelling = client.messages.batches.cancel(batch.id)
    assert cancelling.processing_status == "canceling"
    assert cancelling.cancel_initiated_at is not None
    emulator.end_batches()
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 2
    assert [item.result.type for item in client.messages.batches.results(batch.id)] == ["canceled", "canceled"]
    assert emulator.billed == []
    # Cancelling an ended batch changes nothing; an ended batch can be deleted.
    assert client.messages.batches.cancel(batch.id).request_counts.canceled == 2
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_a_held_batch_expires_after_24_hours_on_the_emulators_clock() -> None:
    now = [0.0]
    with (
        Emulator(clock=lambda: now[0], hold_batches=True) as emu,
        anthropic.Anthropic(base_url=emu.base_url, api_key="k", max_retries=0) as sdk,
    ):
        batch = sdk.messages.batches.create(requests=[{"custom_id": "a", "params": params("Slow")}])
        now[0] = 24 * 3600.0 - 1
        assert sdk.messages.batches.retrieve(batch.id).processing_status == "in_progress"
        now[0] = 24 * 3600.0
        expired = sdk.messages.batches.retrieve(batch.id)
        assert (expired.processing_status, expired.request_counts.expired) == ("ended", 1)
        assert emu.billed == []


def test_batches_are_listed_newest_first_in_pages(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[{"custom_id": "a", "params": params(str(i))}]).id for i in range(3)]
    page = client.messages.batches.list(limit=2)
    assert [batch.id for batch in page.data] == [ids[2], ids[1]]
    assert page.has_more
    assert [batch.id for batch in client.messages.batches.list(limit=2)] == ids[::-1]  # auto-paginates


def test_the_beta_batches_use_the_same_endpoints(client: anthropic.Anthropic, emulator: Emulator) -> None:
    batch = client.beta.messages.batches.create(requests=[{"custom_id": "beta", "params": params("Hi")}])
    assert client.beta.messages.batches.retrieve(batch.id).processing_status == "ended"
    assert [batch.id for batch in client.beta.messages.batches.list()] == [batch.id]
    [item] = list(client.beta.messages.batches.results(batch.id))
    assert item.result.type == "succeeded"
    assert item.result.message.usage.service_tier == "batch"
    assert len(emulator.billed) == 1


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "non-empty list"),
        ([{"custom_id": "bad id!", "params": params("Hi")}], "custom_id"),
        ([{"custom_id": "a", "params": params("Hi")}, {"custom_id": "a", "params": params("Yo")}], "not unique"),
        ([{"custom_id": "a", "params": {"model": MODEL, "messages": []}}], "requests.0.params: max_tokens"),
        ([{"custom_id": "a", "params": params("Hi", stream=True)}], "streaming is not supported"),
    ],
)
def test_an_invalid_batch_is_a_400(
    client: anthropic.Anthropic, emulator: Emulator, requests: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.messages.batches.create(requests=requests)
    assert emulator.billed == []


def test_batches_can_be_held_and_ended_through_the_control_endpoints(emulator: Emulator) -> None:
    with httpx2.Client(base_url=emulator.base_url, timeout=5) as http:
        assert http.post("/_emulator/batches/hold", json={"hold": True}).json() == {"hold": True}
        created = http.post(
            "/v1/messages/batches",
            json={"requests": [{"custom_id": "a", "params": params("Hi")}]},
            headers={"x-api-key": "k"},
        ).json()
        assert created["processing_status"] == "in_progress"
        assert http.post("/_emulator/batches/end").json() == {"ended": 1}
        results = http.get(f"/v1/messages/batches/{created['id']}/results", headers={"x-api-key": "k"})
        assert results.headers["content-type"] == "application/x-jsonl"
        assert [line for line in results.text.splitlines() if line] == [results.text.strip()]
        assert http.put("/_emulator/files/file_1", content=b"some text").json() == {"ok": True, "bytes": 9}
    assert emulator.files == {"file_1": b"some text"}
