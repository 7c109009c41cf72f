"""Translations and tags go through OpenAI: the same budget and report cover them, priced as OpenAI bills."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from triage import TAG_MODEL, TRANSLATION_MODEL, Ticket

from pytest_costguard.core.pricing import PriceBook
from pytest_costguard.domain.records import CostRecord, usage_from_openai

pytestmark = pytest.mark.skipif(
    os.environ.get("COSTGUARD_LIVE") == "1" and not os.environ.get("OPENAI_API_KEY"),
    reason="live run without OPENAI_API_KEY",
)


def _cost(record: CostRecord) -> Decimal | None:
    """What a call costs: as billed, or for one replayed from a cassette, what it cost when it was recorded."""
    return record.replay_cost_usd if record.replayed else record.cost_usd


@pytest.mark.llm_model(TRANSLATION_MODEL)  # checks the model the app asks for is what OpenAI bills: never routed
def test_a_reply_is_translated_and_billed_as_openai_bills_it(triage, emulator, llm_cost) -> None:
    before = len(emulator.billed)

    spanish = triage.translate("Your refund of 19.00 USD for invoice TB-88390 is on its way.", "Spanish")

    assert spanish
    (record,) = llm_cost.records
    assert (record.provider, record.model) == ("openai", TRANSLATION_MODEL)
    assert not record.estimated  # the app asks for usage in its stream
    if record.replayed:  # --llm-record=none: answered from the cassette, nothing sent, nothing billed
        assert emulator.billed[before:] == [] and record.cost_usd == 0 < record.replay_cost_usd
        return
    (billed,) = emulator.billed[before:]
    assert billed["model"] == TRANSLATION_MODEL
    assert record.cost_usd == PriceBook().cost(usage_from_openai(billed["usage"]), billed["model"])


@pytest.mark.llm_model(TAG_MODEL)  # never routed: it checks the model the app asks for
def test_tags_come_from_the_responses_api_and_a_repeated_prompt_reads_the_cache(
    triage, emulator, refund_ticket: Ticket, llm_cost
) -> None:
    long_ticket = Ticket(refund_ticket.id, refund_ticket.subject, refund_ticket.body * 30, refund_ticket.customer)
    before = len(emulator.billed)

    first, second = triage.tags(long_ticket), triage.tags(long_ticket)

    assert first and second
    records = llm_cost.records
    billed = emulator.billed[before:]
    assert [r.model for r in records] == [TAG_MODEL, TAG_MODEL]
    assert records[0].cache_read_input_tokens == 0 < records[1].cache_read_input_tokens
    if all(r.replayed for r in records):  # --llm-record=none: nothing sent, nothing billed
        assert billed == [] and sum(r.cost_usd for r in records) == 0
    else:
        for record, entry in zip(records, billed, strict=True):
            assert record.cost_usd == PriceBook().cost(usage_from_openai(entry["usage"]), entry["model"])
    assert _cost(records[1]) < _cost(records[0])  # cached input costs a tenth
