"""Drafted replies: streamed from the strongest model, piece by piece."""

from __future__ import annotations

from triage import REPLY_MODEL, Ticket


def test_a_drafted_reply_arrives_as_a_stream_of_pieces(triage, refund_ticket: Ticket, llm_cost) -> None:
    pieces = list(triage.draft_reply(refund_ticket))

    assert len(pieces) > 1
    assert "".join(pieces).strip()
    (record,) = llm_cost.records
    assert record.streamed
    assert not record.estimated  # the stream ran to its end: its usage is exact


def test_customer_facing_drafts_ask_for_the_strongest_model(triage, refund_ticket: Ticket, llm_cost) -> None:
    "".join(triage.draft_reply(refund_ticket))

    assert llm_cost.records[0].requested_model == REPLY_MODEL
